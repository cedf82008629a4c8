"""The event loop the worker runs on: uvloop when installed (the default), else asyncio's own."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any, Literal, TypeVar

from worker.errors import ConfigError

T = TypeVar("T")
LoopKind = Literal["auto", "uvloop", "asyncio"]


def loop_factory(kind: LoopKind) -> Callable[[], asyncio.AbstractEventLoop] | None:
    """The factory for ``kind``: ``auto`` takes uvloop if it imports, ``uvloop`` insists on it."""
    if kind == "asyncio":
        return None
    try:
        import uvloop  # noqa: PLC0415 - optional accelerator, imported only when asked for
    except ImportError as exc:
        if kind == "uvloop":
            raise ConfigError("event_loop = 'uvloop' but uvloop is not installed") from exc
        return None
    factory: Callable[[], asyncio.AbstractEventLoop] = uvloop.new_event_loop
    return factory


def run(main: Coroutine[Any, Any, T], kind: LoopKind = "auto") -> T:
    """``asyncio.run(main)`` on the chosen loop."""
    with asyncio.Runner(loop_factory=loop_factory(kind)) as runner:
        return runner.run(main)
