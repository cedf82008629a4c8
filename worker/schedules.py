"""A connector instance's schedule from PipesHub's ``scheduleConfig``, as a BullMQ job scheduler.

One scheduler per connector instance, id ``crawl-<connector>-<connectorId>`` (the job name), so
create and update are the same upsert. Every job it produces is PipesHub-shaped: that name, data from
:meth:`CrawlingJobData.for_instance` with the instance's scheduleConfig, and the producer's options.
"""

from __future__ import annotations

from typing import Any

from pydantic import Field, ValidationError

from worker.errors import InvalidJobData
from worker.models import CamelModel, CrawlingJobData, ScheduleConfig, ScheduleType, job_name
from worker.queue.producer import QueueAdmin, producer_job_options

#: The job-template fields that say which instance a schedule crawls.
INSTANCE_FIELDS = ("connector", "connectorId", "orgId", "userId", "scheduleConfig")
#: Identifiers: printable, no control characters (a newline in an id would forge log lines and keys).
_PRINTABLE = r"^[^\x00-\x1f\x7f]+$"


class ScheduleRequest(CamelModel):
    """What the API and CLI take to schedule one connector instance (camelCase on the wire)."""

    connector: str = Field(min_length=1, max_length=200, pattern=_PRINTABLE)
    connector_id: str = Field(min_length=1, max_length=200, pattern=_PRINTABLE)
    org_id: str = Field(min_length=1, max_length=200, pattern=_PRINTABLE)
    user_id: str = Field(min_length=1, max_length=200, pattern=_PRINTABLE)
    schedule_config: ScheduleConfig


def repeat_of(cfg: ScheduleConfig) -> dict[str, Any]:
    """BullMQ repeat options of a scheduleConfig, as PipesHub's producer builds them: ``{every}`` for
    ``interval`` (``intervalMinutes`` x 60,000 ms), else ``{pattern}``; ``tz`` from ``timezone``."""
    if cfg.schedule_type == ScheduleType.INTERVAL:
        if cfg.interval_minutes is None:
            raise InvalidJobData("scheduleType 'interval' needs scheduleConfig.intervalMinutes (a whole number >= 1)")
        return {"every": cfg.interval_minutes * 60_000, "tz": cfg.timezone or "UTC"}
    return {"pattern": cron_of(cfg), "tz": cfg.timezone or "UTC"}


def cron_of(cfg: ScheduleConfig) -> str:
    """The cron pattern of a scheduleConfig (InvalidJobData when it cannot be scheduled)."""
    minute = cfg.minute or 0
    hour = cfg.hour or 0
    kind = cfg.schedule_type
    if kind == ScheduleType.HOURLY:
        every = cfg.interval or 1
        return f"{minute} * * * *" if every == 1 else f"{minute} */{every} * * *"
    if kind == ScheduleType.DAILY:
        return f"{minute} {hour} * * *"
    if kind == ScheduleType.WEEKLY:
        if not cfg.days_of_week:
            raise InvalidJobData("scheduleType 'weekly' needs daysOfWeek (0 = Sunday to 6 = Saturday)")
        days = ",".join(str(d) for d in sorted(set(cfg.days_of_week)))
        return f"{minute} {hour} * * {days}"
    if kind == ScheduleType.MONTHLY:
        return f"{minute} {hour} {cfg.day_of_month or 1} * *"
    if kind == ScheduleType.CUSTOM:
        if not cfg.cron_expression or not cfg.cron_expression.strip():
            raise InvalidJobData("scheduleType 'custom' needs a cronExpression")
        return cfg.cron_expression.strip()
    raise InvalidJobData(f"scheduleType {kind.value!r} is not recurring; enqueue a (delayed) job instead")


def _check_cron(pattern: str, tz: str) -> None:
    from datetime import datetime  # noqa: PLC0415 - only needed to validate
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError  # noqa: PLC0415

    from croniter import CroniterBadDateError, croniter  # noqa: PLC0415 - bullmq uses croniter

    try:
        zone = ZoneInfo(tz)
    except (ZoneInfoNotFoundError, ValueError):
        raise InvalidJobData(f"unknown timezone {tz!r}") from None
    if len(pattern.split()) != 5 or not croniter.is_valid(pattern):
        raise InvalidJobData(f"invalid cron expression {pattern!r} (five fields: minute hour day month weekday)")
    try:
        croniter(pattern, datetime.now(zone)).get_next(datetime)
    except (CroniterBadDateError, ValueError):
        raise InvalidJobData(f"cron expression {pattern!r} never fires") from None


async def upsert(admin: QueueAdmin, req: ScheduleRequest) -> dict[str, Any]:
    """Create or update the instance's scheduler; a disabled config removes it. Returns the summary."""
    name = job_name(req.connector, req.connector_id)
    if not req.schedule_config.is_enabled:
        await admin.remove_scheduler(name)
        return {"id": name, "enabled": False}
    repeat = repeat_of(req.schedule_config)
    if "pattern" in repeat:
        _check_cron(repeat["pattern"], repeat["tz"])
    try:
        data = CrawlingJobData.for_instance(
            req.connector, req.connector_id, org_id=req.org_id, user_id=req.user_id
        ).model_copy(
            update={"schedule_config": req.schedule_config.model_dump(mode="json", by_alias=True, exclude_none=True)}
        )
    except ValidationError as exc:  # whatever the job model refuses, the caller hears as 422
        raise InvalidJobData(f"cannot build the crawl job: {exc.errors()[0]['msg']}") from exc
    _, payload = data.to_job()
    opts = producer_job_options()
    await admin.upsert_scheduler(name, repeat=repeat, name=name, data=payload, opts=opts)
    return {"id": name, "enabled": True, **repeat}


async def list_schedules(admin: QueueAdmin) -> list[dict[str, Any]]:
    """Every scheduler on the queue: id, name, pattern, tz, next run (ms), and the instance it crawls
    (connector, connectorId, orgId, userId, scheduleConfig from its job template, when it has them)."""
    out = []
    for rec in await admin.schedulers():
        template = rec.get("template")
        data = template.get("data") if isinstance(template, dict) else None
        data = data if isinstance(data, dict) else {}
        out.append(
            {
                "id": rec.get("key"),
                "name": rec.get("name"),
                "pattern": rec.get("pattern"),
                "every": rec.get("every"),
                "tz": rec.get("tz"),
                "next": rec.get("next"),
                **{key: data[key] for key in INSTANCE_FIELDS if key in data},
            }
        )
    return out


async def remove(admin: QueueAdmin, connector: str, connector_id: str) -> bool:
    """Remove the instance's scheduler; True if it existed."""
    return await admin.remove_scheduler(job_name(connector, connector_id))
