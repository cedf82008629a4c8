"""Connector instances by connectorId, from the operator's catalog file (TOML).

The job carries no crawl configuration and no credentials; the catalog does::

    [instances."507f1f77bcf86cd799439011"]
    connector = "web"
    org_id = "org-1"                      # optional: only this org may run it
    config = { start_urls = ["https://docs.example.com/"], max_pages = 500 }
    secrets = { api_token = { env = "DOCS_TOKEN" }, password = { file = "/run/secrets/docs" } }

A connectorId with no entry can still be served by a rule for its connector *type* (the job's
``connector``, normalised; ``"*"`` matches any type), e.g. to hand every PipesHub connector type to
the ``pipeshub-sync`` connector while the instances listed above get our own crawlers::

    [connector_types."*"]
    connector = "pipeshub-sync"

Secrets are resolved when a job starts, never stored in job data, logs, progress or checkpoints.
The file is re-read when it changes (checked at most once a second, and whenever a connectorId is
not found), so instances can be added or changed without a restart.
"""

from __future__ import annotations

import functools
import hashlib
import itertools
import json
import re
import time
import tomllib
from collections.abc import Callable, Container, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, model_validator

from worker.errors import ConfigError, CredentialsError, UnconfiguredInstance
from worker.models import normalize_connector

EnvLookup = Callable[[str], str | None]


class SecretRef(BaseModel):
    """Where one secret comes from: an environment variable or a mounted file."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    env: str | None = None
    file: Path | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> SecretRef:
        if (self.env is None) == (self.file is None):
            raise ValueError("a secret needs exactly one of env or file")
        return self


class InstanceEntry(BaseModel):
    """One connector instance in the catalog."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    connector: str = Field(min_length=1)
    org_id: str | None = None
    config: dict[str, Any] = Field(default_factory=dict)
    secrets: dict[str, SecretRef] = Field(default_factory=dict)
    #: This instance's crawl time limit (seconds); unset: the ``max_run_s`` setting.
    max_run_s: float | None = Field(None, gt=0)

    @property
    def connector_key(self) -> str:
        """Normalised connector name."""
        return normalize_connector(self.connector)

    @functools.cached_property
    def config_hash(self) -> str:
        """A stable hash of the configuration (a changed config starts a fresh run)."""
        blob = json.dumps({"c": self.connector_key, "cfg": self.config}, sort_keys=True, default=str)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]

    def resolve_secrets(self, lookup_env: EnvLookup) -> dict[str, SecretStr]:
        """Read every secret now; a missing one is a CredentialsError naming it (not its value)."""
        resolved: dict[str, SecretStr] = {}
        for name, ref in self.secrets.items():
            if ref.env is not None:
                value = lookup_env(ref.env)
                if value is None:
                    raise CredentialsError(f"secret {name!r}: environment variable {ref.env} is not set")
            else:
                assert ref.file is not None
                try:
                    value = ref.file.read_text().strip()
                except OSError as exc:
                    raise CredentialsError(f"secret {name!r}: cannot read {ref.file}: {exc.strerror}") from exc
            resolved[name] = SecretStr(value)
        return resolved


class CatalogFile(BaseModel):
    """The whole catalog file."""

    model_config = ConfigDict(extra="forbid")

    instances: dict[str, InstanceEntry] = Field(default_factory=dict)
    connector_types: dict[str, InstanceEntry] = Field(default_factory=dict)


#: The connector-type rule that matches every type.
ANY_TYPE = "*"


@dataclass(frozen=True)
class Route:
    """What serves one job: the catalog entry, and the connector-type rule it came from (None: an instance)."""

    entry: InstanceEntry
    rule: str | None = None


@dataclass(frozen=True)
class CatalogContent:
    """A parsed catalog: instances by connectorId, rules by normalised connector type."""

    instances: Mapping[str, InstanceEntry]
    connector_types: Mapping[str, InstanceEntry] = field(default_factory=dict)


