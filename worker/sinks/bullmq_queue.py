"""The downstream-queue sink: one BullMQ job per batch of documents, for a Node (or any) consumer.

Job name ``documents-<connector>-<connectorId>``; data ``{orgId, connector, connectorId, runId,
documents: [...]}`` in the document model's JSON shape. The job id is a hash of the batch
(document ids, content hashes, deletion flags), so a step replayed after a crash adds the same
job id again, and BullMQ keeps the existing job instead of queueing a duplicate.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any

from worker.documents import Document
from worker.queue.producer import JobQueue
from worker.sinks.base import InstanceRef, Sink

#: Options of every batch job: retried by the consumer's own worker, bounded retention.
BATCH_OPTIONS: dict[str, Any] = {
    "attempts": 5,
    "backoff": {"type": "exponential", "delay": 1000},
    "removeOnComplete": 1000,
    "removeOnFail": 5000,
}


def batch_job_id(instance: InstanceRef, documents: Sequence[Document]) -> str:
    """The deterministic job id of a batch."""
    digest = hashlib.sha256(f"{instance.org_id}\0{instance.connector}\0{instance.connector_id}".encode())
    for doc in documents:
        digest.update(f"\0{doc.id}:{doc.content_hash}:{int(doc.deleted)}".encode())
    return f"docs-{digest.hexdigest()[:40]}"


class BullmqQueueSink(Sink):
    """Adds documents to a downstream BullMQ queue, ``batch_size`` per job. Owns ``queue``."""

    def __init__(self, queue: JobQueue, batch_size: int) -> None:
        self.queue = queue
        self.batch_size = batch_size

    async def write(self, instance: InstanceRef, documents: Sequence[Document]) -> int:
        """One job per ``batch_size`` documents; returns the number of documents handed on."""
        for start in range(0, len(documents), self.batch_size):
            batch = documents[start : start + self.batch_size]
            data = {
                "orgId": instance.org_id,
                "connector": instance.connector,
                "connectorId": instance.connector_id,
                "runId": instance.run_id,
                "documents": [doc.model_dump(mode="json") for doc in batch],
            }
            opts = {**BATCH_OPTIONS, "jobId": batch_job_id(instance, batch)}
            await self.queue.add(f"documents-{instance.connector}-{instance.connector_id}", data, opts)
        return len(documents)

    async def aclose(self) -> None:
        """Close the queue and its connection."""
        await self.queue.close()
