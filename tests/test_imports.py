"""Data flows one way: what only adds jobs imports no job stack, and no worker module imports back up."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.proc import REPO, worker_env
from worker.imports import cycles, dot, graph, upward

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


def test_the_picture_of_the_imports_is_current() -> None:
    """docs/imports.dot is what `python -m worker.imports` draws today (docs/imports.svg is rendered from it)."""
    assert (REPO / "docs" / "imports.dot").read_text() == dot(graph())
