"""Redis clients built from Settings: plain, TLS, ACL, Sentinel or Cluster.

Every client decodes responses (bullmq needs ``decode_responses=True``) and sets its own
socket timeout above bullmq's longest blocking read (10 s): redis-py 8's 5 s default would
cut the worker's BZPOPMIN and let an idle worker sleep through due jobs.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import Sentinel
from redis.backoff import ExponentialBackoff
from redis.connection import HiredisRespSerializer
from redis.exceptions import BusyLoadingError, ConnectionError, NoScriptError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError
from redis.utils import HIREDIS_AVAILABLE

from worker.settings import Settings

RedisClient = aioredis.Redis | RedisCluster


@dataclass(frozen=True)
class ScriptCall:
    """A Lua script call handed to someone else to send inside their pipeline.

    ``script`` is a registered redis-py script (its ``sha`` is sent; its ``script`` source is
    loaded again if Redis answers NOSCRIPT); ``on_reply`` receives the reply (or the error).
    """

    script: Any
    keys: Sequence[str]
    args: Sequence[str | int | float | bytes]
    on_reply: Callable[[Any], None] | None = None


Command = ScriptCall | tuple[Any, ...]
#: Callers' command groups in send order, each with the future of a caller that joined (None: the leader).
_Batch = list[tuple[Sequence[Command], "asyncio.Future[list[Any]] | None"]]


class AutoPipeline:
    """Sends the commands that concurrent tasks issue in the same event-loop turn as one pipeline.

    redis-py's asyncio client spends about 27 µs of CPU per command it sends on its own (a pooled
    connection, a timeout, a write and a read each); concurrent jobs that each send their scripts
    pay that every time. The first caller of a turn leads: it yields once, so the others of that
    turn join its batch, then sends the batch in one round trip and hands each caller its replies
    (measured: 14 µs a command with 10 callers, 9 µs with 50, 52 vs 49 µs for a lone caller).
    A caller's commands stay adjacent and in order; errors come back as values; scripts go by SHA
    and are loaded and sent again if Redis answers NOSCRIPT (after a restart, failover or SCRIPT FLUSH).
    ``timeout_s`` bounds each round trip (a TimeoutError after it, as a socket timeout would raise).
    """

    def __init__(self, client: RedisClient, *, timeout_s: float | None = None, batching: bool = True) -> None:
        self._client = client
        self._timeout_s = timeout_s
        self._batching = batching  # False when there is one caller at a time (concurrency 1): no yield
        self._forming: _Batch | None = None
        self._detached: set[asyncio.Future[list[Any]]] = set()

    async def execute(self, commands: Sequence[Command]) -> list[Any]:
        """Send ``commands`` (with whatever else is sent this turn); their replies, in order.

        If this caller is cancelled while it leads, the callers that joined its batch are still
        served; if it is cancelled while the batch is in flight, they get a ConnectionError (their
        commands may or may not have run, as with a dropped connection).
        """
        if not self._batching:
            return await self._send(commands)
        if self._forming is not None:
            joined: asyncio.Future[list[Any]] = asyncio.get_running_loop().create_future()
            self._forming.append((commands, joined))
            return await joined
        batch: _Batch = [(commands, None)]
        self._forming = batch
        try:
            await asyncio.sleep(0)  # the other callers of this turn join the batch
        except asyncio.CancelledError:
            self._forming = None
            if len(batch) > 1:
                orphans = asyncio.ensure_future(self._send_batch(batch[1:]))
                self._detached.add(orphans)
                orphans.add_done_callback(self._forget)
            raise
        self._forming = None
        return await self._send_batch(batch)

    def _forget(self, task: asyncio.Future[list[Any]]) -> None:
        self._detached.discard(task)
        if not task.cancelled():
            task.exception()  # delivered to the joined callers already

    async def _send_batch(self, batch: _Batch) -> list[Any]:
        """Send every group of ``batch`` in one round trip; resolve the joined callers; the first group's replies."""
        flat = [command for group, _ in batch for command in group]
        try:
            replies = await self._send(flat)
        except BaseException as exc:
            for _, joined in batch:
                if joined is not None and not joined.done():
                    joined.set_exception(exc if isinstance(exc, Exception) else ConnectionError("batch not sent"))
            raise
        start = 0
        for group, joined in batch:
            if joined is not None and not joined.done():
                joined.set_result(replies[start : start + len(group)])
            start += len(group)
        return replies[: len(batch[0][0])]

    async def _send(self, commands: Sequence[Command]) -> list[Any]:
        try:
            async with asyncio.timeout(self._timeout_s):  # the whole round trip, not each reply
                return await self._send_now(commands)
        except TimeoutError as exc:
            raise RedisTimeoutError(f"no reply from Redis within {self._timeout_s} s") from exc

    async def _send_now(self, commands: Sequence[Command]) -> list[Any]:
        packed = [_packed(command) for command in commands]
        if len(packed) == 1:
            try:
                return [await self._client.execute_command(*packed[0])]
            except ResponseError as exc:
                if not isinstance(exc, NoScriptError):
                    return [exc]
                replies: list[Any] = [exc]
        else:
            pipe = self._client.pipeline(transaction=False)
            for command in packed:
                pipe.execute_command(*command)
            replies = await pipe.execute(raise_on_error=False)
        missing = [i for i, reply in enumerate(replies) if isinstance(reply, NoScriptError)]
        if missing:
            for i in missing:
                script = commands[i]
                assert isinstance(script, ScriptCall)  # only scripts answer NOSCRIPT
                await self._client.script_load(script.script.script)
            pipe = self._client.pipeline(transaction=False)
            for i in missing:
                pipe.execute_command(*packed[i])
            for i, reply in zip(missing, await pipe.execute(raise_on_error=False), strict=True):
                replies[i] = reply
        return replies


