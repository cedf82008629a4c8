"""The ``filesystem`` connector: one document per regular file under a configured directory.

The walk (``worker.files.listing``) lists the regular files once per attempt, sorted by key
(``worker.files.names``); each step handles up to ``batch_size`` files after the checkpoint's cursor
and reads them in one daemon thread (``worker.files.reading``: inside the root, regular files only,
bounded, never blocking), which stops between files when the step is cancelled. Each file's state
(mtime, size, hash) goes into the run's stored ``files`` map, one field per file, written with the
step's commit (``worker.crawlstate``); the map is carried to the next run, which skips unchanged files
and emits tombstones for files that disappeared. A file or directory that cannot be read is an item
failure and keeps its previous state: what cannot be read is never taken for gone.
"""

from __future__ import annotations

import asyncio
import base64
import bisect
import contextlib
import mimetypes
import os
import stat
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from pydantic import Field

from worker.connectors.base import Checkpoint, Connector, ConnectorConfig, StepResult
from worker.crawlstate import StateChanges
from worker.documents import Document, ItemFailure, content_hash
from worker.errors import InvalidConnectorConfig, TransientError
from worker.files.listing import Listing, Selection, Walker
from worker.files.names import display, document_id, is_utf8, native
from worker.files.reading import Reader, Refused

TEXT_TYPES = ("text/", "application/json", "application/xml", "application/x-yaml", "application/toml")
FILES = "files"
#: Keys of directories this run could not list (in any attempt): their files keep their previous state.
UNREADABLE = "unreadable"
T = TypeVar("T")


class FilesystemConfig(ConnectorConfig):
    """What to crawl under ``root``."""

    root: Path
    include: list[str] = Field(default_factory=lambda: ["**"], description="Glob patterns relative to root.")
    exclude: list[str] = Field(default_factory=list)
    follow_symlinks: bool = Field(False, description="Follow links that lead inside root (checked at open time).")
    max_file_size: int = Field(10 * 1024 * 1024, gt=0)
    max_text_size: int = Field(1024 * 1024, gt=0, description="Larger text files are referenced, not inlined.")
    batch_size: int = Field(200, gt=0)
    compare_hash: bool = Field(False, description="Also hash unchanged-looking files to detect same-size edits.")
    max_files_per_second: float | None = Field(None, gt=0, description="I/O throttle for shared filesystems.")


@dataclass(frozen=True)
class FileState:
    """What a run saw of one file: (mtime_ns, size, hash); stored as one short string."""

    mtime_ns: int
    size: int
    hash: str

    def dump(self) -> str:
        """The stored form."""
        return f"{self.mtime_ns} {self.size} {self.hash}"

    @classmethod
    def load(cls, raw: str) -> FileState:
        """Read the stored form."""
        mtime_ns, size, hash_ = raw.split(" ", 2)
        return cls(int(mtime_ns), int(size), hash_)


class FilesystemCheckpoint(Checkpoint):
    """Cursor over sorted file keys; the file states are in the run's stored ``files`` map."""

    schema_version = 2

    cursor: str | None = None
    total: int | None = None


@dataclass
class _Batch:
    """What reading one batch produced."""

    documents: list[Document]
    failures: list[ItemFailure]
    states: dict[str, str]
    unchanged: int = 0


