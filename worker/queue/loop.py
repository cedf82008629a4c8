"""Node's consumption loop on the Python port's Worker (``worker/queue/`` is the only package that imports
bullmq).

PINNED: this module overrides the Python port's internal worker loop (``Worker.run``, ``processJob``,
``moveToActive``, ``nextJobFromJobData``, ``_ensure_client_names``) and reads its internals (scripts,
backend, lock manager, ``Job.fromJSON``). It is written against ``bullmq==3.4.4`` exactly (the pin in
``pyproject.toml``); ``tests/test_bullmq_pin.py`` fails, naming what to re-check, when another
version is installed.

What it changes in the port's loop (see shared/research/bullmq-python.md):
- one task per concurrency slot, a completion fetches the next job (Node's loop);
- ``processedBy`` sent with every job taken; the worker's name on one blocking connection only;
- repeat ticks: the next tick is created as the producer's generation of Node BullMQ creates it
  (``worker/queue/repeat.py``), with the tick's own data (the port's script gave every later tick ``data: {}``);
- jobs the port cannot read (``worker/queue/job_hash.py``) fail at once with a clear reason instead of
  looping through lock expiry and stall recovery; stack traces without install paths (``worker/queue/traces.py``).
"""

from __future__ import annotations

import asyncio
import functools
import itertools
import json
import time
from collections.abc import Awaitable, Callable
from typing import Any

from bullmq import Job, Worker
from bullmq.custom_errors import DelayedError, UnrecoverableError, WaitingChildrenError
from bullmq.redis_connection import RedisConnection
from bullmq.scripts import raw2NextJobData
from bullmq.timer import Timer
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from worker.connections import AutoPipeline, ScriptCall
from worker.errors import RepeatError
from worker.handler import Completion
from worker.logs import get_logger
from worker.queue import job_hash, repeat, scripts
from worker.queue.traces import portable_trace

log = get_logger(__name__)


