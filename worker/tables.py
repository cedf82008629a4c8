"""Plain-text tables for the command line (``jobs list``, ``schedules list`` on a terminal).

Fixed columns, each cut to a width with ``…``, times in UTC, no colour: readable in any terminal and
in a pasted ticket. Scripts get JSON (``--output json``, or any stdout that is not a terminal).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel

from worker.jobs import JobPage
from worker.models import JobStatus


def _cut(value: object, width: int) -> str:
    text = " ".join(str("" if value is None else value).split())  # one line: no newlines or tabs from job data
    return text if len(text) <= width else text[: width - 1] + "…"


def _time(ms: int | None) -> str:
    return "" if not ms else datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%d %H:%M:%S")


def render(headers: Sequence[str], rows: Sequence[Sequence[object]], widths: Sequence[int]) -> str:
    """Rows under their headers, each column as wide as its widest cell (at most its width)."""
    cells = [[_cut(cell, width) for cell, width in zip(row, widths, strict=True)] for row in rows]
    sizes = [max([len(h), *(len(row[i]) for row in cells)]) for i, h in enumerate(headers)]
    lines = [list(headers), *cells]
    return "".join("  ".join(c.ljust(n) for c, n in zip(line, sizes, strict=True)).rstrip() + "\n" for line in lines)


def _progress(job: JobStatus) -> str:
    progress: Any = job.progress.model_dump() if isinstance(job.progress, BaseModel) else job.progress
    value = progress.get("percentage") if isinstance(progress, dict) else progress
    return f"{value:.0f} %" if isinstance(value, int | float) and not isinstance(value, bool) else ""


def jobs(page: JobPage) -> str:
    """A page of jobs, then which of the total it shows."""
    rows = []
    for job in page.jobs:
        data: Any = job.data.model_dump(by_alias=True) if isinstance(job.data, BaseModel) else job.data
        data = data if isinstance(data, dict) else {}
        rows.append([
            job.id or "", job.state.value, data.get("connector"), data.get("connectorId"), data.get("orgId"),
            _time(job.timestamp), _time(job.finished_on), _progress(job), job.failed_reason or "",
        ])  # fmt: skip
    headers = (
        "ID",
        "STATE",
        "CONNECTOR",
        "CONNECTOR ID",
        "ORG",
        "CREATED (UTC)",
        "FINISHED (UTC)",
        "PROGRESS",
        "REASON",
    )
    table = render(headers, rows, (24, 9, 16, 26, 16, 19, 19, 8, 50))
    first = page.offset + 1 if page.jobs else 0
    return table + f"{first}-{page.offset + len(page.jobs)} of {page.total} job(s)\n"


def schedules(found: Sequence[dict[str, Any]]) -> str:
    """Every schedule: the instance, its pattern or interval, time zone and next run."""
    rows = [
        [s.get("connector"), s.get("connectorId"), s.get("orgId"), s.get("pattern") or (
            f"every {s['every']} ms" if s.get("every") else ""), s.get("tz"), _time(s.get("next")), s.get("id")]
        for s in found
    ]  # fmt: skip
    headers = ("CONNECTOR", "CONNECTOR ID", "ORG", "PATTERN", "TZ", "NEXT RUN (UTC)", "SCHEDULER ID")
    return render(headers, rows, (16, 26, 16, 20, 20, 19, 40)) + f"{len(rows)} schedule(s)\n"
