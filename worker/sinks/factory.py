"""The sink named by the ``sink`` setting."""

from __future__ import annotations

from worker.connections import make_client
from worker.queue.producer import JobQueue
from worker.settings import Settings
from worker.sinks.base import Sink
from worker.sinks.bullmq_queue import BullmqQueueSink
from worker.sinks.jsonl import JsonlSink


def build_sink(settings: Settings) -> Sink:
    """``jsonl`` (files under ``data_dir``) or ``queue`` (jobs on ``sink_queue_name``, own connection)."""
    if settings.sink == "queue":
        queue = JobQueue(settings, make_client(settings), name=settings.sink_queue_name)
        return BullmqQueueSink(queue, settings.sink_batch_size)
    return JsonlSink(settings.data_dir)
