"""``crawl-worker jobs ...``, ``crawl-worker schedules ...`` and ``crawl-worker api`` (delegated from cli.py)."""

from __future__ import annotations

import argparse
import asyncio
import getpass
import json
import socket
import sys
from collections.abc import Callable
from datetime import datetime
from typing import Any, TextIO

from pydantic import ValidationError

from worker import tables
from worker.connections import make_client
from worker.errors import ConfigError, InvalidJobData, JobNotFound, WrongState
from worker.exits import RET_ERROR, RET_NOT_FOUND, RET_OK
from worker.jobs import JobFilter
from worker.models import ScheduleConfig, State
from worker.operations import CLEAN_STATES, Operations
from worker.schedules import ScheduleRequest
from worker.settings import Settings
from worker.stats import Period


def _filters(p: argparse.ArgumentParser, *, state: bool = True) -> None:
    if state:
        p.add_argument("--state", choices=[s.value for s in State])
    p.add_argument("--connector")
    p.add_argument("--connector-id")
    p.add_argument("--org-id")
    p.add_argument("--created-after", type=datetime.fromisoformat, help="ISO 8601 time")
    p.add_argument("--created-before", type=datetime.fromisoformat, help="ISO 8601 time")


def _output(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--output", choices=["table", "json"], help="default: a table on a terminal, JSON when piped or redirected"
    )


def add_parsers(sub: Any) -> None:
    """Add the ``jobs``, ``schedules`` and ``api`` commands to the CLI's sub-parsers."""
    jobs = sub.add_parser("jobs", help="inspect and operate on jobs").add_subparsers(dest="action", required=True)
    jobs.add_parser("get", help="one job's JobStatus and log lines").add_argument("id")
    listing = jobs.add_parser("list", help="jobs matching filters, paginated")
    _filters(listing)
    listing.add_argument("--limit", type=int, default=50)
    listing.add_argument("--offset", type=int, default=0)
    _output(listing)
    jobs.add_parser("retry", help="retry a failed job").add_argument("id")
    _filters(jobs.add_parser("retry-failed", help="retry every failed job matching filters"), state=False)
    cancel = jobs.add_parser("cancel", help="cancel a waiting, delayed or running job (fails it, no retries)")
    cancel.add_argument("id")
    cancel.add_argument("--discard-checkpoint", action="store_true", help="the next run starts fresh")
    matching = jobs.add_parser("cancel-matching", help="cancel every unfinished job matching filters")
    _filters(matching)
    matching.add_argument("--discard-checkpoint", action="store_true", help="the next runs start fresh")
    jobs.add_parser("promote", help="run a delayed job now").add_argument("id")
    jobs.add_parser("remove", help="remove a job").add_argument("id")
    jobs.add_parser("pause", help="pause the queue")
    jobs.add_parser("resume", help="resume the queue")
    clean = jobs.add_parser("clean", help="delete jobs in a state older than a grace period")
    clean.add_argument("--state", required=True, choices=CLEAN_STATES, help="waiting: wait + prioritized")
    clean.add_argument("--older-than-ms", type=int, default=0)
    clean.add_argument("--limit", type=int, default=1000)
    exp = jobs.add_parser("export", help="stream matching jobs as CSV or JSON to stdout")
    _filters(exp)
    exp.add_argument("--format", choices=["csv", "json"], default="json")
    jobs.add_parser("stats", help="job statistics for a period").add_argument(
        "--period", choices=[p.value for p in Period], default="24h"
    )
    sched = sub.add_parser("schedules", help="connector instance schedules (BullMQ job schedulers)")
    actions = sched.add_subparsers(dest="action", required=True)
    _output(actions.add_parser("list", help="every schedule"))
    put = actions.add_parser("set", help="create or update from a PipesHub scheduleConfig (JSON)")
    put.add_argument("--connector", required=True)
    put.add_argument("--connector-id", required=True)
    put.add_argument("--org-id", required=True)
    put.add_argument("--user-id", required=True)
    put.add_argument("--schedule-config", required=True, help='e.g. \'{"scheduleType":"daily","hour":2}\'')
    rm = actions.add_parser("remove", help="remove an instance's schedule")
    rm.add_argument("--connector", required=True)
    rm.add_argument("--connector-id", required=True)
    api = sub.add_parser("api", help="serve the job API over HTTP (needs api_read_token / api_admin_token)")
    api.add_argument("--host")
    api.add_argument("--port", type=int)


