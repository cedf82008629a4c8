"""The filesystem connector: documents, cursor checkpoints, incremental runs, deletions, guards."""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path

from worker import skips
from worker.connectors.base import ConnectorContext
from worker.connectors.files.connector import FilesystemCheckpoint, FilesystemConfig, FilesystemConnector
from worker.crawlstate import MemoryRunData
from worker.documents import Document


async def crawl(
    root: Path, data: MemoryRunData | None = None, **config: object
) -> tuple[list[Document], MemoryRunData, int]:
    """Run a whole crawl step by step, rebuilding the connector from JSON between steps (as a resume does).

    ``data`` carries the previous run's file states; it is returned with the run completed.
    """
    cfg = FilesystemConfig(root=root, **config)
    ctx = ConnectorContext(connector_id="fs", org_id="o", data_dir=root / ".blobs")
    data = data or MemoryRunData(FilesystemConnector.carried)
    checkpoint = FilesystemConnector(cfg, ctx).initial_checkpoint(None)
    docs: list[Document] = []
    steps = 0
    while checkpoint.has_more:
        connector = FilesystemConnector(cfg, ctx)
        connector.bind(data)
        step = await connector.run_step(FilesystemCheckpoint.model_validate_json(checkpoint.model_dump_json()))
        await connector.aclose()
        data.apply(step.changes)
        docs.extend(step.documents)
        checkpoint = step.checkpoint
        steps += 1
    data.complete()
    return docs, data, steps


async def test_one_document_per_file_with_stable_ids(tmp_path: Path) -> None:
    """Text files are inlined, binaries referenced; ids are stable across runs; steps follow batch_size."""
    (tmp_path / "a.txt").write_text("hello")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "b.md").write_text("# title")
    (tmp_path / "c.bin").write_bytes(b"\x00\xff" * 10)
    docs, _, steps = await crawl(tmp_path, batch_size=2)
    assert steps == 2
    by_name = {Path(d.source).name: d for d in docs}
    assert by_name["a.txt"].text == "hello"
    assert by_name["a.txt"].mime_type == "text/plain"
    assert by_name["c.bin"].text is None
    assert by_name["c.bin"].content_ref == by_name["c.bin"].source
    assert by_name["c.bin"].size == 20
    again, _, _ = await crawl(tmp_path)
    assert {d.id for d in again} == {d.id for d in docs}


async def test_incremental_run_emits_only_changes_and_deletions(tmp_path: Path) -> None:
    """A second run emits the changed and the new file and a tombstone for the deleted one."""
    for name in "abc":
        (tmp_path / f"{name}.txt").write_text(name)
    _, final, _ = await crawl(tmp_path)
    (tmp_path / "a.txt").write_text("changed!")
    (tmp_path / "b.txt").unlink()
    (tmp_path / "d.txt").write_text("new")
    docs, _, _ = await crawl(tmp_path, data=final)
    summary = sorted((Path(d.source).name, d.deleted) for d in docs)
    assert summary == [("a.txt", False), ("b.txt", True), ("d.txt", False)]


async def test_globs_size_limit_and_symlink_loop(tmp_path: Path) -> None:
    """Include/exclude globs apply, oversized files are failures, a symlink loop is walked once."""
    (tmp_path / "keep.txt").write_text("k")
    (tmp_path / "skip.log").write_text("s")
    (tmp_path / "big.txt").write_text("x" * 5000)
    (tmp_path / "dir").mkdir()
    (tmp_path / "dir" / "in.txt").write_text("i")
    os.symlink(tmp_path, tmp_path / "dir" / "loop")
    cfg = FilesystemConfig(
        root=tmp_path, include=["*.txt", "**/*.txt"], exclude=["*.log"], max_file_size=1000, follow_symlinks=True
    )
    ctx = ConnectorContext(connector_id="fs", org_id="o", data_dir=tmp_path / ".blobs")
    step = await FilesystemConnector(cfg, ctx).run_step(FilesystemConnector(cfg, ctx).initial_checkpoint(None))
    names = sorted(Path(d.source).name for d in step.documents)
    assert names == ["in.txt", "keep.txt"]
    assert [Path(f.source).name for f in step.failures] == ["big.txt"]


async def test_files_not_read_are_counted_by_reason_once_per_run(tmp_path: Path) -> None:
    """Excluded, oversized and non-regular entries are counted as skipped; a second attempt does not count again."""
    for i in range(5):
        (tmp_path / f"keep{i}.txt").write_text("k")
    (tmp_path / "skip.log").write_text("s")
    (tmp_path / "big.txt").write_text("x" * 5000)
    os.mkfifo(tmp_path / "pipe.txt")
    cfg = FilesystemConfig(root=tmp_path, exclude=["*.log"], max_file_size=1000, batch_size=2)
    ctx = ConnectorContext(connector_id="fs", org_id="o", data_dir=tmp_path / ".blobs")
    checkpoint = FilesystemConnector(cfg, ctx).initial_checkpoint(None)
    skipped: Counter[str] = Counter()
    while checkpoint.has_more:
        connector = FilesystemConnector(cfg, ctx)  # every step a new attempt: the directory is listed again
        step = await connector.run_step(FilesystemCheckpoint.model_validate_json(checkpoint.model_dump_json()))
        await connector.aclose()
        skipped.update(step.skipped)
        checkpoint = step.checkpoint
    assert skipped == {"excluded": 1, "too-large": 1, "not-regular": 1}
    assert skips.truncates(skipped)
