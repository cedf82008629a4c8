"""What a crawl skipped, as Node tooling sees it: getJob's return value and progress, getJobLogs' lines."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from bullmq import Queue

from tests.connectors.test_traps import crawl_trap_site
from tests.interop.test_node_interop import node, node_call
from worker.settings import Settings

pytestmark = pytest.mark.node
__all__ = ["node"]  # the fixture, shared with the wire-compatibility tests


async def test_node_sees_the_skips_of_a_trap_crawl(
    node: str, make_settings: Callable[..., Settings], queue: Queue
) -> None:
    """Node's getJob and getJobLogs show the same skip counts the Python side returned, and truncated."""
    settings = make_settings(progress_interval_s=0)
    job_id, _ = await crawl_trap_site(settings, queue)
    seen = node_call(node, settings, "inspect", job_id)[job_id]
    result = seen["returnvalue"]
    assert seen["state"] == "completed"
    assert result["truncated"] is True
    assert {"trap:calendar", "trap:session-id", "trap:repeated-path-segment", "trap:query-permutations"} <= set(
        result["skipped"]
    )
    assert seen["progress"]["skipped"] == result["skipped"]
    (line,) = seen["logs"]
    for reason, count in result["skipped"].items():
        assert f"{reason} {count}" in line
    assert "truncated" in line
