"""The ``mock`` connector: a scripted source for demos, tests and benchmarks (as Onyx ships one).

It emits ``items`` synthetic documents, ``step_size`` per step, and can be told to fail,
ask to come back later, or kill its own process at given points, so retry, resume and
recovery paths can be exercised end to end without a network.
"""

from __future__ import annotations

import asyncio
import os
import signal

from pydantic import Field

from worker.connectors.base import Checkpoint, Connector, ConnectorConfig, StepResult
from worker.documents import Document, ItemFailure, content_hash, stable_id
from worker.errors import CredentialsError, TransientError


class MockConfig(ConnectorConfig):
    """The script."""

    items: int = Field(10, ge=0)
    step_size: int = Field(10, gt=0)
    step_delay_s: float = Field(0.0, ge=0)
    transient_failures: int = Field(0, ge=0, description="Fail this many attempts (attempt <= N) at step 0.")
    fail_items_every: int = Field(0, ge=0, description="Report every Nth item as a per-item failure.")
    skip_items_every: int = Field(0, ge=0, description="Report every Nth item as skipped (excluded:pattern).")
    retry_later_s: float | None = Field(None, gt=0, description="After the first step, ask once to come back later.")
    kill_at_item: int | None = Field(None, ge=0, description="SIGKILL the worker process on reaching this item.")
    invalid_credentials: bool = False
    version: int = Field(1, description="Bump to change document contents (incremental runs).")


class MockCheckpoint(Checkpoint):
    """Next item to emit."""

    next_item: int = 0
    asked_later: bool = False


class MockConnector(Connector[MockConfig, MockCheckpoint]):
    """Emits synthetic documents according to its config."""

    config_model = MockConfig
    checkpoint_model = MockCheckpoint

    async def validate(self) -> None:
        """Rejects the run when told its credentials are invalid."""
        if self.config.invalid_credentials:
            raise CredentialsError("mock source rejected the credentials (401)")

    async def run_step(self, checkpoint: MockCheckpoint) -> StepResult[MockCheckpoint]:
        """Emit the next ``step_size`` items."""
        attempt = self.context.attempt
        if checkpoint.next_item == 0 and attempt <= self.config.transient_failures:
            raise TransientError(f"mock source unavailable (scripted failure, attempt {attempt})")
        if self.config.step_delay_s:
            await asyncio.sleep(self.config.step_delay_s)
        end = min(checkpoint.next_item + self.config.step_size, self.config.items)
        documents: list[Document] = []
        failures: list[ItemFailure] = []
        skipped = 0
        for i in range(checkpoint.next_item, end):
            if self.config.kill_at_item is not None and i == self.config.kill_at_item:
                os.kill(os.getpid(), signal.SIGKILL)
            source = f"mock://{self.context.connector_id}/{i}"
            if self.config.fail_items_every and (i + 1) % self.config.fail_items_every == 0:
                failures.append(ItemFailure(source=source, reason="scripted item failure"))
                continue
            if self.config.skip_items_every and (i + 1) % self.config.skip_items_every == 0:
                skipped += 1
                continue
            text = f"document {i} v{self.config.version}"
            documents.append(
                Document(
                    id=stable_id(source),
                    source=source,
                    mime_type="text/plain",
                    title=f"Item {i}",
                    text=text,
                    content_hash=content_hash(text.encode()),
                    size=len(text),
                )
            )
        ask_later = self.config.retry_later_s is not None and not checkpoint.asked_later
        return StepResult(
            documents=documents,
            failures=failures,
            skipped={"excluded:pattern": skipped} if skipped else {},
            retry_after_s=self.config.retry_later_s if ask_later else None,
            checkpoint=MockCheckpoint(
                next_item=end, has_more=end < self.config.items, asked_later=checkpoint.asked_later or ask_later
            ),
            processed=end - checkpoint.next_item,
            total=self.config.items,
        )
