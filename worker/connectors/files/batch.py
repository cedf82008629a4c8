"""Reading one batch of listed files into documents, item failures and file states (in the reading thread).

A file's state is ``"<mtime_ns> <size> <hash>"``, stored as one field of the run's ``files`` map.
A file whose mtime and size match its previous state is not read (unless ``compare_hash``); one whose
content hash matches is read but not emitted. A file that cannot be read keeps its previous state:
what could not be read is not gone. This loop is the per-file cost of a crawl, so it is written flat.
"""

from __future__ import annotations

import base64
import hashlib
import mimetypes
import stat
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from worker.connectors.files.names import display, native
from worker.connectors.files.reading import Reader
from worker.documents import Document, ItemFailure
from worker.errors import Refused, TooLarge

_validate_document = Document.__pydantic_validator__.validate_python
TEXT_TYPES = ("text/", "application/json", "application/xml", "application/x-yaml", "application/toml")
#: Media types remembered by file suffix, at most.
MIMES_KEPT = 1024


@dataclass(frozen=True)
class ReadOptions:
    """The connector settings reading depends on."""

    follow_symlinks: bool = False
    max_file_size: int = 10 * 1024 * 1024
    max_text_size: int = 1024 * 1024
    compare_hash: bool = False
    max_files_per_second: float | None = None


@dataclass
class Batch:
    """What reading a batch produced: documents to emit, item failures, and each file's state by key."""

    documents: list[Document] = field(default_factory=list)
    failures: list[ItemFailure] = field(default_factory=list)
    states: dict[str, str] = field(default_factory=dict)
    unchanged: int = 0
    #: Files over ``max_file_size`` (item failures, also counted as skipped ``too-large``).
    too_large: int = 0


class BatchReader:
    """Reads batches of files under ``root`` (a real, absolute native path)."""

    def __init__(self, root: bytes, options: ReadOptions) -> None:
        self.root = root
        self.options = options
        self.prefix = root if root.endswith(b"/") else root + b"/"
        self.shown = display(self.prefix)
        self._mimes: dict[str, str] = {}

    def read(self, keys: Sequence[str], before: Sequence[str | None], stop: threading.Event) -> Batch:
        """Read ``keys`` in order (``before``: their previous states), until done or ``stop`` is set."""
        out = Batch()
        options = self.options
        reader = Reader(self.root, follow_symlinks=options.follow_symlinks, max_size=options.max_file_size)
        interval = 1 / options.max_files_per_second if options.max_files_per_second else 0.0
        try:
            for key, previous in zip(keys, before, strict=True):
                if stop.is_set():
                    break  # nobody waits for this batch any more
                began = time.monotonic() if interval else 0.0
                self._one(reader, key, previous, out)
                if interval:
                    stop.wait(interval - (time.monotonic() - began))
        finally:
            reader.close()
        return out

    def _one(self, reader: Reader, key: str, previous: str | None, out: Batch) -> None:
        utf8 = not key.startswith("/")
        rel = key.encode() if utf8 else native(key)
        try:
            if previous is not None and not self.options.compare_hash:
                st = reader.stat(rel)
                if previous.startswith(f"{st.st_mtime_ns} {st.st_size} ") and stat.S_ISREG(st.st_mode):
                    out.states[key] = previous
                    out.unchanged += 1
                    return
            st, data = reader.read(rel)
        except FileNotFoundError:
            return  # gone since the listing: a tombstone follows at the end
        except (Refused, OSError) as exc:
            reason = str(exc) if isinstance(exc, Refused) else f"cannot read: {exc.strerror or type(exc).__name__}"
            out.failures.append(ItemFailure(source=display(self.prefix + rel), reason=reason))
            out.too_large += isinstance(exc, TooLarge)
            if previous is not None:
                out.states[key] = previous  # not read is not gone
            return
        digest = "sha256:" + hashlib.sha256(data).hexdigest()  # documents.content_hash, without the call
        out.states[key] = f"{st.st_mtime_ns} {st.st_size} {digest}"
        if previous is not None and previous.endswith(digest):
            out.unchanged += 1
            return
        path = self.prefix + rel
        metadata: dict[str, object]
        if utf8:
            source, name = self.shown + key, key[key.rfind("/") + 1 :]
            metadata = {"path": key, "mtime": st.st_mtime}
        else:
            source, name = display(path), display(rel[rel.rfind(b"/") + 1 :])
            metadata = {"path": display(rel), "mtime": st.st_mtime, "path_bytes": base64.b64encode(rel).decode()}
        mime = self._mime(name)
        text: str | None = None
        if len(data) <= self.options.max_text_size and mime.startswith(TEXT_TYPES):
            try:
                text = data.decode()
            except UnicodeDecodeError:
                text = None
        # the model's own validator, as Document(...) calls it, without the keyword-argument wrapper (~35 % less)
        out.documents.append(
            _validate_document(
                {
                    "id": hashlib.sha256(path).hexdigest()[:32],  # names.document_id, without the call
                    "source": source,
                    "mime_type": mime,
                    "title": name,
                    "text": text,
                    "content_ref": None if text is not None else source,
                    "content_hash": digest,
                    "size": len(data),
                    "metadata": metadata,
                }
            )
        )

    def _mime(self, name: str) -> str:
        """The media type by file name (``mimetypes``), remembered by suffix except for compressed files."""
        stem = name.lstrip(".")
        dot = stem.rfind(".")
        suffix = stem[dot:] if dot > 0 else ""
        found = self._mimes.get(suffix)
        if found is not None:
            return found
        guessed, encoding = mimetypes.guess_type(name)
        mime = guessed or "application/octet-stream"
        if encoding is None and suffix not in mimetypes.suffix_map and len(self._mimes) < MIMES_KEPT:
            self._mimes[suffix] = mime
        return mime
