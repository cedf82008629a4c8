"""The sink interface: where documents go. Writes are idempotent by document id."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass

from worker.documents import Document


@dataclass(frozen=True)
class InstanceRef:
    """The connector instance a batch of documents belongs to."""

    org_id: str
    connector: str
    connector_id: str
    run_id: str


class Sink(ABC):
    """Accepts batches of documents. ``write`` returns only once the batch is durable."""

    @abstractmethod
    async def write(self, instance: InstanceRef, documents: Sequence[Document]) -> int:
        """Persist ``documents`` (idempotent by id); return how many were new or changed."""

    async def aclose(self) -> None:
        """Flush and release resources (no-op by default)."""
