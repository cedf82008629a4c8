"""Server-side rendering: the Jinja2 environment (autoescaped: job data is text, never markup),
the formatting filters, and the security headers every dashboard page carries."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from jinja2 import Environment, FileSystemLoader, StrictUndefined
from pydantic import BaseModel
from starlette.responses import HTMLResponse, Response

from worker.ui.events import percentage
from worker.ui.instances import checkpoint_summary

HERE = Path(__file__).resolve().parent
TEMPLATES = HERE / "templates"
STATIC = HERE / "static"

#: No inline script or style, nothing from elsewhere, no framing, forms post only here.
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; "
    "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}


def timestamp(ms: int | float | None) -> str:
    """A Unix time in ms as ``YYYY-MM-DD HH:MM:SS`` UTC ('' for none)."""
    if not ms:
        return ""
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%d %H:%M:%S")


def duration(ms: int | float | None) -> str:
    """A duration in ms, in the largest unit that keeps it readable ('' for none)."""
    if ms is None or ms < 0:
        return ""
    if ms < 1000:
        return f"{ms:.0f} ms"
    seconds = ms / 1000
    for size, unit in ((86400, "d"), (3600, "h"), (60, "min")):
        if seconds >= size:
            return f"{seconds / size:.1f} {unit}"
    return f"{seconds:.1f} s"


def ago(ms: int | float | None) -> str:
    """How long ago a Unix time in ms was."""
    return f"{duration(time.time() * 1000 - ms)} ago" if ms else ""


def utf8(text: str) -> bytes:
    """``text`` as UTF-8. Bytes a producer stored that are not UTF-8 come from Redis as lone surrogates
    (``surrogateescape``); each becomes U+FFFD here instead of failing the response."""
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError:
        pass
    try:
        return text.encode("utf-8", "surrogateescape").decode("utf-8", "replace").encode("utf-8")
    except UnicodeEncodeError:  # a surrogate from elsewhere (a JSON \ud800 escape)
        return "".join("\ufffd" if 0xD800 <= ord(c) <= 0xDFFF else c for c in text).encode("utf-8")


def pretty(value: Any) -> str:
    """A value as indented JSON text."""
    return json.dumps(value, indent=2, ensure_ascii=False, default=str)


def percent(value: float | None) -> str:
    """A ratio 0-1 as a percentage ('-' for none)."""
    return "-" if value is None else f"{value * 100:.1f} %"


def progress_percent(progress: Any) -> float | None:
    """A job's progress (number, object or model) as a percentage 0-100, if it has one."""
    if isinstance(progress, BaseModel):
        progress = progress.model_dump()
    return percentage(progress)


def instance_of(data: Any) -> dict[str, str]:
    """connector, connectorId and orgId of job data (valid or not), as text."""
    if isinstance(data, BaseModel):
        data = data.model_dump(by_alias=True)
    data = data if isinstance(data, dict) else {}
    return {key: str(data.get(key) or "") for key in ("connector", "connectorId", "orgId")}


def build_environment() -> Environment:
    """The template environment: autoescape on for every template, undefined names are errors."""
    env = Environment(
        loader=FileSystemLoader(TEMPLATES), autoescape=True, undefined=StrictUndefined, trim_blocks=True,
        lstrip_blocks=True,
    )  # fmt: skip
    env.filters.update(
        ts=timestamp,
        dur=duration,
        ago=ago,
        pretty=pretty,
        percent=percent,
        pct=progress_percent,
        who=instance_of,
        cp=checkpoint_summary,
    )
    return env


def secure_headers(response: Response) -> Response:
    """Add the dashboard's security headers to ``response``."""
    response.headers.update(SECURITY_HEADERS)
    return response


class Renderer:
    """Renders templates into responses with the security headers."""

    def __init__(self) -> None:
        self.env = build_environment()

    def page(self, template: str, context: dict[str, Any], status: int = 200) -> HTMLResponse:
        """One HTML page."""
        html = self.env.get_template(template).render(**context)
        return secure_headers(HTMLResponse(utf8(html), status_code=status))  # type: ignore[return-value]
