"""The queue adapter overrides the Python port's internals: it runs only on the bullmq it was written for."""

from __future__ import annotations

import ast
import inspect
from collections.abc import Callable
from importlib.metadata import version
from pathlib import Path
from typing import Any

import pytest
from bullmq import Job, LockManager, Worker
from bullmq.redis_connection import RedisConnection
from bullmq.scripts import Scripts, raw2NextJobData
from bullmq.timer import Timer

from worker.imports import parse_source

WORKER = Path(__file__).resolve().parent.parent / "worker"
PINNED = "3.4.4"


def test_installed_bullmq_is_the_version_the_adapter_overrides() -> None:
    """Another bullmq fails loudly here, naming what to re-check before the pin in pyproject.toml moves."""
    installed = version("bullmq")
    assert installed == PINNED, (
        f"bullmq {installed} is installed; worker/queue/loop.py is written against {PINNED}. Before moving the pin, "
        "make the assertions below pass against the new version (each is an internal the adapter overrides or reads)."
    )


#: Every callable of the port the adapter overrides, calls or packs arguments for, with its parameters in 3.4.4.
SIGNATURES: list[tuple[str, Callable[..., Any], list[str]]] = [
    ("Worker.run", Worker.run, ["self"]),
    ("Worker.processJob", Worker.processJob, ["self", "job", "token"]),
    ("Worker.moveToActive", Worker.moveToActive, ["self", "token"]),
    (
        "Worker.nextJobFromJobData",
        Worker.nextJobFromJobData,
        ["self", "job_data", "job_id", "limit_until", "delay_until", "token"],
    ),
    ("Worker._ensure_client_names", Worker._ensure_client_names, ["self"]),
    ("Worker.runStalledJobsCheck", Worker.runStalledJobsCheck, ["self"]),
    ("Worker.close", Worker.close, ["self", "force"]),
    ("Scripts.moveToActive", Scripts.moveToActive, ["self", "token", "opts"]),
    (
        "Scripts.moveToCompletedArgs",
        Scripts.moveToCompletedArgs,
        ["self", "job", "return_value", "shouldRemove", "token", "fetchNext"],
    ),
    (
        "Scripts.moveToFinishedArgs",
        Scripts.moveToFinishedArgs,
        ["self", "job", "val", "propVal", "shouldRemove", "target", "token", "fetchNext", "fields_to_update"],
    ),
    (
        "Scripts.moveToFailedArgs",
        Scripts.moveToFailedArgs,
        ["self", "job", "failed_reason", "shouldRemove", "token", "fetchNext", "fields_to_update"],
    ),
    ("Scripts.moveToFinished", Scripts.moveToFinished, ["self", "job_id", "keys", "args"]),
    ("Scripts.updateProgress", Scripts.updateProgress, ["self", "job_id", "progress"]),
    ("Scripts.toKey", Scripts.toKey, ["self", "name"]),
    ("Job.fromJSON", Job.fromJSON, ["queue", "rawData", "jobId"]),
    ("Job.fromId", Job.fromId, ["queue", "jobId"]),
    ("Job.moveToFailed", Job.moveToFailed, ["self", "err", "token", "fetchNext"]),
    ("Job.updateStacktrace", Job.updateStacktrace, ["self"]),
    ("Job.log", Job.log, ["self", "logRow"]),
    ("raw2NextJobData", raw2NextJobData, ["raw"]),
    ("Timer", Timer.__init__, ["self", "interval", "callback", "emit_callback", "args", "kwargs"]),
    ("RedisConnection", RedisConnection.__init__, ["self", "redisOpts", "skipVersionCheck", "skipWaitingForReady"]),
    ("LockManager.start", LockManager.start, ["self"]),
    ("LockManager.close", LockManager.close, ["self"]),
    ("LockManager.track_job", LockManager.track_job, ["self", "job_id", "token", "ts", "should_create_controller"]),
    ("LockManager.untrack_job", LockManager.untrack_job, ["self", "job_id"]),
]


@pytest.mark.parametrize(("name", "target", "parameters"), SIGNATURES, ids=[s[0] for s in SIGNATURES])
def test_each_internal_the_adapter_touches_has_its_pinned_signature(
    name: str, target: Callable[..., Any], parameters: list[str]
) -> None:
    assert list(inspect.signature(target).parameters) == parameters, f"{name} changed: re-check worker/queue/loop.py"


async def test_a_worker_has_the_state_and_scripts_the_loop_override_reads(redis_url: str, queue_name: str) -> None:
    """The attributes ``worker.queue.loop`` reads or sets on a constructed Worker, the option keys it reads, and the
    Lua scripts the completion sends by SHA."""
    worker = Worker(queue_name, None, {"connection": redis_url, "autorun": False})
    try:
        for attribute in ("running", "closing", "paused", "drained", "client", "scripts", "lockManager", "backend"):
            assert hasattr(worker, attribute), f"Worker.{attribute}"
        assert hasattr(worker.backend, "blocking_connection")
        for key in ("stalledInterval", "concurrency", "runRetryDelay", "lockDuration"):
            assert key in worker.opts, f"Worker.opts[{key!r}]"
        for script in ("moveToActive", "moveToFinished", "updateProgress"):
            assert script in worker.scripts.commands, f"Scripts.commands[{script!r}]"
    finally:
        await worker.close(force=True)


def _bullmq_importers() -> set[str]:
    found = set()
    for path in WORKER.rglob("*.py"):
        for node in ast.walk(parse_source(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
            if isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            if any(name == "bullmq" or name.startswith("bullmq.") for name in names):
                found.add(str(path.relative_to(WORKER.parent)))
    return found


def test_only_the_adapter_imports_bullmq() -> None:
    """bullmq is touched in the adapter's two modules, consumer and producer, and nowhere else."""
    assert _bullmq_importers() == {"worker/queue/consumer.py", "worker/queue/loop.py", "worker/queue/producer.py"}
