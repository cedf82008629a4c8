"""The producer's shapes (PipesHub crawling-scheduler) and the JobStatus seed, as typed models.

Python attributes are snake_case; JSON (job data, HTTP API) is camelCase through aliases.
"""

from __future__ import annotations

import functools
import math
import re
import time
import unicodedata
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic.alias_generators import to_camel

_CONNECTOR_KEY = re.compile(r"\s+")


@functools.lru_cache(maxsize=4096)
def normalize_connector(name: str) -> str:
    """Normalise a connector name as the producer does: lower case, whitespace runs to ``-``."""
    return _CONNECTOR_KEY.sub("-", name.strip().lower())


def job_name(connector: str, connector_id: str) -> str:
    """The producer's job name: ``crawl-<connector>-<connectorId>``."""
    return f"crawl-{normalize_connector(connector)}-{connector_id}"


class CamelModel(BaseModel):
    """Base for wire models: camelCase aliases, populate by either name."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True)


class ScheduleType(StrEnum):
    """How often PipesHub schedules a connector instance."""

    HOURLY = "hourly"
    DAILY = "daily"
    WEEKLY = "weekly"
    MONTHLY = "monthly"
    CUSTOM = "custom"
    ONCE = "once"
    INTERVAL = "interval"


#: Fields that PipesHub nests in an inner ``scheduleConfig`` object (``interval``, ``once``, and the
#: typed schemas of every type) and its validator sends flat; both forms are read.
_NESTED_FIELDS = {
    "intervalMinutes",
    "scheduledTime",
    "timezone",
    "hour",
    "minute",
    "daysOfWeek",
    "dayOfMonth",
    "cronExpression",
    "interval",
}


class ScheduleConfig(CamelModel):
    """PipesHub's ``scheduleConfig``. Unknown extra keys are kept, not rejected.

    PipesHub's typed schedules nest their fields one level down (``{scheduleType: "interval",
    scheduleConfig: {intervalMinutes, timezone}}``); its API validator sends them flat. A field
    given at the top level wins; a nested one fills in what the top level lacks.
    """

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="allow")

    schedule_type: ScheduleType
    is_enabled: bool = True
    timezone: str = "UTC"
    hour: int | None = Field(None, ge=0, le=23)
    minute: int | None = Field(None, ge=0, le=59)
    days_of_week: list[int] | None = None
    day_of_month: int | None = Field(None, ge=1, le=31)
    cron_expression: str | None = None
    interval: int | None = Field(None, ge=1, le=24)  # every N hours (PipesHub: 1-24)
    interval_minutes: int | None = Field(None, ge=1, le=60 * 24 * 365)
    scheduled_time: datetime | None = None

    @model_validator(mode="before")
    @classmethod
    def _lift_nested(cls, value: Any) -> Any:
        if isinstance(value, dict) and isinstance(inner := value.get("scheduleConfig"), dict):
            lifted = {k: v for k, v in inner.items() if k in _NESTED_FIELDS and k not in value}
            if lifted:
                return {**value, **lifted}
        return value

    @field_validator("days_of_week")
    @classmethod
    def _check_days(cls, value: list[int] | None) -> list[int] | None:
        if value is not None and not value:
            raise ValueError("needs at least one day, 0 (Sunday) to 6 (Saturday)")
        if value is not None and any(not 0 <= day <= 6 for day in value):
            raise ValueError("days must be 0 (Sunday) to 6 (Saturday)")
        return value


def epoch_ms(value: Any) -> int | None:
    """Epoch milliseconds as JS ``new Date(value).getTime()`` reads what producers send: a number,
    digits, or an ISO 8601 string (a JS ``Date`` in JSON; no zone means UTC). None for anything else."""
    if isinstance(value, str):
        text = value.strip()
        if text.lstrip("-").isdigit():
            return int(text)
        try:
            parsed = datetime.fromisoformat(text.replace("Z", "+00:00") if text.endswith("Z") else text)
        except ValueError:
            return None
        return int((parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)).timestamp() * 1000)
    if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
        return int(value)
    return None


#: Unicode categories that print nothing or break a line: control, format (zero-width), line/paragraph separators.
_HIDDEN = frozenset({"Cc", "Cf", "Zl", "Zp"})


def _identifier(value: Any) -> Any:
    """Numbers are accepted where ids are strings (a producer's ``connectorId: 42``)."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return str(int(value)) if float(value).is_integer() else str(value)
    return value


class CrawlingJobData(CamelModel):
    """The data of one crawl job, as PipesHub's producer sends it (unknown extra keys are kept).

    Only what the worker uses is required: ``connector``, ``connectorId`` and ``orgId``. Everything
    else is read leniently and never fails a job: ``timestamp`` is a JS ``Date`` (an ISO 8601 string)
    or epoch milliseconds, and ``None`` when it is neither; ``scheduleConfig`` is kept as sent
    (:attr:`schedule` parses it when it can).
    """

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="allow")

    connector: str = Field(min_length=1, max_length=200)
    connector_id: str = Field(min_length=1, max_length=200)
    org_id: str = Field(min_length=1, max_length=200)
    user_id: str | None = None
    schedule_config: dict[str, Any] | None = None
    timestamp: int | None = None
    metadata: dict[str, Any] | None = None

    @field_validator("connector", "connector_id", "org_id", mode="before")
    @classmethod
    def _ids(cls, value: Any) -> Any:
        return _identifier(value)

    @field_validator("connector")
    @classmethod
    def _connector_name(cls, value: str) -> str:
        """A connector name becomes an event name (``<connector>.resync``), a label and a registry key: it
        must show something and hide nothing (no control, zero-width or line-separator characters)."""
        if not value.strip():
            raise ValueError("connector name is blank")
        if hidden := sorted({f"U+{ord(ch):04X}" for ch in value if unicodedata.category(ch) in _HIDDEN}):
            raise ValueError(f"connector name has invisible or control characters ({', '.join(hidden[:5])})")
        return value

    @field_validator("user_id", mode="before")
    @classmethod
    def _user(cls, value: Any) -> str | None:
        value = _identifier(value)
        return value if isinstance(value, str) else None

    @field_validator("timestamp", mode="before")
    @classmethod
    def _timestamp(cls, value: Any) -> int | None:
        return epoch_ms(value)

    @field_validator("schedule_config", "metadata", mode="before")
    @classmethod
    def _object_or_none(cls, value: Any) -> dict[str, Any] | None:
        return value if isinstance(value, dict) else None

    @property
    def schedule(self) -> ScheduleConfig | None:
        """The parsed ``scheduleConfig``, or None when it is missing or not one we understand."""
        if self.schedule_config is None:
            return None
        try:
            return ScheduleConfig.model_validate(self.schedule_config)
        except ValidationError:
            return None

    @property
    def connector_key(self) -> str:
        """The registry key of the connector (normalised)."""
        return normalize_connector(self.connector)

    @classmethod
    def for_instance(
        cls, connector: str, connector_id: str, *, org_id: str, user_id: str, schedule_type: str = "hourly"
    ) -> CrawlingJobData:
        """Job data exactly as PipesHub's producer builds it for one schedule tick."""
        schedule = ScheduleConfig(schedule_type=ScheduleType(schedule_type), is_enabled=True)
        return cls(
            connector=connector,
            connector_id=connector_id,
            schedule_config=schedule.model_dump(mode="json", by_alias=True, exclude_none=True),
            org_id=org_id,
            user_id=user_id,
            timestamp=int(time.time() * 1000),
        )

    def to_job(self) -> tuple[str, dict[str, Any]]:
        """The (name, data) pair a producer adds: ``crawl-<connector>-<connectorId>`` and camelCase JSON."""
        data = self.model_dump(mode="json", by_alias=True, exclude_none=True)
        return job_name(self.connector, self.connector_id), data