def _packed(command: Command) -> tuple[Any, ...]:
    if isinstance(command, ScriptCall):
        return ("EVALSHA", command.script.sha, len(command.keys), *command.keys, *command.args)
    return command


def redact_url(url: str) -> str:
    """``url`` with any password replaced by ``***`` (safe to log)."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    user = parts.username or ""
    return urlunsplit(parts._replace(netloc=f"{user}:***@{host}"))


class SentinelMasterClient(aioredis.Redis):
    """The Sentinel-discovered master; ``aclose()`` also closes the connections to the Sentinels.

    redis-py's ``master_for`` client leaves those open (one per Sentinel, an unclosed transport each).
    """

    async def aclose(self, close_connection_pool: bool | None = None) -> None:
        """Close the master connections, then every Sentinel client."""
        await super().aclose(close_connection_pool)
        manager = getattr(self.connection_pool, "sentinel_manager", None)
        for sentinel in getattr(manager, "sentinels", ()):
            await sentinel.aclose()


class _HiredisPacking:
    """Commands packed by hiredis (C), as redis-py's synchronous client does; its asyncio client packs
    them in Python, which costs about 7 µs per command (11 vs 4 µs for a bullmq script call)."""

    # redis-py types this call in some releases and not in others (8.2 does not)
    _packer = HiredisRespSerializer()  # type: ignore[no-untyped-call,unused-ignore]

    def pack_command(self, *args: Any) -> list[bytes]:
        """The command in RESP, packed by hiredis."""
        packed: list[bytes] = self._packer.pack(*args)
        return packed


def _pack_with_hiredis(client: aioredis.Redis) -> aioredis.Redis:
    """Make ``client``'s new connections pack commands with hiredis (when it is installed)."""
    if HIREDIS_AVAILABLE:
        pool = client.connection_pool
        base: type[Any] = pool.connection_class
        pool.connection_class = type(base.__name__, (_HiredisPacking, base), {"__module__": __name__})
    return client


def _keepalive(settings: Settings) -> dict[int, int]:
    """TCP keepalive (probes after 30 s idle, 3 of them 5 s apart) and, where the platform has it,
    TCP_USER_TIMEOUT: a peer that vanished is found within the socket timeout even while a reply is
    awaited, also on connections that set no per-read timeout."""
    wanted = {
        "TCP_KEEPIDLE": 30,
        "TCP_KEEPINTVL": 5,
        "TCP_KEEPCNT": 3,
        "TCP_USER_TIMEOUT": round(settings.redis_socket_timeout_s * 1000),
    }
    return {getattr(socket, name): value for name, value in wanted.items() if hasattr(socket, name)}


