"""Helpers for the PipesHub producer tests: its producer code path on a chosen Node bullmq version."""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
from pathlib import Path
from typing import Any, cast

import pytest
import redis.asyncio as aioredis

HERE = Path(__file__).resolve().parent
#: PipesHub's lockfile version (npm alias ``bullmq5``) and the current 6.x line.
PACKAGES = ("bullmq5", "bullmq")


def node_binary() -> str:
    """The node binary, with the pinned npm packages installed (a failure, not a skip: ``make node``)."""
    binary = shutil.which("node")
    if binary is None or not (HERE / "node_modules" / "bullmq5").is_dir():
        pytest.fail("node and tests/interop/node_modules are required (make node)")
    return binary


def producer(redis_url: str, queue: str, package: str, command: str, args: dict[str, Any] | list[Any]) -> Any:
    """Run one ``pipeshub_producer.mjs`` command and parse its JSON output."""
    out = subprocess.run(
        [node_binary(), "pipeshub_producer.mjs", redis_url, queue, package, command, json.dumps(args)],
        cwd=HERE,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    if out.returncode != 0:
        raise AssertionError(f"pipeshub_producer.mjs {command} failed: {out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


async def aproducer(redis_url: str, queue: str, package: str, command: str, args: dict[str, Any] | list[Any]) -> Any:
    """:func:`producer` off the event loop."""
    return await asyncio.to_thread(producer, redis_url, queue, package, command, args)


async def job_hash(client: aioredis.Redis, queue: str, job_id: str) -> dict[str, Any]:
    """A job's hash with ``data`` and ``opts`` parsed."""
    raw = cast("dict[str, Any]", await client.hgetall(f"bull:{queue}:{job_id}"))  # a decoding client
    for field in ("data", "opts"):
        if field in raw:
            raw[field] = json.loads(raw[field])
    return raw


async def delayed_ticks(client: aioredis.Redis, queue: str, prefix: str = "repeat:") -> list[str]:
    """Ids of the delayed jobs of ``queue`` that are repeat ticks."""
    return [job_id for job_id in await members(client, f"bull:{queue}:delayed") if job_id.startswith(prefix)]


async def members(client: aioredis.Redis, key: str) -> list[str]:
    """The members of sorted set ``key``, lowest score first (``client`` decodes replies)."""
    return cast("list[str]", await client.zrange(key, 0, -1))


def tick_millis(job_id: str) -> int:
    """The tick time in a ``repeat:<key>:<millis>`` id."""
    return int(job_id.rsplit(":", 1)[1])