class NodeLoopWorker(Worker):  # type: ignore[misc]
    """bullmq's Worker with Node's consumption loop, and undecodable jobs failed instead of dropped.

    The port's ``run`` keeps one task per job and waits on all of them with ``asyncio.wait`` (work
    that grows with concurrency on every wake-up), and completes each job with ``fetch_next=False``,
    so every job costs two scripts: ``moveToActive`` and ``moveToFinished``. Here each concurrency
    slot is one long-lived task that completes its job with ``fetchNext`` and goes straight on to
    the job that came back (one script per job, as Node's worker does). Slots without a job queue
    on one lock to fetch, so at most one of them blocks on the marker at a time, as in Node.
    Everything else (locks, stalled checks, delays, retries, events, close) is bullmq's own.
    """

    running: bool
    paused: bool
    drained: bool
    _client_name_set: bool

    def __init__(
        self,
        queue_name: str,
        processor: Callable[[Job, str], Awaitable[Any]],
        opts: dict[str, Any],
        *,
        client_name: str,
        blocking_client: Any,
        autopipeline: AutoPipeline,
        max_data_bytes: int,
        min_every_ms: int,
    ) -> None:
        """The port's Worker (``opts``: its options, ``autorun`` off), then what this loop adds: its own named
        blocking connection (``blocking_client``, the only one that carries ``client_name``, as in Node; bullmq
        closes it with the worker), the shared auto-pipeline, the job-size bound on the scripts that take jobs,
        the repeat floor, and Node 5.56.1's updateJobScheduler script."""
        super().__init__(queue_name, processor, opts)
        #: Batches the completions of concurrent slots (and the run store's lease reads) into shared round trips.
        self.autopipeline = autopipeline
        self.clientName = client_name
        self.backend.blocking_connection = self.blockingRedisConnection = RedisConnection(blocking_client)
        self.bclient = blocking_client
        self.max_data_bytes = max_data_bytes
        self.min_every_ms = min_every_ms
        self._update_scheduler = self.client.register_script(repeat.UPDATE_JOB_SCHEDULER_LUA.read_text())
        self.bound_fields()

    async def run(self) -> None:
        if self.running:
            raise RuntimeError("Worker is already running")
        await self._ensure_client_names()
        self.lockManager.start()
        self.stalledCheckTimer = Timer(self.opts["stalledInterval"] / 1000, self.runStalledJobsCheck, self.emit)
        self.running = True
        self._fetching = asyncio.Lock()
        self._in_flight = 0
        self._idle = asyncio.Event()
        self._idle.set()
        self._tokens = itertools.count(1)
        slots = [asyncio.ensure_future(self._slot()) for _ in range(int(self.opts["concurrency"]))]
        self.processing = set(slots)  # what close() waits for and cancelProcessing() cancels
        try:
            await asyncio.gather(*slots)
        finally:
            self.running = False
            for slot in slots:
                slot.cancel()
            self.stalledCheckTimer.stop()
            await self.lockManager.close()

    async def _slot(self) -> None:
        """One concurrency slot: fetch a job, process it, take the next one its completion returned."""
        job: Job | None = None
        while True:
            if job is None:
                if self.closing:
                    return
                if self.paused:
                    await self.resume_event.wait()
                    continue
                async with self._fetching:
                    if self.closing or self.paused:
                        continue
                    token = f"{self.id}:{next(self._tokens)}"
                    job = await self.retryIfFailed(
                        functools.partial(self.getNextJob, token),
                        {"delay_in_ms": self.opts["runRetryDelay"], "only_emit_error": True},
                    )
                if job is None:
                    continue
            job = await self._process_job(job, job.token)

    async def _process_job(self, job: Job, token: str) -> Job | None:
        """bullmq's ``processJob``, except that a completion also fetches and returns the next job."""
        self._in_flight += 1
        self._idle.clear()
        next_job: Job | None = None
        try:
            if "removeOnComplete" not in job.opts and "removeOnComplete" in self.opts:
                job.opts["removeOnComplete"] = self.opts["removeOnComplete"]
            if "removeOnFail" not in job.opts and "removeOnFail" in self.opts:
                job.opts["removeOnFail"] = self.opts["removeOnFail"]
            self.jobs.add((job, token))
            self.lockManager.track_job(job.id, token, int(time.time() * 1000))
            if job.deferredFailure:
                failure = UnrecoverableError(job.deferredFailure)
                await self._fail(job, failure, token)
                self.emit("failed", job, failure)
                return None
            done: Completion = await self.processor(job, token)
            moved = None
            if not self.forceClosing:
                fetch_next = not (self.closing or self.paused)
                moved = await self._complete(job, token, done, fetch_next)
                job.returnvalue = done.result
                job.attemptsMade += 1
                done.committed()  # counted only now: a completion Redis refused (lock lost) is not one
            self.emit("completed", job, done.result)
            if moved:
                next_job = await self._next_after(moved, token)
        except (DelayedError, WaitingChildrenError):
            return None
        except Exception as err:
            try:
                if not self.forceClosing:
                    await self._fail(job, err, token)
                self.emit("failed", job, err)
            except Exception as failed_err:
                self.emit("error", failed_err, job)
        finally:
            self.jobs.discard((job, token))
            self.lockManager.untrack_job(job.id)
            self._in_flight -= 1
            if not self._in_flight:
                self._idle.set()
        return next_job

    async def _fail(self, job: Job, err: BaseException, token: str) -> None:
        """``job.moveToFailed``, with a stack trace that names modules, not this machine's install paths
        (none at all for a job failed before it ran: the port would store ``NoneType: None``)."""
        stack = portable_trace(err)
        limit = job.opts.get("stackTraceLimit")

        def update_stacktrace() -> None:
            kept = [*job.stacktrace, *stack]
            job.stacktrace = [] if limit == 0 else kept[-limit:] if limit else kept

        job.updateStacktrace = update_stacktrace
        await job.moveToFailed(err, token)

    async def _next_after(self, moved: list[Any], token: str) -> Job | None:
        """The job a completion fetched. If it cannot be taken on (its repeat tick could not be sent),
        it stays active under its lock and is recovered as stalled; the finished job is not touched."""
        job_data, job_id, limit_until, delay_until = moved
        try:
            return await self.nextJobFromJobData(job_data, job_id, limit_until or 0, delay_until or 0, token)
        except Exception as err:
            log.error("job.fetch_failed", job_id=job_id, error=str(err), error_type=type(err).__name__)
            self.emit("error", err)
            return None

    async def moveToActive(self, token: str) -> Job | None:  # noqa: N802 - bullmq's method name
        """bullmq's ``moveToActive`` with the worker's name, so Redis records ``processedBy`` (Node's ``pb``)."""
        keys, args = scripts.move_to_active(self.scripts, self.opts, token, int(time.time() * 1000))
        result = await self.scripts.commands["moveToActive"](keys=keys, args=args)
        job_data, job_id, limit_until, delay_until = raw2NextJobData(result) or (None, None, None, None)
        job: Job | None = await self.nextJobFromJobData(job_data, job_id, limit_until or 0, delay_until or 0, token)
        return job

    async def _ensure_client_names(self) -> None:
        """Name the blocking connection only (one per process), as Node names its worker's blocking
        connection; the pooled connections stay unnamed, so ``getWorkers()`` counts a process once."""
        if self._client_name_set:
            return
        await self.backend.blocking_connection.set_client_name(self.clientName)
        self._client_name_set = True

    async def _complete(self, job: Job, token: str, done: Completion, fetch_next: bool) -> list[Any] | None:
        """One round trip: the last progress, the log line, ``moveToFinished`` (fetching the next job),
        then the calls the job asked to send after it (the run record's last write).

        Progress goes first, so listeners see 100 % before ``completed``. Returns the next job's raw
        data, or None.
        """
        commands: list[ScriptCall | tuple[Any, ...]] = []
        if done.progress is not None:
            job.progress = done.progress
            progress_json = json.dumps(done.progress, separators=(",", ":"), allow_nan=False)
            keys, args = scripts.update_progress(self.scripts, job.id, progress_json)
            commands.append(ScriptCall(self.scripts.commands["updateProgress"], keys, args))
        if done.log is not None:
            logs_key = self.scripts.toKey(f"{job.id}:logs")
            commands.append(("RPUSH", logs_key, done.log))
            keep_logs = int(job.opts.get("keepLogs") or 0)
            if keep_logs:
                commands.append(("LTRIM", logs_key, -keep_logs, -1))
        keys, args = scripts.move_to_completed(
            self.scripts, job, done.result, token, fetch_next=fetch_next, name=self.opts.get("name")
        )
        finish = len(commands)
        commands.append(ScriptCall(self.scripts.commands["moveToFinished"], keys, args))
        commands.extend(done.after)
        replies = await self.autopipeline.execute(commands)
        for i, (command, reply) in enumerate(zip(commands, replies, strict=True)):
            if isinstance(command, ScriptCall) and command.on_reply is not None:
                command.on_reply(reply)
            elif isinstance(reply, Exception) and i != finish:
                log.warning("job.completion_write_failed", job_id=job.id, error=str(reply))
        moved = replies[finish]
        if isinstance(moved, Exception):
            raise moved
        if isinstance(moved, int) and moved < 0:
            raise self.scripts.finishedErrors(
                {"code": moved, "jobId": job.id, "command": "moveToFinished", "state": "active"}
            )
        next_job: list[Any] | None = raw2NextJobData(moved)
        return next_job

    def bound_fields(self) -> None:
        """The scripts that take a job read its hash field by field up to ``max_data_bytes`` (data) and
        ``job_hash.FIELD_MAX_BYTES`` (every other field) instead of whole (``job_hash.bounded_script``)."""
        commands = self.scripts.commands
        for name in scripts.TAKING_SCRIPTS:
            source = job_hash.bounded_script(commands[name].script, max_data_bytes=self.max_data_bytes)
            commands[name] = self.scripts.redisClient.register_script(source)

    async def load_scripts(self) -> None:
        """Load the bullmq scripts that completions send by SHA."""
        for name in scripts.PIPELINED_SCRIPTS:
            await self.client.script_load(self.scripts.commands[name].script)

    async def pause(self, do_not_wait_active: bool = False) -> None:
        """Stop taking jobs; unless told not to, wait for the jobs in flight (slots stay alive)."""
        if not self.paused:
            self.paused = True
            self.resume_event.clear()
            if self.waiting and not self.waiting.done():
                self.waiting.cancel()
        if not do_not_wait_active and self.running:
            await self._idle.wait()
        self.emit("paused")

    async def nextJobFromJobData(  # noqa: N802 - bullmq's method name
        self,
        job_data: dict[str, Any] | None = None,
        job_id: str | None = None,
        limit_until: int = 0,
        delay_until: int = 0,
        token: str | None = None,
    ) -> Job | None:
        """bullmq's ``nextJobFromJobData``, with the repeat step of the producer's Node generation and
        unreadable jobs failed.

        A job the port cannot read (``worker/queue/job_hash.py``) is returned with a deferred failure (failed at
        once with a clear reason, no attempts spent) instead of raising, which would leave it active until
        its lock expired, over and over.
        """
        self.limitUntil = max(limit_until, 0) or 0
        if not job_data and not self.drained:
            self.drained = True
            self.blockUntil = 0
        if delay_until:
            self.blockUntil = max(int(delay_until), 0) or 0
        if not job_data:
            return None
        self.drained = False
        reason = (
            job_hash.oversize_problem(job_data, max_data_bytes=self.max_data_bytes)
            or job_hash.size_problem(job_data, max_data_bytes=self.max_data_bytes)
            or job_hash.text_problem(job_data)
        )
        job: Job | None = None
        if reason is None:
            try:
                job = Job.fromJSON(self, job_data, job_id)
            except Exception:  # whatever the port cannot read, named in the producer's terms below
                reason = job_hash.problem(job_data, max_data_bytes=self.max_data_bytes) or "job could not be read"
            else:
                reason = job_hash.options_problem(job.opts) or (
                    None if job_data.get("nrjid") else repeat.options_problem(job.opts)
                )
        if reason is not None:
            job = await self._unreadable(job_data, job_id, reason)
        assert job is not None
        job.token = token
        job.data_bytes = job_hash.stored_bytes(str(job_data.get("data", "")))
        await self._next_tick(job_data, job)
        return job

    async def _unreadable(self, job_data: dict[str, Any], job_id: str | None, reason: str) -> Job:
        """A job to fail at once with ``reason``, read from a sanitized copy of its hash. Counters that
        bullmq's scripts increment are reset first when they are not integers (the scripts would fail)."""
        broken = {
            field: "0"
            for field in job_hash.COUNTERS
            if job_data.get(field) not in (None, "") and not str(job_data[field]).lstrip("-").isdigit()
        }
        if broken and job_id is not None:
            await self.client.hset(self.scripts.toKey(job_id), mapping=broken)
        job: Job = Job.fromJSON(self, {**job_hash.sanitized(job_data), **broken}, job_id)
        job.deferredFailure = reason
        log.warning("job.unreadable", job_id=job_id, reason=reason)
        return job

    #: The largest job data read (``job_data_max_bytes``): larger jobs fail unparsed.
    max_data_bytes: int = 1_048_576
    #: The shortest ``repeat.every`` a repeat tick's next tick is made with (``repeat_min_interval_s``).
    min_every_ms: int = 60_000

    async def _next_tick(self, job_data: dict[str, Any], job: Job) -> None:
        """If ``job`` is a repeat tick, create its schedule's next tick as the producer's generation of
        Node BullMQ would: a repeatable job (``queue.add(..., {repeat})``, BullMQ 5, what PipesHub
        uses) as Node 5.56's worker does; a job scheduler (``upsertJobScheduler``, whose record holds
        its template options or offset) as Node 6's does, which is the port's own step.

        Created once: a tick whose next tick exists (``nrjid``) is skipped, and both scripts act only
        for the schedule's current tick, so retries, stalled recoveries and racing workers add nothing.
        Redis errors propagate (the tick stays active, is recovered as stalled, and its next pickup
        tries again); options that cannot repeat end the schedule, logged.
        """
        opts = _tick_options(job_data, job)
        if opts is None:
            return
        scheduler_id = job_data.get("rjk")
        if not scheduler_id:
            log.error("repeat.unsupported", job_id=job.id, reason="repeat tick without a repeat key (bullmq < 3)")
            return
        record_key = self.scripts.toKey(f"repeat:{scheduler_id}")
        record = await self._with_retries(lambda: self.client.hmget(record_key, "opts", "offset", "every"))
        if any(field is not None for field in record[:2]):  # a job scheduler: Node 6's iteration, the port's
            await self._clamp_scheduler(job, record_key, record[2])
            await self._with_retries(lambda: self._scheduleNextIteration(job))
            return
        every = opts["repeat"].get("every")
        if isinstance(every, int | float) and 0 < every < self.min_every_ms:
            log.warning(
                "repeat.clamped",
                job_id=job.id,
                scheduler=scheduler_id,
                every_ms=every,
                min_every_ms=self.min_every_ms,
                reason=f"repeat.every {every} ms is below repeat_min_interval_s; the next tick is "
                f"{self.min_every_ms} ms later",
            )
        try:
            now_ms = int(time.time() * 1000)
            tick = repeat.next_tick(scheduler_id, job.name, opts, now_ms, min_every_ms=self.min_every_ms)
            if tick is not None:  # packed here: options msgpack cannot pack end the schedule too
                keys, args = scripts.update_job_scheduler_5_56(
                    self.scripts,
                    job_id=job.id,
                    scheduler_id=scheduler_id,
                    next_millis=tick.next_millis,
                    data=job_data.get("data") or "{}",
                    opts=tick.opts,
                    now_ms=now_ms,
                )
        except (RepeatError, ValueError, TypeError, OverflowError) as exc:  # never the stalled loop for a tick
            log.error("repeat.ended", job_id=job.id, scheduler=scheduler_id, reason=str(exc))
            return
        if tick is None:
            log.info("repeat.ended", job_id=job.id, scheduler=scheduler_id, reason="limit or endDate reached")
            return
        created = await self._with_retries(lambda: self._update_scheduler(keys=keys, args=args))
        log.debug("repeat.next", job_id=job.id, next_job_id=created, delay_ms=tick.opts.get("delay"))

    async def _clamp_scheduler(self, job: Job, record_key: str, every: Any) -> None:
        """A job scheduler's ``every`` below ``min_every_ms`` is raised to it in its record (Node 6's script
        computes the next tick from the record), logged ``repeat.clamped``."""
        try:
            interval = float(every) if every is not None else 0.0
        except ValueError:
            return
        if 0 < interval < self.min_every_ms:
            log.warning(
                "repeat.clamped",
                job_id=job.id,
                scheduler=job.repeatJobKey,
                every_ms=interval,
                min_every_ms=self.min_every_ms,
                reason=f"job scheduler every {interval:g} ms is below repeat_min_interval_s; set to "
                f"{self.min_every_ms} ms",
            )
            await self._with_retries(lambda: self.client.hset(record_key, "every", self.min_every_ms))

    async def _with_retries(self, call: Callable[[], Awaitable[Any]]) -> Any:
        """``call()``, tried up to three times over about a second while Redis connections fail."""
        for attempt in range(3):
            try:
                return await call()
            except (RedisConnectionError, RedisTimeoutError):
                if attempt == 2:
                    raise
                await asyncio.sleep(0.2 * 2**attempt)
        return None

    #: Node BullMQ 5.56.1's updateJobScheduler script, registered on the worker's client at start-up.
    _update_scheduler: Any


def _tick_options(job_data: dict[str, Any], job: Job) -> dict[str, Any] | None:
    """The stored options (short keys, as Node's step reads them) of a repeat tick whose next tick is still to
    be made; None for every other job, decided from the options the port parsed already (no second parse),
    except for a tick failed as unreadable, whose stored options are read as they are."""
    if job_data.get("nrjid") or (job.deferredFailure is None and not isinstance(job.opts.get("repeat"), dict)):
        return None
    try:
        opts = json.loads(job_data.get("opts") or "{}")
    except (ValueError, RecursionError):
        return None
    return opts if isinstance(opts, dict) and isinstance(opts.get("repeat"), dict) else None