@dataclass
class Catalog:
    """Looks up instances by connectorId; reloads the file when its mtime changes."""

    path: Path
    _entries: Mapping[str, InstanceEntry] = field(default_factory=dict)
    _mtime: float | None = None
    _types: Mapping[str, InstanceEntry] = field(default_factory=dict)
    #: How often a lookup that finds its entry checks the file for changes (a miss always checks).
    check_interval_s: float = 1.0
    _checked_at: float = field(default=float("-inf"), repr=False)

    @classmethod
    def load(cls, path: Path) -> Catalog:
        """Read ``path`` (a missing file is an empty catalog); invalid content is a ConfigError."""
        catalog = cls(path)
        catalog._reload(force=True)
        return catalog

    @classmethod
    def from_entries(
        cls, entries: Mapping[str, InstanceEntry], connector_types: Mapping[str, InstanceEntry] | None = None
    ) -> Catalog:
        """A fixed catalog (tests, demos)."""
        types = {_type_key(key): entry for key, entry in (connector_types or {}).items()}
        return cls(Path("<in-memory catalog>"), dict(entries), -1.0, types)

    def __len__(self) -> int:
        return len(self._entries)

    def ids(self) -> list[str]:
        """All configured connectorIds."""
        return sorted(self._entries)

    def entries(self) -> list[tuple[str, InstanceEntry]]:
        """Every (connectorId, entry), after checking the file for changes."""
        self._reload()
        return sorted(self._entries.items())

    def rules(self) -> dict[str, InstanceEntry]:
        """The connector-type rules, by normalised type (``"*"``: any type)."""
        return dict(self._types)

    def resolve(self, connector_id: str, connector: str) -> Route:
        """What serves a job: the instance's entry, else the rule for its connector type, else the
        ``"*"`` rule; UnconfiguredInstance when none applies.

        With a rule in place a miss is the common case (every delegated job): it checks the file no more
        often than a hit does, so a newly added instance is found within ``check_interval_s``.
        """
        key = normalize_connector(connector)
        entry = self._find(connector_id, miss_checks_file=not (key in self._types or ANY_TYPE in self._types))
        if entry is not None:
            return Route(entry)
        for rule in (key, ANY_TYPE):  # the rules as the file holds them now (_find may have reloaded it)
            if (ruled := self._types.get(rule)) is not None:
                return Route(ruled, rule)
        raise UnconfiguredInstance(
            f'connectorId {connector_id!r} is not configured: the catalog has no [instances."{connector_id}"] '
            f'entry and no [connector_types] rule for {key!r} or "*"'
        )

    def rule_for(self, connector: str, local: Container[str]) -> str | None:
        """The ``[connector_types]`` rule that serves a job of ``connector`` whose connectorId has no entry, or None.

        ``"*"`` never serves a connector in ``local`` (the ones this worker runs itself) unless it names that very
        connector: such a job needs its instance, else it would "complete" a crawl nobody performs.
        """
        key = normalize_connector(connector)
        if key in self._types:
            return key
        ruled = self._types.get(ANY_TYPE)
        if ruled is None or (key in local and ruled.connector_key != key):
            return None
        return ANY_TYPE

    def get(self, connector_id: str) -> InstanceEntry:
        """The entry for ``connector_id``; UnconfiguredInstance if there is none.

        The file is checked for changes at most every ``check_interval_s`` while lookups find their
        entry, and on every miss, so a newly added instance is found at once.
        """
        entry = self._find(connector_id, miss_checks_file=True)
        if entry is None:  # the reason is read by whoever reads the queue: no path, no catalog size
            raise UnconfiguredInstance(
                f'connectorId {connector_id!r} is not configured: add an [instances."{connector_id}"] entry'
            )
        return entry

    def _find(self, connector_id: str, *, miss_checks_file: bool) -> InstanceEntry | None:
        """The entry, the file checked for changes at most every ``check_interval_s`` (and on a miss when
        ``miss_checks_file``: maybe the instance was just added)."""
        now = time.monotonic()
        due = now - self._checked_at >= self.check_interval_s
        entry = None if due else self._entries.get(connector_id)
        if due or (entry is None and miss_checks_file):
            self._checked_at = now
            self._reload()
            entry = self._entries.get(connector_id)
        return entry

    def _reload(self, *, force: bool = False) -> None:
        if self._mtime == -1.0:
            return
        try:
            mtime = self.path.stat().st_mtime
        except FileNotFoundError:
            self._entries, self._types, self._mtime = {}, {}, None
            return
        if not force and mtime == self._mtime:
            return
        try:
            content = parse_catalog(self.path.read_text())
        except (tomllib.TOMLDecodeError, ValidationError) as exc:
            if force:
                raise ConfigError(f"catalog {self.path} is invalid: {exc}") from exc
            return  # keep serving the last good catalog; `crawl-worker check` reports the error
        self._entries, self._types, self._mtime = content.instances, content.connector_types, mtime


#: A table header that starts one instance: where a big catalog may be cut into slices.
_INSTANCE_TABLE = re.compile(r"^\[instances\.", re.MULTILINE)
#: Instances per slice of a big catalog.
SLICE_INSTANCES = 500


class _SlicesDisagree(Exception):
    """A slice did not stand on its own; the whole file is parsed instead."""


def _type_key(key: str) -> str:
    return key if key == ANY_TYPE else normalize_connector(key)


def _content(files: list[CatalogFile]) -> CatalogContent:
    instances: dict[str, InstanceEntry] = {}
    types: dict[str, InstanceEntry] = {}
    for file in files:
        instances.update(file.instances)
        types.update({_type_key(key): entry for key, entry in file.connector_types.items()})
    return CatalogContent(instances, types)


def parse_catalog(text: str) -> CatalogContent:
    """The validated content of a catalog file's text (TOMLDecodeError or ValidationError if invalid).

    tomllib keeps a few KB of bookkeeping per key until it returns: a 20,000-instance catalog
    (1.2 MB) peaked at 45 MB above its result. So a big file is parsed ``SLICE_INSTANCES`` tables
    at a time, each slice validated and dropped before the next. A slice that does not stand on
    its own (cut inside a multi-line string, or one instance's tables split across slices) makes
    the whole file be parsed at once instead: the result is the same, and so are the errors.
    """
    starts = [match.start() for match in _INSTANCE_TABLE.finditer(text)]
    if len(starts) > SLICE_INSTANCES:
        bounds = [0, *starts[SLICE_INSTANCES::SLICE_INSTANCES], len(text)]
        pieces: list[CatalogFile] = []
        seen: set[str] = set()
        try:
            for begin, end in itertools.pairwise(bounds):
                piece = CatalogFile.model_validate(tomllib.loads(text[begin:end]))
                keys = {*piece.instances, *(f"\0{key}" for key in piece.connector_types)}
                if not seen.isdisjoint(keys):
                    raise _SlicesDisagree
                seen |= keys
                pieces.append(piece)
        except (tomllib.TOMLDecodeError, ValidationError, _SlicesDisagree):
            pass
        else:
            return _content(pieces)
    return _content([CatalogFile.model_validate(tomllib.loads(text))])
