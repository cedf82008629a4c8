"""The filesystem connector against hostile trees: unreadable directories, FIFOs, devices, links, odd names."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import errno
import json
import os
import signal
import stat
import subprocess
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from bullmq import Queue

from tests.connectors.test_filesystem import crawl
from tests.helpers import add_crawl, catalog_of, running_app, wait_state
from tests.proc import Processes, write_catalog
from worker.connectors.base import ConnectorContext
from worker.connectors.files.connector import FILES, FilesystemConfig, FilesystemConnector
from worker.connectors.files.reading import Reader
from worker.crawlstate import MemoryRunData
from worker.documents import Document, ItemFailure
from worker.settings import Settings

SECRET = "the worker's secret"


async def _step_by_step(
    root: Path, after_listing: Callable[[], None] | None = None, **config: Any
) -> tuple[list[Document], list[ItemFailure]]:
    """One connector instance (one listing) for the whole crawl; ``after_listing()`` runs once the tree is listed,
    before any file is read."""
    cfg = FilesystemConfig(root=root, **config)
    connector = FilesystemConnector(cfg, ConnectorContext(connector_id="fs", org_id="o", data_dir=root / ".blobs"))
    data = MemoryRunData(FilesystemConnector.carried)
    connector.bind(data)
    if after_listing is not None:
        listed = connector._walk

        def walk(stop: threading.Event) -> Any:
            found = listed(stop)
            after_listing()
            return found

        connector._walk = walk  # type: ignore[method-assign]
    checkpoint = connector.initial_checkpoint(None)
    docs: list[Document] = []
    failures: list[ItemFailure] = []
    try:
        while checkpoint.has_more:
            step = await asyncio.wait_for(connector.run_step(checkpoint), 10)
            data.apply(step.changes)
            docs += step.documents
            failures += step.failures
            checkpoint = step.checkpoint
    finally:
        await connector.aclose()
    return docs, failures


def _texts(docs: list[Document]) -> str:
    return json.dumps([d.model_dump(mode="json") for d in docs])


def _unlistable(suffix: bytes) -> Callable[..., Any]:
    """``os.scandir`` failing with EACCES for directories ending in ``suffix`` (root reads any directory)."""
    real_scandir = os.scandir

    def scandir(path: Any = ".") -> Any:
        if os.fsencode(path).endswith(suffix):
            raise PermissionError(errno.EACCES, "Permission denied", path)
        return real_scandir(path)

    return scandir


@contextlib.contextmanager
def _unblocking(fifo: Path) -> Iterator[None]:
    """Whatever the test does, a reader stuck on ``fifo`` is released at the end (so a failing test ends)."""
    try:
        yield
    finally:
        with contextlib.suppress(OSError):
            os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))


async def test_an_unreadable_directory_is_a_failure_and_never_deletions(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A directory that cannot be listed is an item failure; its files keep their state and get no tombstones."""
    root = tmp_path / "root"
    (root / "sub" / "deeper").mkdir(parents=True)
    (root / "a.txt").write_text("a")
    (root / "sub" / "b.txt").write_text("b")
    (root / "sub" / "deeper" / "c.txt").write_text("c")
    _, data, _ = await crawl(root)
    scandir = _unlistable(b"/sub")
    with monkeypatch.context() as patched:
        patched.setattr(os, "scandir", scandir)
        (root / "a.txt").write_text("a, changed")
        docs, data, _ = await crawl(root, data=data)
    assert [(Path(d.source).name, d.deleted) for d in docs] == [("a.txt", False)]
    assert sorted(data.previous[FILES]) == ["a.txt", "sub/b.txt", "sub/deeper/c.txt"], "their state is kept"
    docs, _, _ = await crawl(root, data=data)  # readable again, nothing changed under it
    assert docs == []