class ProgressObject(BaseModel):
    """Object progress, as reported through ``job.updateProgress``."""

    model_config = ConfigDict(extra="allow")

    percentage: float = Field(ge=0, le=100)
    current: int = Field(ge=0)
    total: int | None = Field(None, ge=0)


ProgressUnion = float | ProgressObject


class State(StrEnum):
    """A job's state as reported by the status API."""

    WAITING = "waiting"
    ACTIVE = "active"
    COMPLETED = "completed"
    FAILED = "failed"
    DELAYED = "delayed"
    PAUSED = "paused"
    STUCK = "stuck"


class JobStatus(CamelModel):
    """Complete status information for a crawling job (the ``JobStatus`` seed)."""

    id: str | None = None
    name: str
    data: CrawlingJobData | dict[str, Any]
    progress: ProgressUnion | dict[str, Any] | None = None
    delay: int | None = None
    timestamp: int
    attempts_made: int
    finished_on: int | None = None
    processed_on: int | None = None
    failed_reason: str | None = None
    state: State


class JobOutcome(BaseModel):
    """The JSON summary a crawl job returns (its BullMQ return value)."""

    status: Literal["completed", "skipped"] = "completed"
    connector: str
    connector_id: str
    run_id: str
    resumed: bool = False
    documents: int = 0
    deleted: int = 0
    bytes: int = 0
    failures: int = 0
    steps: int = 0
    duration_ms: int = 0
    #: Items (URLs, files) not fetched, by reason (``worker.skips``).
    skipped: dict[str, int] = Field(default_factory=dict)
    #: A budget, limit or trap guard cut the crawl short (``worker.skips.TRUNCATING``).
    truncated: bool = False
    reason: str | None = None
    #: What the connector did besides documents (a delegated sync: the event it published).
    details: dict[str, Any] | None = None