def _common_kwargs(settings: Settings, *, bounded_reads: bool = True) -> dict[str, Any]:
    kwargs: dict[str, Any] = {
        "decode_responses": True,
        # bytes that are not UTF-8 (a hostile or broken producer) read as lone surrogates instead of an
        # exception that would leave the job active forever; worker/queue/job_hash.py turns them into a reason
        "encoding_errors": "surrogateescape",
        "socket_timeout": settings.redis_socket_timeout_s if bounded_reads else None,
        "socket_connect_timeout": settings.redis_connect_timeout_s,
        "socket_keepalive": True,
        "socket_keepalive_options": _keepalive(settings),
        "health_check_interval": 15,
        "retry": Retry(ExponentialBackoff(cap=2.0, base=0.1), 3),
        "retry_on_error": [BusyLoadingError, ConnectionError, RedisTimeoutError],
    }
    if settings.redis_username:
        kwargs["username"] = settings.redis_username
    password = settings.redis_password_value()
    if password is not None:
        kwargs["password"] = password
    return kwargs


def _tls_kwargs(settings: Settings) -> dict[str, Any]:
    tls: dict[str, Any] = {}
    if settings.redis_tls_ca_file:
        tls["ssl_ca_certs"] = str(settings.redis_tls_ca_file)
        tls["ssl_cert_reqs"] = ssl.CERT_REQUIRED
    if settings.redis_tls_cert_file:
        tls["ssl_certfile"] = str(settings.redis_tls_cert_file)
    if settings.redis_tls_key_file:
        tls["ssl_keyfile"] = str(settings.redis_tls_key_file)
    return tls


def make_client(settings: Settings, *, max_connections: int | None = None, bounded_reads: bool = True) -> RedisClient:
    """A new pooled client for ``settings``; the caller owns it and must ``aclose()`` it.

    ``bounded_reads=False`` sets no timeout on each reply read (redis-py arms and cancels a timer per
    reply: 21 µs a job on the job path, 14 % of its throughput at concurrency 50): for the job path,
    whose round trips the :class:`AutoPipeline` bounds as a whole; TCP keepalive and TCP_USER_TIMEOUT
    still find a dead peer.
    """
    kwargs = _common_kwargs(settings, bounded_reads=bounded_reads)
    pool_size = max_connections or settings.redis_max_connections
    tls = _tls_kwargs(settings) if settings.redis_url.startswith("rediss://") else {}
    if settings.redis_sentinels:
        pairs = (item.rpartition(":") for item in settings.redis_sentinels)
        sentinels = [(host, int(port)) for host, _, port in pairs]
        # Sentinel builds its connections from keywords, not from the URL: TLS must be asked for.
        if tls:
            tls["ssl"] = True
        sentinel = Sentinel(  # type: ignore[no-untyped-call,unused-ignore]
            sentinels,
            sentinel_kwargs={"socket_timeout": settings.redis_connect_timeout_s, **tls},
            **kwargs,
            **tls,
        )
        assert settings.redis_sentinel_master is not None  # checked by Settings
        master: aioredis.Redis = sentinel.master_for(
            settings.redis_sentinel_master, redis_class=SentinelMasterClient, max_connections=pool_size
        )
        return _pack_with_hiredis(master)
    if settings.redis_cluster:
        cluster: RedisCluster = RedisCluster.from_url(settings.redis_url, max_connections=pool_size, **kwargs, **tls)
        return cluster
    if settings.redis_url.startswith("unix://"):
        kwargs.pop("socket_keepalive")  # TCP options: unix-socket connections reject them
        kwargs.pop("socket_keepalive_options")
    return _pack_with_hiredis(aioredis.Redis.from_url(settings.redis_url, max_connections=pool_size, **kwargs, **tls))
