"""The KEYS and ARGV of every Lua script the adapter sends itself, in one place, in each script's order.

bullmq's own calls (the port's ``Scripts``) pack their arguments inside the port; the loop sends four scripts
with arguments of its own, and each is packed here: ``moveToActive`` with the worker's name (so Redis records
``processedBy``, Node's ``pb``), ``updateProgress``, ``moveToFinished`` fetching the next job (its packed
options carry the name too), and Node BullMQ 5.56.1's ``updateJobScheduler`` (``lua/``, KEYS 1-12, ARGV 1-7).
A change of order in a pinned script is a change here only (``tests/test_bullmq_pin.py``,
``tests/interop/test_lua_drift.py``).
"""

from __future__ import annotations

from typing import Any

import msgpack

Call = tuple[list[Any], list[Any]]

#: The keys of bullmq's ``moveToActive`` script, in order.
MOVE_TO_ACTIVE_KEYS = (
    *("wait", "active", "prioritized", "events", "stalled", "limiter", "delayed", "paused", "meta", "pc"),
    "marker",
)

#: The bullmq scripts that hand back the job they take (its whole hash, unless bounded by ``job_hash``).
TAKING_SCRIPTS = ("moveToActive", "moveToFinished", "moveToDelayed")

#: The bullmq scripts a completion sends by SHA inside a pipeline.
PIPELINED_SCRIPTS = ("updateProgress", "moveToFinished")

#: The index of the packed options in ``moveToFinished``'s ARGV (bullmq 3.4.4).
FINISHED_OPTS_ARG = 7


def move_to_active(scripts: Any, worker_opts: dict[str, Any], token: str, now_ms: int) -> Call:
    """``moveToActive``: KEYS :data:`MOVE_TO_ACTIVE_KEYS`; ARGV key prefix, now, packed {token, lockDuration,
    limiter, name}."""
    packed = msgpack.packb(
        {
            "token": token,
            "lockDuration": worker_opts.get("lockDuration", 0),
            "limiter": worker_opts.get("limiter"),
            "name": worker_opts.get("name"),
        },
        use_bin_type=True,
    )
    return scripts.getKeys(list(MOVE_TO_ACTIVE_KEYS)), [scripts.keys[""], now_ms, packed]


def update_progress(scripts: Any, job_id: str, progress_json: str) -> Call:
    """``updateProgress``: KEYS job hash, events, meta; ARGV job id, progress JSON."""
    return [scripts.toKey(job_id), scripts.keys["events"], scripts.keys["meta"]], [job_id, progress_json]


def move_to_completed(scripts: Any, job: Any, result: Any, token: str, *, fetch_next: bool, name: str | None) -> Call:
    """``moveToFinished`` to completed, as the port packs it; fetching the next job, its packed options also
    carry the worker's ``name`` (the fetched job records who took it, as Node's script does)."""
    keys, args = scripts.moveToCompletedArgs(job, result, job.opts.get("removeOnComplete", False), token, fetch_next)
    if fetch_next:
        packed_opts = msgpack.unpackb(args[FINISHED_OPTS_ARG], raw=False)
        packed_opts["name"] = name
        args[FINISHED_OPTS_ARG] = msgpack.packb(packed_opts, use_bin_type=True)
    return keys, args


def update_job_scheduler_5_56(
    scripts: Any, *, job_id: str, scheduler_id: str, next_millis: int, data: str, opts: dict[str, Any], now_ms: int
) -> Call:
    """Node BullMQ 5.56.1's ``updateJobScheduler-12``: KEYS repeat, delayed, wait, paused, meta, prioritized,
    marker, id, events, pc, the current tick's hash, active; ARGV next millis, scheduler id, the template's
    data, the next tick's packed options, now, key prefix, the current tick's id."""
    names = ["repeat", "delayed", "wait", "paused", "meta", "prioritized", "marker", "id", "events"]
    keys = [*scripts.getKeys(names), scripts.keys["pc"], scripts.toKey(job_id), scripts.keys["active"]]
    packed = msgpack.packb(opts, use_bin_type=True)
    return keys, [next_millis, scheduler_id, data, packed, now_ms, scripts.keys[""], job_id]
