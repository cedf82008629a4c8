"""The one typed configuration object, read once at start-up.

Sources, highest priority first: ``CRAWL_WORKER_*`` environment variables, then the TOML
file named by ``--config`` / ``CRAWL_WORKER_CONFIG``, then the defaults below. Unknown keys
in the file and unknown ``CRAWL_WORKER_*`` variables are errors, not silently ignored.
This module is the only place that reads the environment.
"""

from __future__ import annotations

import os
import socket
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from worker.errors import ConfigError

ENV_PREFIX = "CRAWL_WORKER_"
CONFIG_ENV = f"{ENV_PREFIX}CONFIG"
#: The project's own variables under the prefix that are not settings: the config file's path, and the test
#: suite's Redis (README); the worker accepts them in its environment and reads only the first.
NOT_SETTINGS = frozenset({CONFIG_ENV, f"{ENV_PREFIX}TEST_REDIS_URL"})

#: Processing-time buckets in seconds: 0.5 s to 4 h (crawls run for minutes to hours).
DEFAULT_DURATION_BUCKETS = (0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1200, 1800, 3600, 7200, 14400)
#: Queue-wait buckets in seconds: 50 ms to 1 h.
DEFAULT_WAIT_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600)

PositiveInt = Annotated[int, Field(gt=0)]
PositiveFloat = Annotated[float, Field(gt=0)]


def _default_worker_name() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"