class FilesystemConnector(Connector[FilesystemConfig, FilesystemCheckpoint]):
    """Walks ``config.root`` and emits one document per regular file."""

    name = "filesystem"
    config_model = FilesystemConfig
    checkpoint_model = FilesystemCheckpoint
    carried = frozenset({FILES})

    _listing: Listing | None = None

    @property
    def root(self) -> bytes:
        """The root's real, absolute native path."""
        return os.path.realpath(os.fsencode(self.config.root))

    async def validate(self) -> None:
        """The root must be a directory; following links needs ``/proc/self/fd`` to check where they lead."""
        if not self.config.root.is_dir():
            raise InvalidConnectorConfig(f"filesystem root {str(self.config.root)!r} is not a directory")
        if self.config.follow_symlinks and not _proc_fd_mounted():
            raise InvalidConnectorConfig("follow_symlinks needs /proc mounted (to check where links lead)")

    async def run_step(self, checkpoint: FilesystemCheckpoint) -> StepResult[FilesystemCheckpoint]:
        """Handle the next batch of files after the cursor."""
        changes = StateChanges()
        failures: list[ItemFailure] = []
        stats: dict[str, int] = {}
        root = self.root
        if self._listing is None:
            self._listing = await _in_thread(lambda stop: self._walk(root, stop))
            failures += await self._unreadable(root, self._listing, changes)
            stats.update({f"skipped_{reason}": n for reason, n in self._listing.skipped.items()})
        keys = self._listing.keys
        start = 0 if checkpoint.cursor is None else bisect.bisect_right(keys, checkpoint.cursor)
        batch = keys[start : start + self.config.batch_size]
        before = await self.data.get(FILES, batch, previous=True)
        read = await _in_thread(lambda stop: self._read_batch(root, batch, before, stop))
        failures += read.failures
        documents = read.documents
        stats["unchanged"] = read.unchanged
        done = start + len(batch) >= len(keys)
        if done:
            documents += await self._tombstones(root, read.states)
        changes.put(FILES, read.states)
        next_checkpoint = checkpoint.model_copy(
            update={"cursor": batch[-1] if batch else checkpoint.cursor, "total": len(keys), "has_more": not done}
        )
        return StepResult(
            documents=documents,
            failures=failures,
            checkpoint=next_checkpoint,
            processed=len(batch),
            total=len(keys),
            stats=stats,
            changes=changes,
        )

    def _walk(self, root: bytes, stop: threading.Event) -> Listing:
        walker = Walker(root, Selection(self.config.include, self.config.exclude),
                        follow_symlinks=self.config.follow_symlinks)
        try:
            return walker.walk(stop)
        except OSError as exc:  # the root itself: no listing at all, so nothing can be concluded
            raise TransientError(
                f"filesystem instance {self.context.connector_id!r}: cannot list its root directory: "
                f"{exc.strerror or type(exc).__name__}"
            ) from exc

    async def _unreadable(self, root: bytes, listing: Listing, changes: StateChanges) -> list[ItemFailure]:
        """Directories this attempt could not list: item failures (once per run), remembered for the deletions."""
        if not listing.unreadable:
            return []
        known = await self.data.members(UNREADABLE)
        new = sorted(set(listing.unreadable) - known)
        changes.add(UNREADABLE, new)
        return [
            ItemFailure(
                source=display(_join(root, native(key))),
                reason=f"cannot list directory: {listing.unreadable[key]}; the files under it keep their last "
                "state (no deletions)",
                retryable=True,
            )
            for key in new
        ]

    async def _tombstones(self, root: bytes, pending: dict[str, str]) -> list[Document]:
        """Files the last completed run saw that this run did not (``pending``: the last step's states).

        Files under a directory this run could not list are not gone: their previous state is kept
        (added to ``pending``, so it is committed with the last step).
        """
        assert self._listing is not None
        dirs = {native(key) for key in (await self.data.members(UNREADABLE)) | set(self._listing.unreadable)}
        under = tuple(d + b"/" for d in dirs)
        gone: list[str] = []
        async for chunk in self.data.scan(FILES, previous=True):
            rest = [(key, state) for key, state in chunk if key not in pending]
            now = await self.data.get(FILES, [key for key, _ in rest])
            for (key, state), current in zip(rest, now, strict=True):
                if current is not None:
                    continue
                rel = native(key)
                if dirs and (rel in dirs or rel.startswith(under)):
                    pending[key] = state
                else:
                    gone.append(key)
        tombstones = []
        for key in sorted(gone):
            path = _join(root, native(key))
            tombstones.append(Document.tombstone(display(path), document_id(path)))
        return tombstones

    def _read_batch(
        self, root: bytes, keys: Sequence[str], before: Sequence[str | None], stop: threading.Event
    ) -> _Batch:
        """Read ``keys`` in order (in the reading thread), until done or ``stop`` is set."""
        out = _Batch([], [], {})
        reader = Reader(root, follow_symlinks=self.config.follow_symlinks, max_size=self.config.max_file_size)
        interval = 1 / self.config.max_files_per_second if self.config.max_files_per_second else 0.0
        try:
            for key, previous in zip(keys, before, strict=True):
                if stop.is_set():
                    break  # nobody waits for this batch any more
                began = time.monotonic()
                self._read_one(reader, root, key, previous, out)
                if interval:
                    stop.wait(interval - (time.monotonic() - began))
        finally:
            reader.close()
        return out

    def _read_one(self, reader: Reader, root: bytes, key: str, previous: str | None, out: _Batch) -> None:
        rel = native(key)
        try:
            if previous is not None and not self.config.compare_hash:
                st = reader.stat(rel)
                seen = FileState.load(previous)
                if st.st_mtime_ns == seen.mtime_ns and st.st_size == seen.size and stat.S_ISREG(st.st_mode):
                    out.states[key] = previous
                    out.unchanged += 1
                    return
            st, data = reader.read(rel)
        except FileNotFoundError:
            return  # gone since the listing: a tombstone follows at the end
        except (Refused, OSError) as exc:
            reason = str(exc) if isinstance(exc, Refused) else f"cannot read: {exc.strerror or type(exc).__name__}"
            out.failures.append(ItemFailure(source=display(_join(root, rel)), reason=reason))
            if previous is not None:
                out.states[key] = previous  # not read is not gone
            return
        digest = content_hash(data)
        out.states[key] = f"{st.st_mtime_ns} {st.st_size} {digest}"
        if previous is not None and previous.endswith(" " + digest):
            out.unchanged += 1
            return
        out.documents.append(self._document(root, key, rel, st=st, data=data, digest=digest))

    def _document(
        self, root: bytes, key: str, rel: bytes, *, st: os.stat_result, data: bytes, digest: str
    ) -> Document:
        path = _join(root, rel)
        source = display(path)
        name = rel.rpartition(b"/")[2]
        mime = _mime(name)
        text: str | None = None
        if mime.startswith(TEXT_TYPES) and len(data) <= self.config.max_text_size:
            with contextlib.suppress(UnicodeDecodeError):
                text = data.decode("utf-8")
        metadata: dict[str, object] = {"path": key if is_utf8(key) else display(rel), "mtime": st.st_mtime}
        if not is_utf8(key):
            metadata["path_bytes"] = base64.b64encode(rel).decode("ascii")
        return Document(
            id=document_id(path),
            source=source,
            mime_type=mime,
            title=display(name),
            text=text,
            content_ref=None if text is not None else source,
            content_hash=digest,
            size=len(data),
            metadata=metadata,
        )


