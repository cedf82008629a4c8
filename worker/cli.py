"""The ``crawl-worker`` command: parse, load Settings once, configure logging, call the app.

Exit codes: 0 ok, 1 error (``check``: a check failed), 2 invalid configuration,
3 Redis unreachable at start-up, 4 stopped by force (see ``worker.app``).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from pydantic import ValidationError
from redis.exceptions import RedisError

from worker import __version__, eventloop, systemd
from worker.app import App
from worker.catalog import Catalog
from worker.connections import make_client, redact_url
from worker.connectors.registry import build_registry
from worker.demo import run_demo
from worker.errors import ConfigError, CrawlWorkerError, UnconfiguredInstance
from worker.exits import RET_CONFIG, RET_CONNECT, RET_ERROR, RET_OK, RET_PIPE
from worker.jobs_cli import add_parsers as add_job_parsers
from worker.jobs_cli import main as jobs_main
from worker.logs import configure, get_logger
from worker.models import CrawlingJobData, ScheduleType
from worker.prefixes import check_prefix
from worker.queue.producer import JobQueue, producer_job_options
from worker.settings import Settings, load, systemd_environment

log = get_logger("worker.cli")

#: The org of an enqueued job whose connectorId has no org-guarded catalog entry.
DEMO_ORG = "org-demo"


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every command."""
    parser = argparse.ArgumentParser(prog="crawl-worker", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"crawl-worker {__version__}")
    parser.add_argument("--config", type=Path, help="TOML settings file (also CRAWL_WORKER_CONFIG)")
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="consume crawl jobs until stopped")
    run.add_argument(
        "--demo", action="store_true", help="start an embedded Redis if none is reachable; enqueue a demo crawl"
    )

    sub.add_parser("check", help="validate configuration and catalog, and check Redis; exit 0 or 1")
    sub.add_parser("connectors", help="list installed connectors and their config fields")

    enqueue = sub.add_parser("enqueue", help="add a PipesHub-shaped crawl job with the producer's options")
    enqueue.add_argument("--connector", required=True)
    enqueue.add_argument("--connector-id", required=True)
    enqueue.add_argument("--org-id", help="default: the catalog entry's org_id, else org-demo")
    enqueue.add_argument("--user-id", default="user-demo")
    enqueue.add_argument("--schedule-type", default="hourly", choices=[t.value for t in ScheduleType])
    enqueue.add_argument("--job-id", help="custom jobId (one-off jobs: crawl-<connector>-<id>-<orgId>)")
    enqueue.add_argument("--delay-ms", type=int, default=0)
    enqueue.add_argument("--attempts", type=int, default=3)
    enqueue.add_argument("--priority", type=int, default=5)
    add_job_parsers(sub)  # jobs ..., schedules ..., api
    return parser


def _default_org(settings: Settings, connector_id: str) -> str:
    """The org the catalog's entry for ``connector_id`` is guarded to (its jobs from any other org are refused)."""
    try:
        entry = Catalog.load(settings.catalog_file).get(connector_id)
    except (ConfigError, UnconfiguredInstance):
        return DEMO_ORG
    return entry.org_id or DEMO_ORG


async def _enqueue(settings: Settings, args: argparse.Namespace) -> int:
    org_id = args.org_id if args.org_id is not None else _default_org(settings, args.connector_id)
    try:
        request = CrawlingJobData.for_instance(
            args.connector, args.connector_id, org_id=org_id, user_id=args.user_id, schedule_type=args.schedule_type
        )
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'job'}: {e['msg']}" for e in exc.errors())
        raise ConfigError(f"cannot enqueue: {problems}") from None
    name, data = request.to_job()
    opts = producer_job_options(attempts=args.attempts, priority=args.priority, delay_ms=args.delay_ms)
    if args.job_id:
        opts["jobId"] = args.job_id
    queue = JobQueue(settings, make_client(settings))
    try:
        if args.job_id and (state := await queue.state(args.job_id)) is not None:
            print(
                f"crawl-worker: job {args.job_id!r} already exists ({state}); BullMQ keeps the first job with an id: "
                "remove it (crawl-worker jobs remove) or choose another --job-id",
                file=sys.stderr,
            )
            return RET_ERROR
        job_id = await queue.add(name, data, opts)
    finally:
        await queue.close()
    print(json.dumps({"id": job_id, "name": name, "queue": settings.queue_name}))
    return RET_OK


