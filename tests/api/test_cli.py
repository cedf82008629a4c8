"""`crawl-worker jobs ...`, `schedules ...` and `api` from the command line (real subprocesses)."""

from __future__ import annotations

import json
import os
import pty
import subprocess
import sys
from collections.abc import Callable
from typing import Any

import pytest

from tests.api.conftest import Placed
from tests.proc import REPO, run_cli, worker_env
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


def on_a_terminal(*args: str, **settings: Any) -> str:
    """stdout of one crawl-worker command whose stdout is a terminal (a pseudo-terminal)."""
    leader, follower = pty.openpty()
    try:
        done = subprocess.run(
            [sys.executable, "-m", "worker", *args],
            env=worker_env(**settings),
            stdout=follower,
            stderr=subprocess.PIPE,
            cwd=REPO,
            timeout=60,
            check=False,
        )
        os.close(follower)
        follower = -1
        chunks = []
        while True:
            try:
                chunk = os.read(leader, 65536)
            except OSError:  # EIO: the terminal's other end is closed and drained
                break
            if not chunk:
                break
            chunks.append(chunk)
    finally:
        if follower >= 0:
            os.close(follower)
        os.close(leader)
    assert done.returncode == 0, done.stderr
    return b"".join(chunks).decode().replace("\r\n", "\n")


@pytest.mark.slow
def test_jobs_list_is_a_table_for_people_and_json_for_programs(
    placed: Placed, make_settings: Callable[..., Settings]
) -> None:
    """On a terminal `jobs list` and `schedules list` print tables; piped, or with --output json, JSON;
    --output table forces the table (they printed JSON everywhere)."""
    s = make_settings()
    env = {"redis_url": s.redis_url, "queue_name": s.queue_name}
    table = on_a_terminal("jobs", "list", "--state", "failed", **env)
    lines = table.splitlines()
    assert lines[0].split()[:3] == ["ID", "STATE", "CONNECTOR"]
    assert lines[1].split()[:4] == [placed.ids["failed"], "failed", "mock", "f1"]
    assert "boom: source unreachable" in lines[1]
    assert lines[-1] == "1-1 of 1 job(s)"
    as_json = json.loads(on_a_terminal("jobs", "list", "--state", "failed", "--output", "json", **env))
    assert [job["id"] for job in as_json["jobs"]] == [placed.ids["failed"]]
    piped = run_cli("jobs", "list", "--state", "failed", **env)
    assert json.loads(piped.stdout)["total"] == 1
    forced = run_cli("jobs", "list", "--state", "failed", "--output", "table", **env)
    assert forced.stdout.splitlines()[0].startswith("ID")
    assert on_a_terminal("schedules", "list", **env).splitlines() == [
        "CONNECTOR  CONNECTOR ID  ORG  PATTERN  TZ  NEXT RUN (UTC)  SCHEDULER ID",
        "0 schedule(s)",
    ]


@pytest.mark.slow
def test_jobs_clean_waiting_cleans_the_waiting_and_prioritized_jobs(
    placed: Placed, make_settings: Callable[..., Settings]
) -> None:
    """`jobs clean --state waiting` (the state `jobs list` shows) deletes waiting and prioritized jobs
    (argparse refused it: BullMQ calls the list `wait`)."""
    s = make_settings()
    result = run_cli("jobs", "clean", "--state", "waiting", redis_url=s.redis_url, queue_name=s.queue_name)
    assert result.returncode == 0, result.stderr
    assert sorted(json.loads(result.stdout)["ids"]) == sorted([placed.ids["waiting"], placed.ids["prioritized"]])
    left = run_cli("jobs", "list", "--state", "waiting", redis_url=s.redis_url, queue_name=s.queue_name)
    assert json.loads(left.stdout)["total"] == 0


@pytest.mark.parametrize(
    ("given", "says"),
    [
        ("daily", '--schedule-config \'daily\' is not JSON; expected e.g. {"scheduleType": "daily"'),
        ('["daily"]', "--schedule-config must be a JSON object"),
        ('{"scheduleType":"sometimes"}', "--schedule-config: scheduleType: Input should be"),
    ],
)
def test_a_schedule_config_that_is_not_one_says_what_is_expected(
    given: str, says: str, make_settings: Callable[..., Settings]
) -> None:
    """A --schedule-config that is not a scheduleConfig object names the expected JSON shape, exit 1 (it said
    only "Expecting value: line 1 column 1")."""
    s = make_settings()
    result = run_cli(
        "schedules", "set", "--connector", "web", "--connector-id", "x1", "--org-id", "o", "--user-id", "u",
        "--schedule-config", given, redis_url=s.redis_url, queue_name=s.queue_name,
    )  # fmt: skip
    assert result.returncode == 1, result.stderr
    assert says in result.stderr
    assert "Traceback" not in result.stderr
