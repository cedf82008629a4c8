"""Logging, configured once: JSON lines off a terminal, readable console on one.

Job context (job id, connector, connectorId, attempt) is bound through contextvars by the
dispatcher, so every line a job's code logs carries it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys
from collections.abc import Iterator, MutableMapping
from typing import Any, Literal

import structlog

_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING, "error": logging.ERROR}
_SECRET_KEYS = frozenset({"password", "token", "secret", "authorization", "api_key", "credentials"})


def _redact(_: Any, __: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """Last line of defence: never print a value whose key names a secret."""
    for key in event:
        if key.lower() in _SECRET_KEYS:
            event[key] = "***"
    return event


def configure(level: str = "info", fmt: Literal["auto", "json", "console"] = "auto") -> None:
    """Configure structlog and stdlib logging for the whole process."""
    use_json = fmt == "json" or (fmt == "auto" and not sys.stderr.isatty())
    renderer: Any = structlog.processors.JSONRenderer() if use_json else structlog.dev.ConsoleRenderer()
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            _redact,
            structlog.processors.format_exc_info if use_json else structlog.processors.StackInfoRenderer(),
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(_LEVELS[level]),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=True,
    )
    logging.basicConfig(level=max(_LEVELS[level], logging.WARNING), stream=sys.stderr, format="%(name)s %(message)s")


def get_logger(name: str) -> structlog.stdlib.BoundLogger:
    """A structured logger tagged with ``name``."""
    logger: structlog.stdlib.BoundLogger = structlog.get_logger(logger_name=name)
    return logger


@contextlib.contextmanager
def suppressed(event: str, **fields: Any) -> Iterator[None]:
    """``contextlib.suppress(Exception)`` that is never silent: what it swallows is logged as ``event``."""
    try:
        yield
    except Exception as exc:
        get_logger("worker").warning(event, error=str(exc), error_type=type(exc).__name__, **fields)


async def reap(task: asyncio.Future[Any], event: str) -> None:
    """Wait for a task that was cancelled; its cancellation is expected, any other error is logged as ``event``."""
    try:
        await task
    except asyncio.CancelledError:
        return
    except Exception as exc:
        get_logger("worker").warning(event, error=str(exc), error_type=type(exc).__name__)
