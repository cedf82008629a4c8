"""Run records and leases in Redis: one renewal call for every held lease, lost leases flagged."""

from __future__ import annotations

from collections.abc import Callable

import redis.asyncio as aioredis

from worker.runs import RunStore
from worker.settings import Settings


async def test_held_leases_are_renewed_together_and_a_lost_one_is_flagged(
    make_settings: Callable[..., Settings], redis_client: aioredis.Redis
) -> None:
    """renew_held extends every held lease's TTL in one call; one taken by another holder sets its lost event."""
    s = make_settings()
    store = RunStore(redis_client, prefix=s.prefix, queue=s.queue_name, lease_ms=5000, retention_s=60)
    leases = [await store.acquire(f"org:mock:i{i}", f"tok-{i}") for i in range(3)]
    assert all(lease is not None for lease in leases)
    lost = [store.hold(lease) for lease in leases if lease is not None]
    lease_keys = [f"bull:{s.queue_name}:cw:lease:org:mock:i{i}" for i in range(3)]
    for key in lease_keys:
        await redis_client.pexpire(key, 1000)
    await redis_client.set(lease_keys[1], "someone-else", px=5000)  # expired and taken by another job

    await store.renew_held()

    ttls = [await redis_client.pttl(key) for key in lease_keys]
    assert ttls[0] > 4000
    assert ttls[2] > 4000
    assert [event.is_set() for event in lost] == [False, True, False]
    assert await redis_client.get(lease_keys[1]) == "someone-else"
    await store.renew_held()  # the lost lease is no longer renewed (nor flagged again)
    assert await redis_client.get(lease_keys[1]) == "someone-else"


async def test_a_dropped_lease_is_no_longer_renewed(
    make_settings: Callable[..., Settings], redis_client: aioredis.Redis
) -> None:
    """After drop, renew_held leaves the lease's TTL alone."""
    s = make_settings()
    store = RunStore(redis_client, prefix=s.prefix, queue=s.queue_name, lease_ms=5000, retention_s=60)
    lease = await store.acquire("org:mock:x", "tok")
    assert lease is not None
    store.hold(lease)
    store.drop(lease)
    key = f"bull:{s.queue_name}:cw:lease:org:mock:x"
    await redis_client.pexpire(key, 1000)
    await store.renew_held()
    assert await redis_client.pttl(key) <= 1000
