"""The ``filesystem`` connector: one document per regular file under a configured directory.

The walk (``listing``) lists the regular files once per attempt, sorted by key
(``names``); each step handles up to ``batch_size`` files after the checkpoint's cursor.
Files are read in one daemon thread (``background``; ``reading``: inside the
root, regular files only, bounded, never blocking; ``batch``: documents and states), and
the next batch is read while the runner writes and commits this one. Each file's state (mtime, size,
hash) goes into the run's stored ``files`` map, one field per file, written with the step's commit
(``worker.crawlstate``); the map is carried to the next run, which skips unchanged files and emits
tombstones for files that disappeared. A file or directory that cannot be read is an item failure and
keeps its previous state: what cannot be read is never taken for gone.
"""

from __future__ import annotations

import asyncio
import bisect
import os
import threading
from pathlib import Path

from pydantic import Field

from worker.connectors.base import Checkpoint, Connector, ConnectorConfig, ConnectorContext, StepResult
from worker.connectors.files.background import Background
from worker.connectors.files.batch import Batch, BatchReader, ReadOptions
from worker.connectors.files.listing import Listing, Selection, Walker
from worker.connectors.files.names import display, document_id, native
from worker.crawlstate import StateChanges
from worker.documents import Document, ItemFailure
from worker.errors import InvalidConnectorConfig, TransientError

FILES = "files"
#: Keys of directories this run could not list (in any attempt): their files keep their previous state.
UNREADABLE = "unreadable"
#: Batches read ahead of the one the runner is writing and committing (each holds up to batch_size documents).
READ_AHEAD = 1


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


class FilesystemCheckpoint(Checkpoint):
    """Cursor over sorted file keys; the file states are in the run's stored ``files`` map."""

    schema_version = 2

    cursor: str | None = None
    total: int | None = None


class FilesystemConnector(Connector[FilesystemConfig, FilesystemCheckpoint]):
    """Walks ``config.root`` and emits one document per regular file."""

    config_model = FilesystemConfig
    checkpoint_model = FilesystemCheckpoint
    carried = frozenset({FILES})

    def __init__(self, config: FilesystemConfig, context: ConnectorContext) -> None:
        super().__init__(config, context)
        self._listing: Listing | None = None
        self._reader: BatchReader | None = None
        self._thread = Background("filesystem-read")
        #: The next batches, read while the runner writes and commits this one: their start -> the reading task.
        self._ahead: dict[int, asyncio.Task[Batch]] = {}

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
        skipped: dict[str, int] = {}
        if self._listing is None:
            self._reader, listing = await self._thread.run(self._walk)
            self._listing = listing
            failures += await self._unreadable(listing, changes)
            stats.update({f"skipped_{reason}": n for reason, n in listing.skipped.items()})
            if checkpoint.cursor is None:  # once per run: a resumed attempt lists again, but counted them already
                skipped.update({reason.replace("_", "-"): n for reason, n in listing.skipped.items()})
        keys = self._listing.keys
        start = 0 if checkpoint.cursor is None else bisect.bisect_right(keys, checkpoint.cursor)
        end = start + self.config.batch_size
        batch = keys[start:end]
        read = await self._batch(start, batch)
        failures += read.failures
        documents = read.documents
        stats["unchanged"] = read.unchanged
        if read.too_large:
            skipped["too-large"] = read.too_large
        done = end >= len(keys)
        if done:
            documents += await self._tombstones(read.states)
        else:
            self._read_ahead(keys, end)
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
            skipped=skipped,
            changes=changes,
        )

    async def aclose(self) -> None:
        """Stop reading ahead; the reading thread ends."""
        await self._drop_ahead()
        self._thread.close()

    async def _batch(self, start: int, keys: list[str]) -> Batch:
        """The batch at ``start``: read ahead during the last steps if that was this batch, else read now."""
        task = self._ahead.pop(start, None)
        if task is not None:
            return await task
        await self._drop_ahead()
        return await self._read(keys)

    def _read_ahead(self, keys: list[str], start: int) -> None:
        """Start reading the batches from ``start`` on (READ_AHEAD of them), in the reading thread's order."""
        size = self.config.batch_size
        for at in range(start, min(start + READ_AHEAD * size, len(keys)), size):
            if at not in self._ahead:
                self._ahead[at] = asyncio.create_task(self._read(keys[at : at + size]))

    async def _read(self, keys: list[str]) -> Batch:
        assert self._reader is not None
        reader = self._reader
        before = await self.data.get(FILES, keys, previous=True)
        return await self._thread.run(lambda stop: reader.read(keys, before, stop))

    async def _drop_ahead(self) -> None:
        tasks, self._ahead = list(self._ahead.values()), {}
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks)
        for task in tasks:
            if not task.cancelled():
                task.exception()  # retrieved: what went wrong reading ahead does not matter any more

    def _walk(self, stop: threading.Event) -> tuple[BatchReader, Listing]:
        """Resolve the root and list it (in the reading thread)."""
        root = os.path.realpath(os.fsencode(self.config.root))
        walker = Walker(
            root, Selection(self.config.include, self.config.exclude), follow_symlinks=self.config.follow_symlinks
        )
        try:
            return BatchReader(root, _options(self.config)), walker.walk(stop)
        except OSError as exc:  # the root itself: no listing at all, so nothing can be concluded
            raise TransientError(
                f"filesystem instance {self.context.connector_id!r}: cannot list its root directory: "
                f"{exc.strerror or type(exc).__name__}"
            ) from exc

    async def _unreadable(self, listing: Listing, changes: StateChanges) -> list[ItemFailure]:
        """Directories this attempt could not list: item failures (once per run), remembered for the deletions."""
        if not listing.unreadable:
            return []
        known = await self.data.members(UNREADABLE)
        new = sorted(set(listing.unreadable) - known)
        changes.add(UNREADABLE, new)
        return [
            ItemFailure(
                source=self._shown(native(key)),
                reason=f"cannot list directory: {listing.unreadable[key]}; the files under it keep their last "
                "state (no deletions)",
                retryable=True,
            )
            for key in new
        ]

    async def _tombstones(self, pending: dict[str, str]) -> list[Document]:
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
        assert self._reader is not None
        paths = [self._reader.prefix + native(key) for key in sorted(gone)]
        return [Document.tombstone(display(path), document_id(path)) for path in paths]

    def _shown(self, rel: bytes) -> str:
        assert self._reader is not None
        return display(self._reader.prefix + rel)


def _proc_fd_mounted() -> bool:
    return os.path.isdir("/proc/self/fd")


def _options(config: FilesystemConfig) -> ReadOptions:
    return ReadOptions(
        follow_symlinks=config.follow_symlinks,
        max_file_size=config.max_file_size,
        max_text_size=config.max_text_size,
        compare_hash=config.compare_hash,
        max_files_per_second=config.max_files_per_second,
    )
