"""The connector interface: a typed config, a typed versioned checkpoint, and bounded steps.

A connector does a bounded amount of work per :meth:`Connector.run_step` (Onyx's
``load_from_checkpoint`` pattern) and returns the documents it found plus the next checkpoint.
The runner, not the connector, owns sinking, checkpoint persistence, progress, fencing and
retries, so every connector is resumable by construction.
"""

from __future__ import annotations

import asyncio
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Generic, TypeVar

from pydantic import BaseModel, ConfigDict, Field, SecretStr

from worker.crawlstate import MemoryRunData, RunData, StateChanges
from worker.documents import Document, ItemFailure

if TYPE_CHECKING:
    from worker.connectors.web.ssrf import Resolver
    from worker.sync_events import SyncEventPublisher


class ConnectorConfig(BaseModel):
    """Base of every connector's config model: unknown keys are errors."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class Checkpoint(BaseModel):
    """Base of every connector's checkpoint: JSON, versioned, and never holding secrets.

    Subclasses bump ``schema_version`` when their fields change incompatibly; a stored
    checkpoint of another version is discarded and the run starts fresh.
    """

    model_config = ConfigDict(extra="forbid")

    schema_version: ClassVar[int] = 1

    has_more: bool = True


ConfigT = TypeVar("ConfigT", bound=ConnectorConfig)
CheckpointT = TypeVar("CheckpointT", bound=Checkpoint)


class StepResult(BaseModel, Generic[CheckpointT]):
    """What one step produced. ``processed`` counts items handled (emitted, unchanged or failed)."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    documents: list[Document] = Field(default_factory=list)
    failures: list[ItemFailure] = Field(default_factory=list)
    checkpoint: CheckpointT
    processed: int = Field(0, ge=0)
    total: int | None = Field(None, ge=0, description="Estimated items in the whole run, if known.")
    stats: dict[str, int] = Field(default_factory=dict, description="Extra counters, e.g. robots_blocked.")
    skipped: dict[str, int] = Field(
        default_factory=dict,
        description="Items not fetched in this step, by reason (``worker.skips``: anything unknown counts as other).",
    )
    retry_after_s: float | None = Field(
        None,
        ge=0,
        description="The source asked to come back later: the runner commits this step, then sends the job "
        "back to delayed for this long without spending an attempt.",
    )
    details: dict[str, Any] = Field(
        default_factory=dict, description="What the step did besides documents; lands in the job's return value."
    )
    changes: StateChanges = Field(
        default_factory=StateChanges,
        description="What the step changed in the run's stored state; committed together with the checkpoint.",
    )


@dataclass(frozen=True)
class ConnectorContext:
    """What the caller hands a connector: identity, credentials, a private data directory, and the
    process's shared clients it may use."""

    connector_id: str
    org_id: str
    data_dir: Path
    attempt: int = 1
    credentials: Mapping[str, SecretStr] = field(default_factory=dict)
    #: The job's connector type as the producer sent it (``"SharePoint Online"``).
    connector_type: str = ""
    #: Identifies the job across its attempts and recoveries (an idempotency key): ``<jobId>@<created ms>``.
    job_key: str = ""
    #: PipesHub's sync-events publisher (the ``pipeshub-sync`` connector's way out).
    sync_events: SyncEventPublisher | None = None
    #: How network connectors resolve host names for the address guard (None: the system's resolver;
    #: tests map names to loopback addresses).
    resolver: Resolver | None = None
    #: Set when the job is handed off (shutdown): a connector's waits end then, so no wait outlives it.
    handoff: asyncio.Event | None = None


class Connector(ABC, Generic[ConfigT, CheckpointT]):
    """Base class of all connectors. Subclasses set the three class attributes and ``run_step``."""

    config_model: ClassVar[type[ConnectorConfig]]
    checkpoint_model: ClassVar[type[Checkpoint]]
    #: Serves instances of any connector type (a delegate such as ``pipeshub-sync``), not only its own.
    serves_any_type: ClassVar[bool] = False
    #: Maps of the run's stored state kept after it completes, read by the next run as ``previous``.
    carried: ClassVar[frozenset[str]] = frozenset()

    def __init__(self, config: ConfigT, context: ConnectorContext) -> None:
        self.config = config
        self.context = context
        #: The run's stored state (``worker.crawlstate``); in memory until the runner binds the stored one.
        self.data: RunData = MemoryRunData(self.carried)

    def bind(self, data: RunData) -> None:
        """Read the run's stored state from ``data`` (the runner calls this before the first step)."""
        self.data = data

    async def validate(self) -> None:
        """Fail fast on bad config or credentials by raising a PermanentError (no-op by default)."""

    def initial_checkpoint(self, previous: CheckpointT | None) -> CheckpointT:
        """The starting point of a new run; ``previous`` is the last completed run's final checkpoint."""
        del previous
        return self.checkpoint_model()  # type: ignore[return-value]

    @abstractmethod
    async def run_step(self, checkpoint: CheckpointT) -> StepResult[CheckpointT]:
        """Do a bounded amount of work from ``checkpoint`` and return what it produced."""

    async def aclose(self) -> None:
        """Release clients and files (no-op by default)."""