def operator() -> str:
    """Who cancels from this command line, for the failedReason: ``cli:<user>@<host>``."""
    try:
        user = getpass.getuser()
    except (OSError, KeyError):  # no user name in a bare container
        user = "unknown"
    return f"cli:{user}@{socket.gethostname()}"


def _print(value: Any, out: TextIO) -> None:
    out.write(json.dumps(value, indent=2, default=str) + "\n")


def _as_table(args: argparse.Namespace, out: TextIO) -> bool:
    """Print a table (``--output table``, or a terminal without ``--output``) rather than JSON?"""
    if args.output is not None:
        return bool(args.output == "table")
    isatty = getattr(out, "isatty", None)
    return bool(isatty and isatty())


def _show(args: argparse.Namespace, out: TextIO, value: Any, table: Callable[[], str]) -> None:
    """``table()`` for a person, ``value`` as JSON for a program."""
    if _as_table(args, out):
        out.write(table())
    else:
        _print(value, out)


SCHEDULE_CONFIG_SHAPE = (
    '{"scheduleType": "daily", "hour": 2, "minute": 30, "timezone": "Europe/Berlin"} (scheduleType: hourly, '
    'daily, weekly with "daysOfWeek": [1], monthly with "dayOfMonth", custom with "cronExpression", interval '
    'with "intervalMinutes", once with "scheduledTime")'
)


def _schedule_config(text: str) -> ScheduleConfig:
    """``--schedule-config``: a PipesHub scheduleConfig as JSON; ValueError names the expected shape."""
    try:
        value = json.loads(text)
    except ValueError:
        raise ValueError(
            f"--schedule-config {text[:60]!r} is not JSON; expected e.g. {SCHEDULE_CONFIG_SHAPE}"
        ) from None
    if not isinstance(value, dict):
        raise ValueError(f"--schedule-config must be a JSON object, e.g. {SCHEDULE_CONFIG_SHAPE}")
    try:
        return ScheduleConfig.model_validate(value)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc']) or 'value'}: {e['msg']}" for e in exc.errors()[:5])
        raise ValueError(f"--schedule-config: {problems}; expected e.g. {SCHEDULE_CONFIG_SHAPE}") from None


def _job_filter(args: argparse.Namespace) -> JobFilter:
    return JobFilter(
        state=getattr(args, "state", None),
        connector=args.connector,
        connector_id=args.connector_id,
        org_id=args.org_id,
        created_after=args.created_after,
        created_before=args.created_before,
    )


async def _jobs(ops: Operations, args: argparse.Namespace, out: TextIO) -> None:
    a = args.action
    if a == "get":
        status, logs = await ops.get(args.id)
        _print({"job": status.model_dump(mode="json", by_alias=True), "logs": logs}, out)
    elif a == "list":
        page = await ops.page(_job_filter(args), limit=args.limit, offset=args.offset)
        _show(args, out, page.model_dump(mode="json", by_alias=True), lambda: tables.jobs(page))
    elif a == "retry":
        _print((await ops.retry(args.id)).model_dump(mode="json", by_alias=True), out)
    elif a == "retry-failed":
        ids = await ops.retry_failed(_job_filter(args))
        _print({"count": len(ids), "ids": ids}, out)
    elif a == "promote":
        _print((await ops.promote(args.id)).model_dump(mode="json", by_alias=True), out)
    elif a == "remove":
        await ops.remove(args.id)
        _print({"id": args.id, "removed": True}, out)
    elif a in ("pause", "resume"):
        _print(await (ops.pause() if a == "pause" else ops.resume()), out)
    elif a == "clean":
        ids = await ops.clean(args.state, args.older_than_ms, args.limit)
        _print({"count": len(ids), "ids": ids}, out)
    elif a == "export":
        async for piece in ops.export(_job_filter(args), args.format):
            out.write(piece)
    elif a == "stats":
        _print((await ops.stats(Period(args.period))).model_dump(mode="json"), out)


