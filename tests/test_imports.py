"""Data flows one way: what only adds jobs imports no job stack, and no worker module imports back up."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.proc import REPO, worker_env
from worker.imports import (
    CRAWLER_MAY_IMPORT,
    cycles,
    dot,
    graph,
    outside_lower_layers,
    packages,
    pictures,
    rank,
    upward,
)

JOB_STACK = {"worker.dispatch", "worker.runner", "worker.runs", "worker.consumer", "worker.worker_loop", "worker.app"}


def _closure(module: str) -> set[str]:
    code = f"import sys, {module}; print('\\n'.join(m for m in sys.modules if m.startswith('worker')))"
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, env=worker_env(), capture_output=True, text=True, check=True
    )
    return set(out.stdout.split())


@pytest.mark.parametrize("module", ["worker.sinks.bullmq_queue", "worker.schedules", "worker.api", "worker.queue"])
def test_producers_do_not_import_the_job_stack(module: str) -> None:
    """The queue sink, schedules, the job API and the producer adapter load none of dispatch/runner/runs/consumer."""
    assert not (_closure(module) & JOB_STACK), module


def test_the_import_graph_has_no_cycle_and_no_arrow_back_up() -> None:
    """Run-time imports form a DAG, and none runs back up the flow cli -> app -> consumer -> ... -> sinks."""
    edges = graph()
    assert cycles(edges) == []
    assert upward(edges) == []
    assert "worker.dispatch" not in edges["worker.consumer"], "the adapter knows the handler contract only"


def test_every_package_has_its_place_in_the_flow() -> None:
    """Each package (connectors and the crawlers inside it, sinks, ui) is ranked, so the flow test covers it."""
    found = packages()
    assert {"worker.connectors.web", "worker.connectors.files", "worker.sinks", "worker.ui"} <= set(found)
    assert [name for name in found if rank(name) is None] == []


def test_the_crawlers_import_only_the_lower_layers() -> None:
    """A module of connectors/web/ or connectors/files/ imports its own subpackage, the connector interface and the
    plumbing below it, and nothing else; the lower layers themselves stay below the crawlers."""
    edges = graph()
    assert outside_lower_layers(edges) == []
    for module in CRAWLER_MAY_IMPORT:
        assert edges[module] <= CRAWLER_MAY_IMPORT, module


@pytest.mark.parametrize(
    ("source", "target"),
    [
        ("worker.connectors.web.fetch", "worker.dispatch"),  # the job stack (also an arrow back up)
        ("worker.connectors.web.ssrf", "worker.settings"),  # plumbing, but above the crawlers
        ("worker.connectors.files.reading", "worker.connectors.registry"),
        ("worker.connectors.files.batch", "worker.connectors.web.urls"),  # another crawler
    ],
)
def test_an_import_out_of_a_crawler_is_caught(source: str, target: str) -> None:
    """The check fails on an import a crawler must not make."""
    edges = graph()
    edges[source] = edges[source] | {target}
    assert outside_lower_layers(edges) == [(source, target)]


def test_the_picture_of_the_imports_is_current() -> None:
    """docs/imports.dot is what `python -m worker.imports` draws today (docs/imports.svg is rendered from it)."""
    assert (REPO / "docs" / "imports.dot").read_text() == dot(graph())


def test_the_per_package_pictures_are_current_and_small() -> None:
    """docs/imports/ holds one picture of the top level and one per package (``make imports``), each what the
    source draws today, each small enough to read at page width."""
    drawn = pictures(graph())
    folder = REPO / "docs" / "imports"
    assert sorted(p.name for p in folder.glob("*.dot")) == sorted(drawn), "run make imports"
    for name, text in drawn.items():
        assert (folder / name).read_text() == text, f"docs/imports/{name} is stale: run make imports"
        assert (folder / name.replace(".dot", ".svg")).exists(), f"docs/imports/{name} is not rendered"
        boxes = sum(1 for line in text.splitlines() if "[label=" in line)
        assert boxes <= 45, f"docs/imports/{name} has {boxes} boxes: too many to read"
