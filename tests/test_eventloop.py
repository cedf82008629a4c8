"""Event-loop selection: uvloop by default when installed, asyncio on request."""

from __future__ import annotations

import asyncio

import pytest

from worker import eventloop
from worker.errors import ConfigError


async def _loop_module() -> str:
    return type(asyncio.get_running_loop()).__module__


def test_auto_runs_on_uvloop_and_asyncio_on_request() -> None:
    """auto picks uvloop (a dependency on Linux); asyncio gives the standard loop."""
    assert eventloop.run(_loop_module(), "auto").startswith("uvloop")
    assert eventloop.run(_loop_module(), "asyncio").startswith("asyncio")


def test_uvloop_required_but_missing_is_a_config_error(monkeypatch: pytest.MonkeyPatch) -> None:
    """event_loop=uvloop without uvloop installed stops start-up with a ConfigError naming it."""
    import builtins

    real_import = builtins.__import__

    def no_uvloop(name: str, *args: object, **kwargs: object) -> object:
        if name == "uvloop":
            raise ImportError("no uvloop")
        return real_import(name, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(builtins, "__import__", no_uvloop)
    with pytest.raises(ConfigError, match="uvloop"):
        eventloop.loop_factory("uvloop")
    assert eventloop.loop_factory("auto") is None
