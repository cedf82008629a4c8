"""The JSONL sink: idempotent appends, a torn last line repaired, the index read line by line."""

from __future__ import annotations

import json
import tracemalloc
from pathlib import Path

from worker.documents import Document
from worker.sinks.base import InstanceRef
from worker.sinks.jsonl import JsonlSink

INSTANCE = InstanceRef("org", "filesystem", "fs", "run-1")


def _doc(i: int, text: str = "", version: int = 0) -> Document:
    return Document(id=f"doc-{i}", source=f"/s/{i}", text=text, content_hash=f"sha256:{i}-{version}")


def _lines(path: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in path.read_bytes().splitlines()]


async def test_replayed_batch_adds_nothing_and_changed_documents_are_appended(tmp_path: Path) -> None:
    """A batch written again (by this or a new process) adds no line; a changed document adds one."""
    await JsonlSink(tmp_path).write(INSTANCE, [_doc(1), _doc(2)])
    sink = JsonlSink(tmp_path)  # a new process: the index comes from the file
    assert await sink.write(INSTANCE, [_doc(1), _doc(2)]) == 0
    assert await sink.write(INSTANCE, [_doc(1, version=1), _doc(2)]) == 1
    lines = _lines(sink.path_for(INSTANCE))
    assert [(line["id"], line["content_hash"], line["run_id"]) for line in lines] == [
        ("doc-1", "sha256:1-0", "run-1"),
        ("doc-2", "sha256:2-0", "run-1"),
        ("doc-1", "sha256:1-1", "run-1"),
    ]


async def test_a_torn_last_line_is_cut_and_its_document_written_again(tmp_path: Path) -> None:
    """A crash mid-write leaves half a line: it is cut off, and the replayed write puts the document back whole."""
    sink = JsonlSink(tmp_path)
    await sink.write(INSTANCE, [_doc(1), _doc(2)])
    path = sink.path_for(INSTANCE)
    whole = path.read_bytes()
    path.write_bytes(whole[: whole.index(b"\n") + 1] + whole[whole.index(b"\n") + 1 :][:20])  # doc-2 torn
    assert await JsonlSink(tmp_path).write(INSTANCE, [_doc(1), _doc(2)]) == 1
    assert [line["id"] for line in _lines(path)] == ["doc-1", "doc-2"]


async def test_the_index_is_read_line_by_line_not_the_whole_file(tmp_path: Path) -> None:
    """Re-indexing a 24 MB file (a re-crawl in a new process) peaks at a few MB, not the file's size."""
    sink = JsonlSink(tmp_path)
    text = "lorem ipsum " * 100
    for start in range(0, 20_000, 2_000):
        await sink.write(INSTANCE, [_doc(i, text) for i in range(start, start + 2_000)])
    size = sink.path_for(INSTANCE).stat().st_size
    assert size > 24_000_000
    fresh = JsonlSink(tmp_path)
    tracemalloc.start()
    try:
        assert await fresh.write(INSTANCE, [_doc(0, text)]) == 0  # loads the index: nothing new to write
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 8_000_000, f"indexing a {size} B file peaked at {peak} B"


async def test_two_instances_never_share_a_file(tmp_path: Path) -> None:
    """connectorIds a/b and a_b, orgs x:y and x_y, "..", "", long ids: one file each, all under the data dir."""
    long = "x" * 300
    names = [("org", "a/b"), ("org", "a_b"), ("x:y", "id"), ("x_y", "id"), ("org", ".."), ("org", ""), ("org", "%")]
    names += [("org", long), ("org", long + "y"), ("org", "caf\u00e9"), ("org", "a%2Fb")]
    sink = JsonlSink(tmp_path)
    paths = [sink.path_for(InstanceRef(org, "web", cid, "run-1")) for org, cid in names]
    assert len(set(paths)) == len(names)
    for (org, cid), path in zip(names, paths, strict=True):
        assert path.resolve().is_relative_to(tmp_path.resolve()), path
        assert all(len(part) <= 200 for part in path.parts)
        await sink.write(InstanceRef(org, "web", cid, "run-1"), [_doc(1, text=f"{org}|{cid}")])
    for (org, cid), path in zip(names, paths, strict=True):
        assert [line["text"] for line in _lines(path)] == [f"{org}|{cid}"]
    assert sink.path_for(INSTANCE) == tmp_path / "org" / "filesystem" / "fs" / "documents.jsonl"  # plain names stay