def _proc_fd_mounted() -> bool:
    return os.path.isdir("/proc/self/fd")


def _join(root: bytes, rel: bytes) -> bytes:
    return (root if root.endswith(b"/") else root + b"/") + rel


_MIME: dict[bytes, str] = {}


def _mime(name: bytes) -> str:
    """The media type by file name; by suffix from a small cache, except compressed-file suffixes."""
    ext = os.path.splitext(name)[1]
    found = _MIME.get(ext)
    if found is not None:
        return found
    guessed, encoding = mimetypes.guess_type(display(name))
    mime = guessed or "application/octet-stream"
    if encoding is None and len(_MIME) < 1024 and ext.decode("utf-8", "replace") not in mimetypes.suffix_map:
        _MIME[ext] = mime
    return mime


async def _in_thread(work: Callable[[threading.Event], T]) -> T:
    """Run ``work`` in a daemon thread and wait for it; if the wait is cancelled, ``work``'s stop event is set.

    Not the default executor: the process never waits at exit for a read that does not return
    (asyncio.run joins the executor's threads), and a cancelled step stops after its current file.
    """
    loop = asyncio.get_running_loop()
    future: asyncio.Future[T] = loop.create_future()
    stop = threading.Event()

    def deliver(result: T | None, error: BaseException | None) -> None:
        if future.done():
            return
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(result)  # type: ignore[arg-type]

    def target() -> None:
        try:
            result, error = work(stop), None
        except BaseException as exc:  # handed to the waiting task, raised there
            result, error = None, exc
        with contextlib.suppress(RuntimeError):  # the loop is closed: nobody waits any more
            loop.call_soon_threadsafe(deliver, result, error)

    threading.Thread(target=target, name="filesystem-read", daemon=True).start()
    try:
        return await future
    finally:
        stop.set()
