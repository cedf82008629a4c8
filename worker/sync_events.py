"""PipesHub's ``sync-events`` topic on Redis Streams: the event that makes its connector service sync.

PipesHub's own crawling worker does not crawl: for each job it publishes ``<connector>.resync`` to
the topic ``sync-events`` and its Python connector service runs the sync. This module writes that
event byte for byte as PipesHub's Node producer does (``SyncEventProducer.publishEvent`` and
``RedisStreamsProducer.publish`` at pipeshub-ai 95d655b):

- ``XADD <stream> MAXLEN ~ <maxlen> * key <eventType> value <value> headers <headers>``;
- ``value`` is ``JSON.stringify(JSON.stringify(event))``: the event's JSON, JSON-encoded once more
  (PipesHub's Python consumer ``json.loads`` it, and again when the result is a string);
- ``headers`` is ``{"eventType": ..., "timestamp": "<ms>"}`` as JSON;
- event ``{eventType, timestamp, payload}``, payload ``{orgId, origin: "CONNECTOR", connector,
  connectorId, createdAtTimestamp, updatedAtTimestamp, sourceCreatedAtTimestamp}`` (timestamps as
  strings of epoch milliseconds).

Unlike PipesHub's worker, a publish is idempotent per job (one event however often the job is
retried or recovered: the entry id is remembered next to the stream, written in the same script as
the XADD) and a failed publish raises :class:`TransientError`, so BullMQ retries it with backoff
instead of completing a job whose sync never started.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from worker.connections import RedisClient, make_client
from worker.errors import TransientError
from worker.settings import Settings

#: XADD and remember the entry id under a per-job key, unless that job published already.
_PUBLISH_ONCE = """
local prior = redis.call("GET", KEYS[2])
if prior then return {prior, 1} end
local id = redis.call("XADD", KEYS[1], "MAXLEN", "~", ARGV[1], "*",
                      "key", ARGV[2], "value", ARGV[3], "headers", ARGV[4])
redis.call("SET", KEYS[2], id, "EX", ARGV[5])
return {id, 0}
"""


def event_type(connector: str) -> str:
    """PipesHub's ``connector.replace(' ', '').toLowerCase() + '.resync'``: only the *first* space
    goes (``"Confluence Data Center"`` -> ``"confluencedata center.resync"``; its consumer removes the rest)."""
    return connector.replace(" ", "", 1).lower() + ".resync"


def is_client_managed(connector: str, names: tuple[str, ...]) -> bool:
    """PipesHub's ``isLocalFsConnector`` test against each of ``names``: trimmed, ``_`` and whitespace
    removed, lower case."""

    def key(name: str) -> str:
        return "".join(ch for ch in name.strip() if not (ch == "_" or ch.isspace())).lower()

    return key(connector) in {key(name) for name in names}


def sync_event(
    org_id: str, connector: str, connector_id: str, *, now_ms: int, full_sync: bool = False
) -> dict[str, Any]:
    """The event PipesHub's ``constructSyncConnectorEvent`` builds, in its key order."""
    stamp = str(now_ms)
    payload: dict[str, Any] = {
        "orgId": org_id,
        "origin": "CONNECTOR",
        "connector": connector,
        "connectorId": connector_id,
        "createdAtTimestamp": stamp,
        "updatedAtTimestamp": stamp,
        "sourceCreatedAtTimestamp": stamp,
    }
    if full_sync:
        payload["fullSync"] = True
    return {"eventType": event_type(connector), "timestamp": now_ms, "payload": payload}


def stream_fields(event: dict[str, Any]) -> dict[str, str]:
    """The stream entry's fields ``key``, ``value``, ``headers``, encoded as PipesHub's producer encodes them."""
    compact = {"separators": (",", ":"), "ensure_ascii": False}
    value = json.dumps(json.dumps(event, **compact), **compact)  # type: ignore[arg-type]
    headers = json.dumps({"eventType": event["eventType"], "timestamp": str(event["timestamp"])}, **compact)  # type: ignore[arg-type]
    return {"key": event["eventType"], "value": value, "headers": headers}


@dataclass(frozen=True)
class Published:
    """Where an event went: the stream, its entry id, its type, and whether this job had published it before."""

    stream: str
    entry_id: str
    event_type: str
    duplicate: bool = False

    def as_dict(self) -> dict[str, Any]:
        """The job's return value's ``published`` field (camelCase, as Node readers expect)."""
        out: dict[str, Any] = {"stream": self.stream, "id": self.entry_id, "eventType": self.event_type}
        if self.duplicate:
            out["duplicate"] = True
        return out


class SyncEventPublisher:
    """Publishes sync events on one Redis (which may be another than the queue's). Owns ``client``."""

    def __init__(self, client: RedisClient, *, stream: str, maxlen: int, dedup_ttl_s: int) -> None:
        self._client = client
        self.stream = stream
        self._maxlen = maxlen
        self._dedup_ttl_s = dedup_ttl_s
        self._script = client.register_script(_PUBLISH_ONCE)

    async def publish(self, event: dict[str, Any], *, job_key: str) -> Published:
        """Add ``event`` to the stream once per ``job_key``; TransientError when Redis cannot be reached."""
        fields = stream_fields(event)
        # same hash slot as the stream on a Cluster: the tag is the stream's own name
        dedup_key = f"{{{self.stream}}}:crawl-worker:published:{job_key}"
        try:
            entry_id, duplicate = await self._script(
                keys=[self.stream, dedup_key],
                args=[self._maxlen, fields["key"], fields["value"], fields["headers"], self._dedup_ttl_s],
            )
        except RedisError as exc:
            raise TransientError(
                f"cannot publish {fields['key']} to stream {self.stream!r}: {type(exc).__name__}: {exc}"
            ) from exc
        return Published(self.stream, str(entry_id), fields["key"], bool(int(duplicate)))

    async def aclose(self) -> None:
        """Close the client."""
        await self._client.aclose()


def build_publisher(settings: Settings) -> SyncEventPublisher:
    """The publisher the settings describe: the queue's Redis unless ``sync_events_redis_url`` names
    another. No connection is made until the first publish."""
    client: RedisClient
    if settings.sync_events_redis_url is None:
        client = make_client(settings, max_connections=4)
    else:
        password = settings.sync_events_redis_password
        client = aioredis.Redis.from_url(
            settings.sync_events_redis_url,
            decode_responses=True,
            password=password.get_secret_value() if password is not None else None,
            socket_timeout=settings.redis_connect_timeout_s,
            socket_connect_timeout=settings.redis_connect_timeout_s,
            retry=Retry(ExponentialBackoff(cap=1.0, base=0.1), 2),
            retry_on_error=[RedisConnectionError, RedisTimeoutError],
            max_connections=4,
        )
    return SyncEventPublisher(
        client,
        stream=settings.sync_events_prefix + settings.sync_events_stream,
        maxlen=settings.sync_events_maxlen,
        dedup_ttl_s=settings.sync_events_dedup_ttl_s,
    )


def now_ms() -> int:
    """The producer's ``Date.now()``."""
    return int(time.time() * 1000)