async def _check(settings: Settings) -> int:
    ok = True
    registry = build_registry()
    if not settings.catalog_file.exists():
        print(f"FAIL catalog: {settings.catalog_file} does not exist (catalog_file); every job would fail unconfigured")
        return RET_ERROR
    try:
        catalog = Catalog.load(settings.catalog_file)
    except ConfigError as exc:
        print(f"FAIL catalog: {exc}")
        return RET_ERROR
    print(f"ok   settings (queue {settings.queue_name!r}, prefix {settings.prefix!r})")
    entries = [(connector_id, catalog.get(connector_id)) for connector_id in catalog.ids()]
    entries += [(f"connector_types.{rule!r}", entry) for rule, entry in sorted(catalog.rules().items())]
    for where, entry in entries:
        try:
            cls = registry.get(entry.connector)
            cls.config_model.model_validate(entry.config)
            print(f"ok   catalog {where}: {entry.connector_key}")
        except (CrawlWorkerError, ValueError) as exc:
            ok = False
            print(f"FAIL catalog {where}: {exc}")
    client = make_client(settings)
    try:
        await asyncio.wait_for(client.ping(), timeout=settings.redis_connect_timeout_s)
        print(f"ok   redis {redact_url(settings.redis_url)}")
        found = await check_prefix(client, settings.prefix, settings.queue_name, scan=not settings.redis_cluster)
        if found.mismatch:
            ok = False
            print(f"FAIL prefix: {found.message()}")
        else:
            print(f"ok   prefix {settings.prefix!r}" + ("" if found.found_here else " (the queue has no keys yet)"))
    except Exception as exc:
        ok = False
        print(f"FAIL redis {redact_url(settings.redis_url)}: {type(exc).__name__}: {exc}")
    finally:
        await client.aclose()
    return RET_OK if ok else RET_ERROR


def _connectors() -> int:
    for name, cls in build_registry().items():
        model_fields = cls.config_model.model_fields.items()
        fields = ", ".join(
            f"{key}{'' if f.is_required() else '=' + repr(f.get_default(call_default_factory=True))}"
            for key, f in model_fields
        )
        print(f"{name:12} {cls.__module__}.{cls.__name__}\n{'':12} config: {fields}")
    return RET_OK


async def _run(settings: Settings, demo: bool) -> int:
    if demo:
        return await run_demo(settings)
    app = App(settings)
    systemd.attach(app, systemd.Notifier.from_environment(systemd_environment()))
    app.on_started.append(freeze_start_up)
    return await app.run()


async def freeze_start_up(_: App) -> None:
    """What start-up built (modules, models, clients) lives as long as the process: ``gc.freeze`` keeps it out
    of every full collection, which otherwise rescans it a few times per large crawl (~40 ms each)."""
    gc.freeze()


def main(argv: Sequence[str] | None = None) -> int:  # noqa: PLR0911 - one return per command
    """Entry point of the ``crawl-worker`` console script."""
    args = build_parser().parse_args(argv)
    try:
        settings = load(args.config)
    except ConfigError as exc:
        print(f"crawl-worker: {exc}", file=sys.stderr)
        return RET_CONFIG
    configure(settings.log_level, settings.log_format)
    try:
        if args.command == "run":
            return eventloop.run(_run(settings, args.demo), settings.event_loop)
        if args.command == "check":
            return asyncio.run(_check(settings))
        if args.command == "connectors":
            return _connectors()
        if args.command == "enqueue":
            return asyncio.run(_enqueue(settings, args))
        if args.command in ("jobs", "schedules", "api"):
            return jobs_main(settings, args)
    except ConfigError as exc:
        print(f"crawl-worker: {exc}", file=sys.stderr)
        return RET_CONFIG
    except KeyboardInterrupt:
        return RET_ERROR
    except BrokenPipeError:  # the reader went away (`jobs list | head -1`): stop quietly, as Unix tools do
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # the interpreter's last flush goes nowhere
        return RET_PIPE
    except (RedisError, ConnectionError) as exc:  # redis-py's ConnectionError, or a refused socket
        print(f"crawl-worker: Redis unreachable at {redact_url(settings.redis_url)}: {exc}", file=sys.stderr)
        return RET_CONNECT
    except OSError as exc:  # a file, a port, a permission: say which, not "Redis"
        where = f" ({exc.filename})" if exc.filename else ""
        print(f"crawl-worker: {exc.strerror or exc}{where}", file=sys.stderr)
        return RET_ERROR
    return RET_ERROR