class Settings(BaseSettings):
    """Every setting of crawl-worker. See ``config/crawl-worker.example.toml`` and the README table."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        extra="forbid",
        frozen=True,
        case_sensitive=False,
        env_parse_none_str="",
    )

    # --- queue -----------------------------------------------------------------------------
    queue_name: str = Field("crawling-scheduler", min_length=1, description="BullMQ queue to consume.")
    prefix: str = Field("bull", min_length=1, description="BullMQ key prefix ({bull} on Cluster).")
    worker_name: str = Field(default_factory=_default_worker_name, min_length=1)
    concurrency: PositiveInt = Field(5, description="Jobs run at once by one process.")
    lock_duration_ms: Annotated[int, Field(ge=5000)] = 60_000
    stalled_interval_ms: Annotated[int, Field(ge=1000)] = 30_000
    max_stalled_count: Annotated[int, Field(ge=0)] = 3
    drain_timeout_s: Annotated[float, Field(ge=0)] = 25.0
    handoff_timeout_s: Annotated[float, Field(ge=0)] = 5.0
    job_data_max_bytes: PositiveInt = 1_048_576
    remove_on_complete: Annotated[int, Field(ge=0)] | None = None
    remove_on_fail: Annotated[int, Field(ge=0)] | None = None

    # --- redis -----------------------------------------------------------------------------
    redis_url: str = "redis://127.0.0.1:6379/0"
    redis_username: str | None = None
    redis_password: SecretStr | None = None
    redis_password_file: Path | None = None
    redis_tls_ca_file: Path | None = None
    redis_tls_cert_file: Path | None = None
    redis_tls_key_file: Path | None = None
    redis_sentinels: list[str] = Field(default_factory=list, description="host:port of each Sentinel.")
    redis_sentinel_master: str | None = None
    redis_cluster: bool = False
    redis_socket_timeout_s: Annotated[float, Field(gt=11)] = 30.0
    redis_connect_timeout_s: PositiveFloat = 5.0
    redis_startup_timeout_s: Annotated[float, Field(ge=0)] = 30.0
    redis_max_connections: PositiveInt = 64
    redis_retry_delay_ms: PositiveInt = 2_000

    # --- crawls ----------------------------------------------------------------------------
    catalog_file: Path = Path("config/catalog.toml")
    data_dir: Path = Path("data")
    sink: Literal["jsonl", "queue"] = "jsonl"
    sink_queue_name: str = "crawl-documents"
    sink_batch_size: PositiveInt = 100
    progress_format: Literal["object", "number"] = "object"
    progress_interval_s: Annotated[float, Field(ge=0)] = 1.0
    duplicate_run_policy: Literal["defer", "skip"] = "defer"
    duplicate_run_delay_s: PositiveFloat = 30.0
    repeat_min_interval_s: Annotated[float, Field(ge=0)] = 60.0
    max_run_s: Annotated[float, Field(gt=0)] = 14400.0
    max_no_progress_attempts: PositiveInt = 5
    run_retention_days: PositiveInt = 30
    run_state_max_mb: PositiveInt = Field(512, description="Cap on one run's stored crawl state.")
    stats_retention_days: PositiveInt = 35

    # --- PipesHub sync events (the pipeshub-sync connector) ----------------------------------
    sync_events_redis_url: str | None = Field(
        None, description="Redis of PipesHub's sync-events stream; unset: the queue's Redis (and its credentials)."
    )
    sync_events_redis_password: SecretStr | None = None
    sync_events_stream: str = Field("sync-events", min_length=1, description="PipesHub's topic = the stream key.")
    sync_events_prefix: str = Field("", description="Prepended to the stream key (PipesHub 95d655b applies none).")
    sync_events_maxlen: PositiveInt = Field(500_000, description="XADD MAXLEN ~ (PipesHub's REDIS_STREAMS_MAXLEN).")
    sync_events_dedup_ttl_s: PositiveInt = Field(
        7 * 86400, description="How long a job's published event id is kept, so a retried job publishes once."
    )

    # --- runtime ---------------------------------------------------------------------------
    event_loop: Literal["auto", "uvloop", "asyncio"] = Field(
        "auto", description="auto: uvloop when installed (measured in docs/benchmarks.md), else asyncio."
    )

    # --- observability ---------------------------------------------------------------------
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    log_format: Literal["auto", "json", "console"] = "auto"
    metrics_host: str = "0.0.0.0"  # noqa: S104 - the metrics port is meant to be scraped
    metrics_port: Annotated[int, Field(ge=0, le=65535)] = 9464
    metrics_enabled: bool = True
    duration_buckets: tuple[float, ...] = DEFAULT_DURATION_BUCKETS
    wait_buckets: tuple[float, ...] = DEFAULT_WAIT_BUCKETS
    queue_stats_cache_s: Annotated[float, Field(ge=0)] = 5.0
    known_connectors: tuple[str, ...] = Field(
        default=(),
        description="Extra connector keys allowed as metric labels (installed ones always are).",
    )

    # --- job API ---------------------------------------------------------------------------
    api_host: str = "127.0.0.1"
    api_port: Annotated[int, Field(ge=0, le=65535)] = 8080
    api_read_token: SecretStr | None = None
    api_admin_token: SecretStr | None = None
    api_auth_failures: PositiveInt = 10
    api_auth_window_s: PositiveInt = 300

    @field_validator("redis_url", "sync_events_redis_url")
    @classmethod
    def _check_redis_url(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("redis://", "rediss://", "unix://")):
            raise ValueError("must start with redis://, rediss:// or unix://")
        return value

    @field_validator("redis_sentinels")
    @classmethod
    def _check_sentinels(cls, value: list[str]) -> list[str]:
        for item in value:
            host, _, port = item.rpartition(":")
            if not host or not port.isdigit():
                raise ValueError(f"{item!r} is not host:port")
        return value

    @field_validator("duration_buckets", "wait_buckets")
    @classmethod
    def _check_buckets(cls, value: tuple[float, ...]) -> tuple[float, ...]:
        if not value or list(value) != sorted(set(value)) or value[0] <= 0:
            raise ValueError("must be a non-empty, strictly increasing list of positive seconds")
        return value

    @model_validator(mode="after")
    def _check_combinations(self) -> Settings:
        if self.redis_sentinels and not self.redis_sentinel_master:
            raise ValueError("redis_sentinels needs redis_sentinel_master")
        if self.redis_cluster and self.redis_sentinels:
            raise ValueError("redis_cluster and redis_sentinels cannot be combined")
        if self.redis_cluster and not (self.prefix.startswith("{") and self.prefix.endswith("}")):
            raise ValueError("redis_cluster needs a hash-tag prefix such as {bull}")
        return self

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],  # noqa: ARG003 - signature fixed by pydantic-settings
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,  # noqa: ARG003
        file_secret_settings: PydanticBaseSettingsSource,  # noqa: ARG003
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # Environment beats the config file, which is passed in as init values by load().
        return env_settings, init_settings

    def redis_password_value(self) -> str | None:
        """The Redis password from the setting or the mounted file (never logged)."""
        if self.redis_password is not None:
            return self.redis_password.get_secret_value()
        if self.redis_password_file is not None:
            return self.redis_password_file.read_text().strip()
        return None


def load(config_file: Path | None = None) -> Settings:
    """Read the settings once: config file (if any) under ``CRAWL_WORKER_*`` environment variables.

    Raises :class:`ConfigError` naming the offending setting.
    """
    unknown = sorted(
        key
        for key in os.environ
        if key.upper().startswith(ENV_PREFIX)
        and key.upper() not in NOT_SETTINGS
        and key.upper()[len(ENV_PREFIX) :].lower() not in Settings.model_fields
    )
    if unknown:
        raise ConfigError(f"unknown environment variable(s): {', '.join(unknown)}")
    path = config_file or (Path(os.environ[CONFIG_ENV]) if os.environ.get(CONFIG_ENV) else None)
    file_values: dict[str, Any] = {}
    if path is not None:
        try:
            file_values = tomllib.loads(path.read_text())
        except OSError as exc:
            raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from exc
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"config file {path} is not valid TOML: {exc}") from exc
    try:
        return Settings(**file_values)
    except ValidationError as exc:
        raise ConfigError(_explain(exc, path)) from exc


def _explain(exc: ValidationError, path: Path | None) -> str:
    lines = []
    for error in exc.errors():
        name = ".".join(str(part) for part in error["loc"]) or "settings"
        env_name = f"{ENV_PREFIX}{name.split('.')[0].upper()}"
        if error["type"] == "extra_forbidden":
            lines.append(f"unknown setting {name!r}" + (f" in {path}" if path else ""))
        else:
            lines.append(f"setting {name} ({env_name}): {error['msg']}")
    return "invalid configuration: " + "; ".join(lines)


def environment_secret(name: str) -> str | None:
    """Look up a secret the catalog names by environment variable (the catalog's only env access)."""
    return os.environ.get(name)


# --- systemd service protocol (deploy issue) --------------------------------------------------
# NOTIFY_SOCKET / WATCHDOG_USEC / WATCHDOG_PID are systemd's protocol, not our settings, so they are
# not Settings fields; they are read here to keep this module the only environment reader.


@dataclass(frozen=True)
class SystemdEnvironment:
    """What systemd passed for sd_notify: the socket and the watchdog period (0 = no watchdog)."""

    notify_socket: str | None = None
    watchdog_usec: int = 0


def systemd_environment() -> SystemdEnvironment:
    """Read NOTIFY_SOCKET and WATCHDOG_USEC (ignored when WATCHDOG_PID names another process)."""
    watchdog_pid = os.environ.get("WATCHDOG_PID", "")
    usec = os.environ.get("WATCHDOG_USEC", "")
    mine = not watchdog_pid or watchdog_pid == str(os.getpid())
    return SystemdEnvironment(
        notify_socket=os.environ.get("NOTIFY_SOCKET") or None,
        watchdog_usec=int(usec) if usec.isdigit() and mine else 0,
    )
