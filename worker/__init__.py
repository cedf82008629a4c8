"""crawl-worker: a BullMQ-compatible queue worker that runs crawl jobs.

Nothing runs on import; the entry point is :func:`worker.cli.main`.
"""

__version__ = "0.2.0"

__all__ = ["__version__"]
