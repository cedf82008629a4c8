"""`crawl-worker jobs ...`, `schedules ...` and `api` from the command line (real subprocesses)."""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest

from tests.api.conftest import Placed
from tests.proc import run_cli
from worker.settings import Settings


@pytest.mark.slow
def test_jobs_commands_read_and_operate(placed: Placed, make_settings: Callable[..., Settings]) -> None:
    """get / list / retry / promote / pause / resume / export / stats / clean work and print JSON or CSV."""
    s = make_settings()
    env = {"redis_url": s.redis_url, "queue_name": s.queue_name}

    def cli(*args: str) -> str:
        result = run_cli("jobs", *args, **env)
        assert result.returncode == 0, result.stderr
        return result.stdout

    got = json.loads(cli("get", placed.ids["active"]))
    assert got["job"]["state"] == "active"
    assert got["logs"] == ["fetched page 1"]
    page = json.loads(cli("list", "--state", "waiting", "--connector", "web", "--limit", "5"))
    assert [j["id"] for j in page["jobs"]] == [placed.ids["prioritized"]]
    assert json.loads(cli("retry", placed.ids["failed"]))["state"] == "waiting"
    assert json.loads(cli("promote", placed.ids["delayed"]))["state"] == "waiting"
    assert json.loads(cli("pause"))["paused"] is True
    assert json.loads(cli("resume"))["paused"] is False
    csv_text = cli("export", "--format", "csv", "--state", "completed")
    assert csv_text.splitlines()[0].startswith("id,name,state,connector")
    assert csv_text.splitlines()[1].startswith(f"{placed.ids['completed']},crawl-mock-c1,completed,mock")
    assert json.loads(cli("stats", "--period", "7d"))["period"] == "7d"
    assert json.loads(cli("clean", "--state", "completed"))["ids"] == [placed.ids["completed"]]
    missing = run_cli("jobs", "get", "nope", **env)
    assert missing.returncode == 5
    assert "not found" in missing.stderr
    wrong = run_cli("jobs", "retry", placed.ids["active"], **env)
    assert wrong.returncode == 1
    assert "only failed jobs can be retried" in wrong.stderr


@pytest.mark.slow
def test_schedules_commands(make_settings: Callable[..., Settings]) -> None:
    """schedules set / list / remove round-trip through BullMQ job schedulers."""
    s = make_settings()
    env = {"redis_url": s.redis_url, "queue_name": s.queue_name}
    result = run_cli(
        "schedules",
        "set",
        "--connector",
        "web",
        "--connector-id",
        "x1",
        "--org-id",
        "o",
        "--user-id",
        "u",
        "--schedule-config",
        '{"scheduleType":"monthly","dayOfMonth":1,"hour":5}',
        **env,
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["pattern"] == "0 5 1 * *"
    listed = json.loads(run_cli("schedules", "list", **env).stdout)
    assert [x["id"] for x in listed] == ["crawl-web-x1"]
    removed = run_cli("schedules", "remove", "--connector", "web", "--connector-id", "x1", **env)
    assert json.loads(removed.stdout) == {"removed": True}


def test_api_command_refuses_to_start_without_tokens(make_settings: Callable[..., Settings]) -> None:
    """`crawl-worker api` with no token configured exits 2 with a clear message instead of serving open."""
    s = make_settings()
    result = run_cli("api", "--port", "0", redis_url=s.redis_url, queue_name=s.queue_name)
    assert result.returncode == 2
    assert "refusing to serve without auth" in result.stderr
