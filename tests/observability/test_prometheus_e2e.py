"""End to end: a real Prometheus scrapes a worker processing real jobs; the dashboard's queries and the alert work."""

from __future__ import annotations

import asyncio
import json
import math
import re
from collections.abc import Callable
from typing import Any

import pytest
from bullmq import Queue
from prometheus_client import CollectorRegistry

from tests.helpers import add_crawl, catalog_of, running_app, wait_for
from tests.observability.prometheus_server import PrometheusServer
from tests.observability.promtool import DASHBOARD
from worker.settings import Settings

pytestmark = pytest.mark.slow

CATALOG = {
    "ok": {"connector": "mock", "config": {"items": 20, "step_size": 10, "skip_items_every": 7}},
    "bad": {"connector": "mock", "config": {"invalid_credentials": True}},
    "flaky": {"connector": "mock", "config": {"items": 5, "transient_failures": 1}},
    "later": {"connector": "mock", "config": {"items": 20, "step_size": 10, "retry_later_s": 0.2}},
}


def dashboard_queries() -> list[str]:
    """Every panel target expression of the Grafana dashboard."""
    dashboard = json.loads(DASHBOARD.read_text())
    return [target["expr"] for panel in dashboard["panels"] for target in panel["targets"]]


def substitute(expr: str, queue: str) -> str:
    """Grafana variables replaced as Grafana would with queue=<queue>, connector=All, job=crawl-worker."""
    values = {"$queue": queue, "$connector": ".*", "$job": "crawl-worker", "$__rate_interval": "1m"}
    return re.sub(r"\$\w+", lambda m: values[m.group(0)], expr)


def finite(result: list[dict[str, Any]]) -> bool:
    """At least one sample is a real number (histogram_quantile of no traffic is NaN)."""
    return any(math.isfinite(float(item["value"][1])) for item in result)


async def test_prometheus_scrapes_dashboard_queries_return_data_and_failure_alert_fires(
    make_settings: Callable[..., Settings], queue: Queue, start_prometheus: Callable[[list[str]], PrometheusServer]
) -> None:
    """Every dashboard query returns data from a live scrape, and CrawlWorkerHighFailureRatio fires."""
    settings = make_settings(
        metrics_enabled=True, metrics_host="127.0.0.1", metrics_port=0, queue_stats_cache_s=1, concurrency=4
    )
    async with running_app(settings, catalog_of(**CATALOG), registry=CollectorRegistry()) as app:
        assert app.ops is not None
        prometheus = start_prometheus([f"127.0.0.1:{app.ops.port}"])

        async def scraped() -> bool:
            return bool(await asyncio.to_thread(prometheus.query, 'up{job="crawl-worker"} == 1'))

        await wait_for(scraped, timeout=20, what="first successful scrape")
        fast_retry: dict[str, Any] = {"backoff": {"type": "fixed", "delay": 100}}
        for _ in range(6):  # traffic spread over several scrapes, so counters increase between samples
            for cid in ("ok", "bad", "flaky", "later"):
                await add_crawl(queue, "mock", cid, **fast_retry)
            await asyncio.sleep(0.7)
        await add_crawl(queue, "mock", "ok", delay=600_000)  # one delayed job for the backlog panel

        async def alert_firing() -> bool:
            alerts = (await asyncio.to_thread(prometheus.get, "/api/v1/alerts"))["alerts"]
            return any(
                a["labels"]["alertname"] == "CrawlWorkerHighFailureRatio"
                and a["labels"].get("queue") == settings.queue_name
                and a["state"] == "firing"
                for a in alerts
            )

        await wait_for(alert_firing, timeout=20, interval=0.5, what="the failure-ratio alert to fire")

        queries = dashboard_queries()
        assert len(queries) >= 20
        empty: list[str] = []
        for expr in queries:
            result = await asyncio.to_thread(prometheus.query, substitute(expr, settings.queue_name))
            if not result or not finite(result):
                empty.append(expr)
        assert empty == [], f"dashboard queries without data: {empty}"

        queues = await asyncio.to_thread(
            prometheus.get, "/api/v1/label/queue/values", **{"match[]": "crawl_worker_concurrency_slots"}
        )
        assert settings.queue_name in queues
        ratio = await asyncio.to_thread(
            prometheus.query, f'queue:crawl_worker_jobs_failure_ratio:10m{{queue="{settings.queue_name}"}}'
        )
        assert 0.05 < float(ratio[0]["value"][1]) <= 1
