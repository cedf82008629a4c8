"""The queue adapter overrides the Python port's internals: it runs only on the bullmq it was written for."""

from __future__ import annotations

import ast
from importlib.metadata import version
from pathlib import Path

WORKER = Path(__file__).resolve().parent.parent / "worker"
PINNED = "3.4.4"


def test_installed_bullmq_is_the_version_the_adapter_overrides() -> None:
    """Another bullmq fails loudly here, naming what to re-check before the pin in pyproject.toml moves."""
    installed = version("bullmq")
    assert installed == PINNED, (
        f"bullmq {installed} is installed; worker/worker_loop.py is written against {PINNED}. Before moving the pin, "
        "re-check against the new version: Worker.run / processJob / moveToActive / nextJobFromJobData / "
        "_ensure_client_names (overridden), Scripts.moveToCompletedArgs / moveToFinished packing (args[7]), "
        "Job.fromJSON and moveToFailed/updateStacktrace, RedisBackend.blocking_connection, LockManager, and the "
        "Lua scripts the completion sends by SHA (updateProgress, moveToFinished)."
    )


def _bullmq_importers() -> set[str]:
    found = set()
    for path in WORKER.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
            if isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            if any(name == "bullmq" or name.startswith("bullmq.") for name in names):
                found.add(str(path.relative_to(WORKER.parent)))
    return found


def test_only_the_adapter_imports_bullmq() -> None:
    """bullmq is touched in the adapter's two modules, consumer and producer, and nowhere else."""
    assert _bullmq_importers() == {"worker/consumer.py", "worker/worker_loop.py", "worker/queue.py"}
