"""Connector name -> class, built at start-up from the built-ins and the entry-point group.

Third-party packages register with::

    [project.entry-points."crawl_worker.connectors"]
    drive = "my_package.drive:DriveConnector"

Duplicate names fail loudly; a broken plug-in is reported by name, not swallowed.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterable, Mapping
from importlib.metadata import EntryPoint, entry_points
from typing import Any

from worker.connectors.base import Connector
from worker.errors import ConfigError, UnknownConnector
from worker.models import normalize_connector

ENTRY_POINT_GROUP = "crawl_worker.connectors"

BUILTINS: Mapping[str, str] = {
    "filesystem": "worker.connectors.files.connector:FilesystemConnector",
    "web": "worker.connectors.web.connector:WebConnector",
    "mock": "worker.connectors.mock:MockConnector",
    "pipeshub-sync": "worker.connectors.pipeshub:PipesHubSyncConnector",
}

AnyConnector = type[Connector[Any, Any]]


def _import(target: str) -> AnyConnector:
    module_name, _, attr = target.partition(":")
    cls: AnyConnector = getattr(importlib.import_module(module_name), attr)
    return cls


class Registry:
    """The installed connectors. Built once; passed to whoever needs it."""

    def __init__(self, connectors: Mapping[str, AnyConnector]) -> None:
        self._connectors = dict(connectors)

    def names(self) -> list[str]:
        """Installed connector names, sorted."""
        return sorted(self._connectors)

    def __contains__(self, name: object) -> bool:
        """Is a connector of that (normalised) name installed?"""
        return isinstance(name, str) and normalize_connector(name) in self._connectors

    def get(self, name: str) -> AnyConnector:
        """The class for ``name`` (normalised); UnknownConnector lists what is installed."""
        key = normalize_connector(name)
        try:
            return self._connectors[key]
        except KeyError:
            raise UnknownConnector(
                f"connector {key!r} is not installed (installed: {', '.join(self.names())})"
            ) from None

    def items(self) -> list[tuple[str, AnyConnector]]:
        """(name, class) pairs, sorted by name."""
        return sorted(self._connectors.items())


def build_registry(
    builtins: Mapping[str, str] = BUILTINS,
    plugins: Iterable[EntryPoint] | None = None,
) -> Registry:
    """Load built-ins and entry-point plug-ins; duplicates and broken plug-ins are ConfigErrors."""
    found: dict[str, AnyConnector] = {}
    sources: dict[str, str] = {}

    def add(name: str, cls: AnyConnector, source: str) -> None:
        key = normalize_connector(name)
        if key in found:
            raise ConfigError(f"connector {key!r} is registered twice: by {sources[key]} and by {source}")
        found[key], sources[key] = cls, source

    for name, target in builtins.items():
        try:
            add(name, _import(target), f"built-in {target}")
        except ImportError:
            continue  # an optional built-in whose dependencies are not installed
    for ep in entry_points(group=ENTRY_POINT_GROUP) if plugins is None else plugins:
        try:
            cls = ep.load()
        except Exception as exc:
            raise ConfigError(f"connector plug-in {ep.name!r} ({ep.value}) failed to load: {exc}") from exc
        if not (isinstance(cls, type) and issubclass(cls, Connector)):
            raise ConfigError(f"connector plug-in {ep.name!r} ({ep.value}) is not a Connector subclass")
        add(ep.name, cls, f"plug-in {ep.value}")
    return Registry(found)
