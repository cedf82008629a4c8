"""Connector instances: every connectorId in the catalog or seen in jobs, run records and schedules.

For each instance: its connector and org, the newest runs (jobs) and their outcome, documents of
its last run, whether an interrupted crawl will resume and from which checkpoint, its schedule
and next run, and its last error. Jobs are read from the newest :data:`RECENT` of each state (the
pages the job listing serves), run records by one SCAN over ``<prefix>:<queue>:cw:run:*``.

Run records are read as the JSON ``worker/runs.py`` stores (:class:`RunView` takes the fields the page
shows, tolerating any others), so the API process never loads the job stack.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from worker import skips
from worker.catalog import Catalog
from worker.connections import RedisClient
from worker.connectors.registry import build_registry
from worker.jobs import JobFilter, list_jobs
from worker.models import CrawlingJobData, JobStatus, State
from worker.status import Keys

RECENT = 500
RUNS_SHOWN = 3
_STATES = (State.ACTIVE, State.STUCK, State.WAITING, State.PAUSED, State.DELAYED, State.COMPLETED, State.FAILED)


@dataclass(frozen=True)
class Counts:
    """A run's document counters."""

    documents: int = 0
    deleted: int = 0
    failures: int = 0


@dataclass(frozen=True)
class RunView:
    """What the page shows of a run record (``worker.runs.RunRecord`` as stored)."""

    run_id: str
    status: str
    checkpoint: dict[str, Any] | None
    counters: Counts
    percentage: float
    commits: int
    updated_at: float
    last_completed_at: float | None
    #: Items not fetched by reason (``worker.skips``), and whether that cut the run short.
    skipped: dict[str, int] = field(default_factory=dict)

    @property
    def truncated(self) -> bool:
        """A budget, limit or trap guard cut the run short."""
        return skips.truncates(self.skipped)

    @classmethod
    def parse(cls, raw: str) -> RunView | None:
        """The view of a stored record, or None when it is not one."""
        try:
            rec = json.loads(raw)
            counters = rec.get("counters") or {}
            checkpoint = rec.get("checkpoint")
            return cls(
                run_id=str(rec.get("run_id", "")),
                status=str(rec.get("status", "")),
                checkpoint=checkpoint if isinstance(checkpoint, dict) else None,
                counters=Counts(*(int(counters.get(k) or 0) for k in ("documents", "deleted", "failures"))),
                percentage=float(rec.get("percentage") or 0),
                commits=int(rec.get("commits") or 0),
                updated_at=float(rec.get("updated_at") or 0),
                last_completed_at=float(rec["last_completed_at"]) if rec.get("last_completed_at") else None,
                skipped={str(k): int(v) for k, v in (counters.get("skipped") or {}).items()},
            )
        except (ValueError, TypeError, AttributeError):
            return None


@dataclass
class Instance:
    """One connector instance as an operator sees it."""

    connector_id: str
    connector: str = ""
    org_id: str = ""
    in_catalog: bool = False
    #: the [connector_types] rule that serves it when it has no entry ("*" or a connector type), else None
    rule: str | None = None
    jobs: list[JobStatus] = field(default_factory=list)
    record: RunView | None = None
    schedule: dict[str, Any] | None = None

    @property
    def runs(self) -> list[JobStatus]:
        """The newest jobs of this instance, newest first."""
        return sorted(self.jobs, key=_when, reverse=True)[:RUNS_SHOWN]

    @property
    def active(self) -> JobStatus | None:
        """The job crawling it now, if any."""
        return next((j for j in self.jobs if j.state in (State.ACTIVE, State.STUCK)), None)

    @property
    def last_error(self) -> JobStatus | None:
        """Its newest failed job."""
        failed = [j for j in self.jobs if j.state == State.FAILED]
        return max(failed, key=_when) if failed else None

    @property
    def last_activity_ms(self) -> int:
        """When anything last happened to it (ms), for ordering."""
        times = [_when(j) for j in self.jobs]
        if self.record is not None:
            times.append(int(self.record.updated_at * 1000))
        return max(times, default=0)

    @property
    def resumable(self) -> bool:
        """Will its next job resume an interrupted crawl from a checkpoint?"""
        rec = self.record
        return rec is not None and rec.status in ("running", "interrupted") and rec.checkpoint is not None


def _when(job: JobStatus) -> int:
    return job.finished_on or job.processed_on or job.timestamp


def checkpoint_summary(checkpoint: dict[str, Any] | None, limit: int = 4) -> str:
    """A checkpoint's scalar fields as ``key=value`` text (long values shortened)."""
    if not checkpoint:
        return ""
    parts = []
    for key, value in checkpoint.items():
        if isinstance(value, str | int | float | bool) and key != "has_more":
            text = str(value)
            parts.append(f"{key}={text if len(text) <= 60 else text[:57] + '...'}")
        if len(parts) >= limit:
            break
    return ", ".join(parts)


def _instance_of(out: dict[str, Instance], connector_id: str) -> Instance:
    if connector_id not in out:
        out[connector_id] = Instance(connector_id)
    return out[connector_id]


def _add_jobs(out: dict[str, Instance], jobs: Iterable[JobStatus]) -> None:
    for job in jobs:
        data = job.data
        if isinstance(data, CrawlingJobData):
            inst = _instance_of(out, data.connector_id)
            inst.connector = inst.connector or data.connector_key
            inst.org_id = inst.org_id or data.org_id
            inst.jobs.append(job)


async def _records(client: RedisClient, keys: Keys) -> list[tuple[str, str, str, RunView]]:
    base = keys.key("cw:run:")
    names = [str(k) async for k in client.scan_iter(match=f"{base}*", count=1000)]
    if not names:
        return []
    pipe = client.pipeline(transaction=False)
    for name in names:
        pipe.hget(name, "record")
    out = []
    for name, raw in zip(names, await pipe.execute(), strict=True):
        org, _, rest = name[len(base) :].partition(":")
        connector, _, connector_id = rest.partition(":")
        view = RunView.parse(raw) if raw and connector_id else None
        if view is not None:
            out.append((org, connector, connector_id, view))
    return out


async def read_instances(
    client: RedisClient, keys: Keys, catalog: Catalog | None, schedules: list[dict[str, Any]]
) -> list[Instance]:
    """Every instance, the one crawling now first, then by last activity."""
    out: dict[str, Instance] = {}
    for connector_id, entry in catalog.entries() if catalog is not None else []:
        inst = _instance_of(out, connector_id)
        inst.in_catalog = True
        inst.connector = entry.connector_key
    for state in _STATES:
        page = await list_jobs(client, keys, JobFilter(state=state), limit=RECENT, offset=0)
        _add_jobs(out, page.jobs)
    for org, connector, connector_id, record in await _records(client, keys):
        inst = _instance_of(out, connector_id)
        if inst.record is None or inst.record.updated_at < record.updated_at:
            inst.record = record
            inst.org_id = inst.org_id or org
            inst.connector = inst.connector or connector
    for schedule in schedules:
        scheduled = schedule.get("connectorId")
        if isinstance(scheduled, str) and scheduled:
            inst = _instance_of(out, scheduled)
            inst.schedule = schedule
            inst.connector = inst.connector or str(schedule.get("connector") or "")
    if catalog is not None:
        local = build_registry().names()
        for inst in out.values():
            if not inst.in_catalog and inst.connector:
                inst.rule = catalog.rule_for(inst.connector, local)
    return sorted(out.values(), key=lambda i: (i.active is None, -i.last_activity_ms, i.connector_id))
