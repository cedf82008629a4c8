"""The one rule for a stuck job: it is in ``active`` but its lock key is gone.

A worker holds ``<prefix>:<queue>:<id>:lock`` while it processes a job and renews it every
``lockDuration / 2``; the key expires when the worker died or its event loop is blocked. The
stalled checker (``queue.py``'s recovery) moves such a job back to ``wait`` on its next pass,
so "stuck" is the window between lock expiry and recovery. The status API and the queue
collector both use :func:`is_stuck` so they never disagree.
"""

from __future__ import annotations


def lock_key(prefix: str, queue: str, job_id: str) -> str:
    """The Redis key BullMQ locks an active job with."""
    return f"{prefix}:{queue}:{job_id}:lock"


def is_stuck(*, in_active: bool, lock_exists: bool) -> bool:
    """True for an active job whose lock has expired (worker crashed mid-processing)."""
    return in_active and not lock_exists