async def test_an_unreadable_directory_shows_in_the_step_failures(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The directory is reported once, by path, with the reason."""
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "b.txt").write_text("b")
    scandir = _unlistable(b"/sub")
    monkeypatch.setattr(os, "scandir", scandir)
    docs, failures = await _step_by_step(tmp_path)
    assert docs == []
    assert [(f.source, f.reason.split(";")[0]) for f in failures] == [
        (str(tmp_path.resolve() / "sub"), "cannot list directory: Permission denied"),
    ]


async def test_a_fifo_in_the_tree_is_passed_over(tmp_path: Path) -> None:
    """A FIFO is not a document and does not block the crawl."""
    (tmp_path / "a.txt").write_text("a")
    os.mkfifo(tmp_path / "b.pipe")
    (tmp_path / "c.txt").write_text("c")
    with _unblocking(tmp_path / "b.pipe"):
        docs, failures = await _step_by_step(tmp_path, batch_size=1)
    assert sorted(Path(d.source).name for d in docs) == ["a.txt", "c.txt"]
    assert failures == []


async def test_a_file_swapped_for_a_fifo_after_listing_is_not_opened_blocking(tmp_path: Path) -> None:
    """Listed as a file, a FIFO by the time it is read: an item failure at once, the crawl goes on."""
    for name in ("a.txt", "b.txt", "c.txt"):
        (tmp_path / name).write_text(name)

    def swap() -> None:
        (tmp_path / "b.txt").unlink()
        os.mkfifo(tmp_path / "b.txt")

    with _unblocking(tmp_path / "b.txt"):
        docs, failures = await _step_by_step(tmp_path, swap, batch_size=1)
    assert sorted(Path(d.source).name for d in docs) == ["a.txt", "c.txt"]
    assert [(Path(f.source).name, f.reason) for f in failures] == [("b.txt", "a FIFO, not a regular file")]


async def test_a_character_device_in_the_tree_is_never_read(tmp_path: Path) -> None:
    """A device node (here /dev/zero's numbers, which reports size 0 and never ends) is not a document."""
    (tmp_path / "a.txt").write_text("a")
    try:
        os.mknod(tmp_path / "zero", stat.S_IFCHR | 0o600, os.makedev(1, 5))
    except PermissionError:
        pytest.skip("mknod is not permitted here")
    docs, failures = await _step_by_step(tmp_path, max_file_size=1000)
    assert [Path(d.source).name for d in docs] == ["a.txt"]
    assert failures == []


async def test_a_file_swapped_for_a_link_is_not_read_through_it(tmp_path: Path) -> None:
    """follow_symlinks = false: a file (or a directory on its path) replaced by a link after listing is refused."""
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret").write_text(SECRET)
    (outside / "b.txt").write_text(SECRET)
    root = tmp_path / "root"
    (root / "sub").mkdir(parents=True)
    (root / "a.txt").write_text("a")
    (root / "b.txt").write_text("b")
    (root / "sub" / "b.txt").write_text("sub b")

    def swap() -> None:
        (root / "b.txt").unlink()
        (root / "b.txt").symlink_to(outside / "secret")
        (root / "sub" / "b.txt").unlink()
        (root / "sub").rmdir()
        (root / "sub").symlink_to(outside)

    docs, failures = await _step_by_step(root, swap, batch_size=1)
    assert SECRET not in _texts(docs)
    assert [Path(d.source).name for d in docs] == ["a.txt"]
    assert sorted((Path(f.source).relative_to(root.resolve()).as_posix(), f.reason) for f in failures) == [
        ("b.txt", "a symbolic link, and follow_symlinks is false"),
        ("sub/b.txt", "'sub' is no longer a directory (a link or a file now)"),
    ]


async def test_followed_links_stay_inside_the_root(tmp_path: Path) -> None:
    """follow_symlinks = true: links inside the root are followed; links to files or directories outside are not."""
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "shadow").write_text(SECRET)
    root = tmp_path / "root"
    (root / "real").mkdir(parents=True)
    (root / "real" / "doc.txt").write_text("inside")
    (root / "inside-link.txt").symlink_to(root / "real" / "doc.txt")
    (root / "shadow").symlink_to(outside / "shadow")
    (root / "etc").symlink_to(outside)
    (root / "relative").symlink_to("../outside/shadow")
    docs, failures = await _step_by_step(root, follow_symlinks=True)
    assert SECRET not in _texts(docs)
    assert sorted(Path(d.source).relative_to(root.resolve()).as_posix() for d in docs) == [
        "inside-link.txt",
        "real/doc.txt",
    ]
    assert failures == []


async def test_a_file_swapped_for_a_link_outside_is_refused_when_following_links(tmp_path: Path) -> None:
    """follow_symlinks = true: a file replaced after listing by a link leading outside is refused at open time."""
    (tmp_path / "outside").mkdir()
    (tmp_path / "outside" / "shadow").write_text(SECRET)
    root = tmp_path / "root"
    root.mkdir()
    for name in ("a.txt", "b.txt", "c.txt"):
        (root / name).write_text(name)

    def swap() -> None:
        (root / "b.txt").unlink()
        (root / "b.txt").symlink_to(tmp_path / "outside" / "shadow")

    docs, failures = await _step_by_step(root, swap, batch_size=1, follow_symlinks=True)
    assert SECRET not in _texts(docs)
    assert sorted(Path(d.source).name for d in docs) == ["a.txt", "c.txt"]
    assert [Path(f.source).name for f in failures] == ["b.txt"]
    assert failures[0].reason.startswith("leads outside the root")


async def test_names_that_are_not_utf8_are_crawled_with_stable_json_safe_ids(tmp_path: Path) -> None:
    """A Latin-1 file name (and directory name) is crawled, shown JSON-safe, keeps its id, and is deleted by id."""
    root = os.fsencode(tmp_path)
    os.mkdir(root + b"/d\xe9j\xe0")
    for name in (b"caf\xe9.txt", b"d\xe9j\xe0/\xff.txt", b"ok.txt", b"caf\\xe9.txt"):
        Path(os.fsdecode(root + b"/" + name)).write_bytes(b"content of " + name)
    docs, data, _ = await crawl(tmp_path)
    assert len(docs) == 4
    assert len({d.id for d in docs}) == 4, "a name that looks like another's escaped form keeps its own id"
    for doc in docs:
        json.dumps(doc.model_dump(mode="json"), ensure_ascii=False).encode("utf-8")  # no lone surrogates
    odd = next(d for d in docs if d.metadata.get("path_bytes") and d.metadata["path"] == "caf\\xe9.txt")
    assert base64.b64decode(odd.metadata["path_bytes"]) == b"caf\xe9.txt"
    assert odd.source == str(tmp_path.resolve()) + "/caf\\xe9.txt"
    assert (odd.title, odd.mime_type) == ("caf\\xe9.txt", "text/plain")
    for key in data.previous[FILES]:
        key.encode("utf-8")  # stored state is valid UTF-8 (Redis, JSON checkpoints)
    again, data, _ = await crawl(tmp_path, data=data)
    assert again == []
    os.unlink(root + b"/caf\xe9.txt")
    gone, _, _ = await crawl(tmp_path, data=data)
    assert [(d.id, d.deleted) for d in gone] == [(odd.id, True)]


async def test_a_cancelled_step_stops_reading_after_the_current_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A step cancelled while a read hangs ends at once; the reading thread stops after that file, reads no other."""
    for i in range(5):
        (tmp_path / f"f{i}.txt").write_text(str(i))
    hanging, release = threading.Event(), threading.Event()
    read: list[bytes] = []
    threads: set[threading.Thread] = set()
    real_read = Reader.read

    def slow_read(self: Reader, rel: bytes) -> Any:
        read.append(rel)
        threads.add(threading.current_thread())
        if rel == b"f1.txt":
            hanging.set()
            release.wait(10)
        return real_read(self, rel)

    monkeypatch.setattr(Reader, "read", slow_read)
    cfg = FilesystemConfig(root=tmp_path)
    connector = FilesystemConnector(cfg, ConnectorContext(connector_id="fs", org_id="o", data_dir=tmp_path))
    step = asyncio.create_task(connector.run_step(connector.initial_checkpoint(None)))
    await asyncio.to_thread(hanging.wait, 5)
    step.cancel()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(step, 1)
    (reader,) = threads
    assert reader.daemon, "the process must not wait at exit for a read that never returns"
    release.set()
    await connector.aclose()  # the thread ends when its work is done
    await asyncio.to_thread(reader.join, 5)
    assert not reader.is_alive()
    assert read == [b"f0.txt", b"f1.txt"]


@pytest.mark.slow
async def test_sigterm_stops_a_worker_crawling_a_tree_with_a_fifo(
    make_settings: Callable[..., Settings], tmp_path: Path, queue: Queue, processes: Processes
) -> None:
    """A FIFO first in the tree: the crawl does not hang on it, and SIGTERM stops the worker within its deadlines."""
    settings = make_settings()
    root = tmp_path / "files"
    root.mkdir()
    os.mkfifo(root / "a.pipe")
    for i in range(300):
        (root / f"f{i:03d}.txt").write_text(str(i))
    config = {"root": str(root), "batch_size": 10, "max_files_per_second": 100}
    catalog = write_catalog(tmp_path / "catalog.toml", {"fs": {"connector": "filesystem", "config": config}})
    proc = processes.crawler(settings, catalog, tmp_path, drain_timeout_s=1, handoff_timeout_s=1)
    with _unblocking(root / "a.pipe"):
        job_id = await add_crawl(queue, "filesystem", "fs")
        await wait_state(queue, job_id, ["active"], timeout=20)
        await asyncio.sleep(1)
        proc.send_signal(signal.SIGTERM)
        try:
            code = await asyncio.to_thread(proc.wait, 15)
        except subprocess.TimeoutExpired:
            pytest.fail("the worker did not stop on SIGTERM within 15 s")
    assert code == 0, (tmp_path / "worker.log").read_text()[-2000:]
    assert await queue.getJobState(job_id) in ("waiting", "delayed", "prioritized"), "handed off at its checkpoint"


async def test_the_outcome_counts_an_unreadable_directory_and_odd_names_pass_through_redis(
    make_settings: Callable[..., Settings], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, queue: Queue
) -> None:
    """Through the worker: a non-UTF-8 name is stored in Redis and the JSONL file; an unreadable directory is a
    failure in the job's outcome, and the next run deletes nothing under it."""
    root = tmp_path / "files"
    (root / "sub").mkdir(parents=True)
    (root / "sub" / "b.txt").write_text("b")
    Path(os.fsdecode(os.fsencode(root) + b"/caf\xe9.txt")).write_bytes(b"latin-1")
    settings = make_settings()
    catalog = catalog_of(fs={"connector": "filesystem", "config": {"root": str(root), "batch_size": 1}})
    scandir = _unlistable(b"/sub")
    async with running_app(settings, catalog):
        first = await add_crawl(queue, "filesystem", "fs", removeOnComplete=False)
        assert await wait_state(queue, first, ["completed", "failed"]) == "completed"
        monkeypatch.setattr(os, "scandir", scandir)
        second = await add_crawl(queue, "filesystem", "fs", removeOnComplete=False)
        assert await wait_state(queue, second, ["completed", "failed"]) == "completed"
    first_result = (await queue.getJob(first)).returnvalue
    second_result = (await queue.getJob(second)).returnvalue
    assert (first_result["documents"], first_result["failures"]) == (2, 0)
    assert (second_result["documents"], second_result["deleted"], second_result["failures"]) == (0, 0, 1)
    (jsonl,) = (tmp_path / "data").rglob("documents.jsonl")
    lines = [json.loads(line) for line in jsonl.read_bytes().splitlines()]
    assert sorted(line["metadata"]["path"] for line in lines) == ["caf\\xe9.txt", "sub/b.txt"]