async def _cancel(ops: Operations, args: argparse.Namespace, out: TextIO) -> None:
    if args.action == "cancel":
        result = await ops.cancel(args.id, by=operator(), discard_checkpoint=args.discard_checkpoint)
        _print({"id": result.id, "state": result.state, "action": result.done}, out)
    else:
        done = await ops.cancel_matching(_job_filter(args), by=operator(), discard_checkpoint=args.discard_checkpoint)
        _print({"count": len(done), "ids": [result.id for result in done]}, out)


async def _schedules(ops: Operations, args: argparse.Namespace, out: TextIO) -> None:
    if args.action == "list":
        found = await ops.schedules()
        _show(args, out, found, lambda: tables.schedules(found))
    elif args.action == "set":
        cfg = _schedule_config(args.schedule_config)
        req = ScheduleRequest(
            connector=args.connector,
            connector_id=args.connector_id,
            org_id=args.org_id,
            user_id=args.user_id,
            schedule_config=cfg,
        )
        _print(await ops.upsert_schedule(req), out)
    else:
        _print({"removed": await ops.remove_schedule(args.connector, args.connector_id)}, out)


async def run_command(settings: Settings, args: argparse.Namespace, out: TextIO = sys.stdout) -> int:
    """Run a ``jobs`` or ``schedules`` action; errors print a message and return a non-zero code."""
    client = make_client(settings)
    ops = Operations(settings, client)
    try:
        if args.command == "jobs" and args.action in ("cancel", "cancel-matching"):
            await _cancel(ops, args, out)
        elif args.command == "jobs":
            await _jobs(ops, args, out)
        else:
            await _schedules(ops, args, out)
    except JobNotFound as exc:
        print(f"crawl-worker: {exc}", file=sys.stderr)
        return RET_NOT_FOUND
    except (WrongState, InvalidJobData, ValueError) as exc:
        print(f"crawl-worker: {exc}", file=sys.stderr)
        return RET_ERROR
    finally:
        await ops.close()
        await client.aclose()
    return RET_OK


def serve(settings: Settings, args: argparse.Namespace) -> int:
    """Run the HTTP API with uvicorn until interrupted (ConfigError when no token is configured)."""
    import uvicorn  # noqa: PLC0415 - only this command needs the server

    from worker.api import create_app  # noqa: PLC0415
    from worker.serving import bind  # noqa: PLC0415

    app = create_app(settings)
    port = settings.api_port if args.port is None else args.port
    host = args.host or settings.api_host
    try:
        sock = bind(host, port)
    except OSError as exc:  # before the banner: a taken port is a configuration problem, said plainly (exit 2)
        raise ConfigError(
            f"cannot serve the API on {host}:{port}: {exc.strerror or exc} "
            "(port in use? set CRAWL_WORKER_API_PORT or --port)"
        ) from None
    print(f"crawl-worker api: http://{host}:{port}/v1/ (JSON), dashboard http://{host}:{port}/ui/", file=sys.stderr)
    # open dashboard event streams get 2 s to end on Ctrl-C / SIGTERM
    config = uvicorn.Config(app, log_level="warning", timeout_graceful_shutdown=2)
    with sock:
        uvicorn.Server(config).run(sockets=[sock])
    return RET_OK


def main(settings: Settings, args: argparse.Namespace) -> int:
    """Entry from cli.py for the jobs / schedules / api commands."""
    if args.command == "api":
        return serve(settings, args)
    if args.command not in ("jobs", "schedules"):
        raise ConfigError(f"unknown command {args.command!r}")
    return asyncio.run(run_command(settings, args))
