"""The ``filesystem`` connector: one document per file under a configured directory.

Each step handles up to ``batch_size`` files in sorted path order (the checkpoint is a cursor
over those paths). Unchanged files (same mtime and size as the last completed run, optionally
the same hash) are skipped; files that disappeared since then are emitted as tombstones.
"""

from __future__ import annotations

import asyncio
import bisect
import fnmatch
import mimetypes
import os
import time
from pathlib import Path

from pydantic import BaseModel, Field

from worker.connectors.base import Checkpoint, Connector, ConnectorConfig, StepResult
from worker.documents import Document, ItemFailure, content_hash, stable_id
from worker.errors import InvalidConnectorConfig

TEXT_TYPES = ("text/", "application/json", "application/xml", "application/x-yaml", "application/toml")


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


class FileState(BaseModel):
    """What a run saw of one file: (mtime_ns, size, hash)."""

    mtime_ns: int
    size: int
    hash: str


class FilesystemCheckpoint(Checkpoint):
    """Cursor over sorted relative paths, plus what the last completed run saw."""

    schema_version = 1

    cursor: str | None = None
    total: int | None = None
    previous: dict[str, FileState] = Field(default_factory=dict)
    current: dict[str, FileState] = Field(default_factory=dict)


class FilesystemConnector(Connector[FilesystemConfig, FilesystemCheckpoint]):
    """Walks ``config.root`` and emits one document per file."""

    name = "filesystem"
    config_model = FilesystemConfig
    checkpoint_model = FilesystemCheckpoint

    _listing: list[str] | None = None

    async def validate(self) -> None:
        """The root must be a readable directory."""
        if not self.config.root.is_dir():
            raise InvalidConnectorConfig(f"filesystem root {str(self.config.root)!r} is not a directory")

    def initial_checkpoint(self, previous: FilesystemCheckpoint | None) -> FilesystemCheckpoint:
        """A new run remembers the last completed run's files for change and deletion detection."""
        return FilesystemCheckpoint(previous=previous.current if previous else {})

    async def run_step(self, checkpoint: FilesystemCheckpoint) -> StepResult[FilesystemCheckpoint]:
        """Handle the next batch of files after the cursor."""
        if self._listing is None:
            self._listing = await asyncio.to_thread(self._list)
        start = 0 if checkpoint.cursor is None else bisect.bisect_right(self._listing, checkpoint.cursor)
        batch = self._listing[start : start + self.config.batch_size]
        documents, failures, current = [], [], dict(checkpoint.current)
        for rel in batch:
            began = time.monotonic()
            doc, state, failure = await asyncio.to_thread(self._read, rel, checkpoint.previous.get(rel))
            if failure is not None:
                failures.append(failure)
            if state is not None:
                current[rel] = state
            if doc is not None:
                documents.append(doc)
            if self.config.max_files_per_second:
                await asyncio.sleep(max(0.0, 1 / self.config.max_files_per_second - (time.monotonic() - began)))
        done = start + len(batch) >= len(self._listing)
        if done:
            root = self.config.root.resolve()
            documents.extend(
                Document.tombstone(str(root / rel), stable_id(str(root / rel)))
                for rel in sorted(set(checkpoint.previous) - set(current))
            )
        next_checkpoint = checkpoint.model_copy(
            update={
                "cursor": batch[-1] if batch else checkpoint.cursor,
                "total": len(self._listing),
                "current": current,
                "has_more": not done,
            }
        )
        return StepResult(
            documents=documents,
            failures=failures,
            checkpoint=next_checkpoint,
            processed=len(batch),
            total=len(self._listing),
        )

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

