"""The ``pipeshub-sync`` connector: hand the sync to PipesHub's own connector service, as its worker does.

PipesHub's crawling worker answers each crawl job by publishing ``<connector>.resync`` on the
``sync-events`` stream, where PipesHub's Python connector service picks it up and runs the sync; for
"Local FS" it does nothing (the desktop client crawls). This connector does the same, in the same
wire format (:mod:`worker.sync_events`), so crawl-worker can replace that worker for every connector
type it has no crawler of its own for. Route types to it with a catalog rule::

    [connector_types."*"]
    connector = "pipeshub-sync"

Better than PipesHub's worker: one event per job however often the job is retried or recovered, a
publish that fails is retried by BullMQ with backoff (PipesHub's logs it and completes the job), and
the job's return value says what was published (``details.published``: stream, entry id, eventType).
"""

from __future__ import annotations

from pydantic import Field

from worker.connectors.base import Checkpoint, Connector, ConnectorConfig, StepResult
from worker.errors import InvalidConnectorConfig
from worker.sync_events import is_client_managed, now_ms, sync_event


class PipesHubSyncConfig(ConnectorConfig):
    """What to publish."""

    full_sync: bool = Field(
        False, description="Ask for a full sync (payload.fullSync = true) instead of an incremental one."
    )
    client_managed: tuple[str, ...] = Field(
        ("Local FS",),
        description="Connector types crawled by PipesHub's desktop client: their jobs complete without an event.",
    )


class PipesHubSyncCheckpoint(Checkpoint):
    """One step: the event is published, or it is not."""


class PipesHubSyncConnector(Connector[PipesHubSyncConfig, PipesHubSyncCheckpoint]):
    """Publishes one ``<connector>.resync`` event for the job's connector instance."""

    config_model = PipesHubSyncConfig
    checkpoint_model = PipesHubSyncCheckpoint
    serves_any_type = True

    async def validate(self) -> None:
        """The worker must have a sync-events publisher (it always has one, unless built without)."""
        if self.context.sync_events is None:
            raise InvalidConnectorConfig(
                "pipeshub-sync needs the sync-events publisher, which this worker was built without"
            )

    async def run_step(self, checkpoint: PipesHubSyncCheckpoint) -> StepResult[PipesHubSyncCheckpoint]:
        """Publish the event (once per job), or skip a client-managed connector type."""
        del checkpoint
        connector = self.context.connector_type
        done = PipesHubSyncCheckpoint(has_more=False)
        if is_client_managed(connector, self.config.client_managed):
            reason = f"{connector!r} is crawled by PipesHub's desktop client; no sync event is published"
            return StepResult(checkpoint=done, processed=1, total=1, details={"skipped": reason})
        assert self.context.sync_events is not None  # checked by validate()
        event = sync_event(
            self.context.org_id, connector, self.context.connector_id, now_ms=now_ms(), full_sync=self.config.full_sync
        )
        published = await self.context.sync_events.publish(event, job_key=self.context.job_key)
        return StepResult(checkpoint=done, processed=1, total=1, details={"published": published.as_dict()})
