"""The ``filesystem`` connector: one document per file under a configured directory.

Each step handles up to ``batch_size`` files in sorted path order (the checkpoint is a cursor
over those paths) and reads them in one worker thread. Each file's state (mtime, size, hash) goes
into the run's stored ``files`` map, one field per file, written with the step's commit
(``worker.crawlstate``); the map is carried to the next run, which skips unchanged files (same
mtime and size, optionally the same hash) and emits tombstones for files that disappeared.
"""

from __future__ import annotations

import asyncio
import bisect
import fnmatch
import mimetypes
import os
import time
from dataclasses import dataclass
from pathlib import Path

from pydantic import Field

from worker.connectors.base import Checkpoint, Connector, ConnectorConfig, StepResult
from worker.crawlstate import StateChanges
from worker.documents import Document, ItemFailure, content_hash, stable_id
from worker.errors import InvalidConnectorConfig

TEXT_TYPES = ("text/", "application/json", "application/xml", "application/x-yaml", "application/toml")
FILES = "files"


class FilesystemConfig(ConnectorConfig):
    """What to crawl under ``root``."""

    root: Path
    include: list[str] = Field(default_factory=lambda: ["**"], description="Glob patterns relative to root.")
    exclude: list[str] = Field(default_factory=list)
    follow_symlinks: bool = False
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
    """Cursor over sorted relative paths; the file states are in the run's stored ``files`` map."""

    schema_version = 2

    cursor: str | None = None
    total: int | None = None


class FilesystemConnector(Connector[FilesystemConfig, FilesystemCheckpoint]):
    """Walks ``config.root`` and emits one document per file."""

    config_model = FilesystemConfig
    checkpoint_model = FilesystemCheckpoint
    carried = frozenset({FILES})

    _listing: list[str] | None = None

    async def validate(self) -> None:
        """The root must be a readable directory."""
        if not self.config.root.is_dir():
            raise InvalidConnectorConfig(f"filesystem root {str(self.config.root)!r} is not a directory")

    async def run_step(self, checkpoint: FilesystemCheckpoint) -> StepResult[FilesystemCheckpoint]:
        """Handle the next batch of files after the cursor."""
        if self._listing is None:
            self._listing = await asyncio.to_thread(self._list)
        start = 0 if checkpoint.cursor is None else bisect.bisect_right(self._listing, checkpoint.cursor)
        batch = self._listing[start : start + self.config.batch_size]
        stored = await self.data.get(FILES, batch, previous=True)
        before = [None if raw is None else FileState.load(raw) for raw in stored]
        if self.config.max_files_per_second:
            results = []
            for rel, seen in zip(batch, before, strict=True):
                began = time.monotonic()
                results.append(await asyncio.to_thread(self._read, rel, seen))
                await asyncio.sleep(max(0.0, 1 / self.config.max_files_per_second - (time.monotonic() - began)))
        else:  # one thread hop for the whole batch
            results = await asyncio.to_thread(lambda: [self._read(r, b) for r, b in zip(batch, before, strict=True)])
        documents: list[Document] = []
        failures: list[ItemFailure] = []
        current: dict[str, str] = {}
        for rel, (doc, state, failure) in zip(batch, results, strict=True):
            if failure is not None:
                failures.append(failure)
            if state is not None:
                current[rel] = state.dump()
            if doc is not None:
                documents.append(doc)
        done = start + len(batch) >= len(self._listing)
        if done:
            documents += await self._tombstones(current)
        changes = StateChanges()
        changes.put(FILES, current)
        cursor = batch[-1] if batch else checkpoint.cursor
        next_checkpoint = checkpoint.model_copy(
            update={"cursor": cursor, "total": len(self._listing), "has_more": not done}
        )
        return StepResult(
            documents=documents,
            failures=failures,
            checkpoint=next_checkpoint,
            processed=len(batch),
            total=len(self._listing),
            changes=changes,
        )

    async def _tombstones(self, pending: dict[str, str]) -> list[Document]:
        """Files the last completed run saw that this run did not (``pending``: the last step's states)."""
        root = self.config.root.resolve()
        gone: list[str] = []
        async for chunk in self.data.scan(FILES, previous=True):
            rels = [rel for rel, _ in chunk if rel not in pending]
            now = await self.data.get(FILES, rels)
            gone += [rel for rel, state in zip(rels, now, strict=True) if state is None]
        return [Document.tombstone(str(root / rel), stable_id(str(root / rel))) for rel in sorted(gone)]

    def _list(self) -> list[str]:
        root = self.config.root.resolve()
        found: list[str] = []
        seen_dirs: set[tuple[int, int]] = set()
        for dirpath, dirnames, filenames in os.walk(root, followlinks=self.config.follow_symlinks):
            st = os.stat(dirpath)
            if (st.st_dev, st.st_ino) in seen_dirs:  # symlink loop
                dirnames[:] = []
                continue
            seen_dirs.add((st.st_dev, st.st_ino))
            dirnames.sort()
            for name in filenames:
                path = Path(dirpath) / name
                if path.is_symlink() and not self.config.follow_symlinks:
                    continue
                rel = path.relative_to(root).as_posix()
                if self._selected(rel):
                    found.append(rel)
        found.sort()
        return found

    def _selected(self, rel: str) -> bool:
        def match(patterns: list[str]) -> bool:
            return any(fnmatch.fnmatch(rel, p) or fnmatch.fnmatch(rel, p.removeprefix("**/")) for p in patterns)

        return match(self.config.include) and not match(self.config.exclude)

    def _read(
        self, rel: str, before: FileState | None
    ) -> tuple[Document | None, FileState | None, ItemFailure | None]:
        path = self.config.root.resolve() / rel
        source = str(path)
        try:
            st = path.stat()
            if st.st_size > self.config.max_file_size:
                return None, None, ItemFailure(source=source, reason=f"larger than max_file_size ({st.st_size} B)")
            unchanged = before and before.mtime_ns == st.st_mtime_ns and before.size == st.st_size
            if unchanged and not self.config.compare_hash:
                return None, before, None
            data = path.read_bytes()
        except FileNotFoundError:
            return None, None, None  # vanished between listing and reading: a tombstone follows at the end
        except OSError as exc:
            return None, None, ItemFailure(source=source, reason=f"cannot read: {exc.strerror}")
        digest = content_hash(data)
        state = FileState(mtime_ns=st.st_mtime_ns, size=st.st_size, hash=digest)
        if before and before.hash == digest:
            return None, state, None
        mime = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
        text: str | None = None
        if mime.startswith(TEXT_TYPES) and len(data) <= self.config.max_text_size:
            try:
                text = data.decode("utf-8")
            except UnicodeDecodeError:
                text = None
        doc = Document(
            id=stable_id(source),
            source=source,
            mime_type=mime,
            title=path.name,
            text=text,
            content_ref=None if text is not None else source,
            content_hash=digest,
            size=len(data),
            metadata={"path": rel, "mtime": st.st_mtime},
        )
        return doc, state, None

