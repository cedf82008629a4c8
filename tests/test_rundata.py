"""A run's stored crawl state in Redis: fenced incremental writes, removal and expiry at run end, the size cap."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import redis.asyncio as aioredis
from bullmq import Queue

from tests.helpers import add_crawl, catalog_of, running_app, wait_state
from worker.crawlstate import MemoryRunData, StateChanges
from worker.errors import LeaseLost
from worker.runs import RunRecord, RunStore
from worker.settings import Settings


def _changes() -> StateChanges:
    changes = StateChanges()
    changes.push("frontier", ["0 a", "0 b", "1 c"])
    changes.pop("frontier", 1)
    changes.push_front("frontier", ["0 z", "0 y"])
    changes.add("seen", ["a", "b", "c"])
    changes.put("pages", {"a": "1", "b": "2"})
    changes.incr("patterns", {"p": 2})
    changes.incr("patterns", {"p": 1, "q": 1})
    return changes


async def test_a_commit_applies_changes_as_memory_does_and_a_stale_holder_writes_nothing(
    make_settings: Callable[..., Settings], redis_client: aioredis.Redis
) -> None:
    """Changes land as in MemoryRunData; after a takeover the old holder's commit raises LeaseLost, changing nothing."""
    s = make_settings()
    store = RunStore(redis_client, prefix=s.prefix, queue=s.queue_name, lease_ms=5000, retention_s=60)
    old = await store.acquire("org:web:i", "job:1|w|a", takeover_prefix="job:1|")
    assert old is not None
    record = RunRecord(run_id="r1", config_hash="h", state_names=["frontier", "pages", "patterns", "seen"])
    await store.save(old, record, _changes())
    data = store.run_data("org:web:i", record)
    memory = MemoryRunData()
    memory.apply(_changes())
    assert await data.items("frontier") == await memory.items("frontier") == ["0 z", "0 y", "0 b", "1 c"]
    assert await data.members("seen") == {"a", "b", "c"}
    assert await data.mapping("patterns") == await memory.mapping("patterns") == {"p": "3", "q": "1"}
    assert await data.get("pages", ["a", "x"]) == ["1", None]
    assert 0 < await redis_client.ttl(store.data_key("org:web:i", "r1", "seen")) <= 60

    new = await store.acquire("org:web:i", "job:1|w|a", takeover_prefix="job:1|")  # the same holder, a newer epoch
    assert new is not None
    assert new.epoch == old.epoch + 1
    stale = StateChanges()
    stale.push("frontier", ["9 stale"])
    stale.add("seen", ["stale"])
    stale.put("pages", {"stale": "x"})
    stale.pop("frontier", 4)
    with pytest.raises(LeaseLost, match="newer epoch"):
        await store.save(old, record, stale)
    other = await store.acquire("org:web:i", "job:1|w|b", takeover_prefix="job:1|")  # stalled and recovered
    assert other is not None
    with pytest.raises(LeaseLost, match="expired or taken"):
        await store.save(new, record, stale)
    assert await data.items("frontier") == ["0 z", "0 y", "0 b", "1 c"]
    assert await data.members("seen") == {"a", "b", "c"}
    assert await data.get("pages", ["stale"]) == [None]


def _files(root: Path, count: int, name_length: int = 8) -> None:
    root.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        (root / f"{i:0{name_length}d}.txt").write_text(f"file {i}")


async def _data_keys(client: aioredis.Redis, s: Settings) -> dict[str, int]:
    """Data keys of the test's queue -> TTL, keyed by '<run>:<name>'."""
    keys = [k async for k in client.scan_iter(match=f"bull:{s.queue_name}:cw:data:*")]
    return {":".join(k.rsplit(":", 2)[-2:]): await client.ttl(k) for k in keys}


async def test_run_state_is_removed_when_the_run_ends_and_carried_state_expires(
    make_settings: Callable[..., Settings], redis_client: aioredis.Redis, tmp_path: Path, queue: Queue
) -> None:
    """After a run only its carried file map stays, expiring with run_retention_days; the next run's end deletes it."""
    s = make_settings(run_retention_days=2)
    _files(tmp_path / "files", 30)
    catalog = catalog_of(fs={"connector": "filesystem", "config": {"root": str(tmp_path / "files"), "batch_size": 7}})
    async with running_app(s, catalog):
        first = await add_crawl(queue, "filesystem", "fs", removeOnComplete=False)
        assert await wait_state(queue, first, ["completed", "failed"]) == "completed"
        after_first = await _data_keys(redis_client, s)
        second = await add_crawl(queue, "filesystem", "fs", removeOnComplete=False)
        assert await wait_state(queue, second, ["completed", "failed"]) == "completed"
        after_second = await _data_keys(redis_client, s)
    run1 = (await queue.getJob(first)).returnvalue["run_id"]
    run2 = (await queue.getJob(second)).returnvalue["run_id"]
    assert list(after_first) == [f"{run1}:files"]
    assert 86_000 < after_first[f"{run1}:files"] <= 2 * 86400
    assert list(after_second) == [f"{run2}:files"]


async def test_a_run_past_the_state_cap_fails_clearly_and_drops_its_state(
    make_settings: Callable[..., Settings], redis_client: aioredis.Redis, tmp_path: Path, queue: Queue
) -> None:
    """A run past run_state_max_mb fails at once (no retry) naming the setting; state deleted, record abandoned."""
    s = make_settings(run_state_max_mb=1)
    _files(tmp_path / "files", 5000, name_length=150)  # ~250 B of file state each: 1.2 MB in all
    catalog = catalog_of(fs={"connector": "filesystem", "config": {"root": str(tmp_path / "files"), "batch_size": 500}})
    async with running_app(s, catalog):
        job_id = await add_crawl(queue, "filesystem", "fs", removeOnFail=False)
        assert await wait_state(queue, job_id, ["completed", "failed"], timeout=60) == "failed"
    job = await queue.getJob(job_id)
    record = await RunStore(redis_client, prefix=s.prefix, queue=s.queue_name, lease_ms=1, retention_s=1).load(
        "org-1:filesystem:fs"
    )
    assert "run_state_max_mb" in job.failedReason
    assert job.attemptsMade == 1
    assert record is not None
    assert record.status == "abandoned"
    assert record.counters.processed >= 3500
    assert await _data_keys(redis_client, s) == {}


def test_the_state_cap_counts_utf8_bytes_not_characters() -> None:
    """run_state_max_mb is a memory cap: a non-ASCII URL costs its UTF-8 bytes (it counted characters, so
    non-ASCII URLs stored 60.6 MB under a 40 MiB cap)."""
    changes = StateChanges()
    changes.push("frontier", ["https://例え.jp/ページ"])  # 19 characters, 37 bytes
    changes.add("seen", ["abc"])
    changes.put("pages", {"k\u00e9": "v"})
    assert changes.size == len("https://例え.jp/ページ".encode()) + 3 + len("k\u00e9".encode()) + 1
