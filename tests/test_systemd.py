"""sd_notify: a real unix datagram socket plays systemd for a real worker process."""

from __future__ import annotations

import asyncio
import itertools
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.proc import REPO, Processes, worker_env, write_catalog
from tests.redis_server import free_port
from worker.settings import Settings, systemd_environment
from worker.systemd import Notifier


class FakeSystemd:
    """The manager side of NOTIFY_SOCKET: collects every datagram with its arrival time."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.sock.settimeout(0.1)
        self.messages: list[tuple[float, dict[str, str]]] = []

    def pump(self) -> None:
        """Read every datagram waiting now."""
        while True:
            try:
                data = self.sock.recv(4096)
            except TimeoutError:
                return
            fields = dict(line.split("=", 1) for line in data.decode().splitlines() if "=" in line)
            self.messages.append((time.monotonic(), fields))

    def collect(self, seconds: float) -> None:
        """Read datagrams as they arrive for ``seconds``."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            self.pump()

    def wait_for(self, key: str, timeout: float = 20.0) -> dict[str, str]:
        """The first message that sets ``key`` (waits for it)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for _, fields in self.messages:
                if key in fields:
                    return fields
            self.pump()
        raise AssertionError(f"no {key} within {timeout}s; got {[m for _, m in self.messages]}")

    def sent(self) -> list[str]:
        """Every key received, in order."""
        return [key for _, fields in self.messages for key in fields]


@pytest.fixture
def fake_systemd(tmp_path: Path) -> Iterator[FakeSystemd]:
    """A bound notify socket, closed afterwards."""
    manager = FakeSystemd(tmp_path / "notify.sock")
    yield manager
    manager.sock.close()


def _start(
    processes: Processes, tmp_path: Path, notify: Path, watchdog_usec: int, **settings: object
) -> subprocess.Popen[bytes]:
    env = worker_env(log_format="json", metrics_enabled=False, **settings)
    env["NOTIFY_SOCKET"] = str(notify)
    env["WATCHDOG_USEC"] = str(watchdog_usec)
    env.pop("WATCHDOG_PID", None)
    return processes.start([sys.executable, "-m", "worker", "run"], log_path=tmp_path / "worker.log", env=env, cwd=REPO)


@pytest.mark.slow
async def test_ready_watchdog_and_stopping(
    make_settings: Callable[..., Settings], tmp_path: Path, fake_systemd: FakeSystemd, processes: Processes
) -> None:
    """STATUS while connecting, READY=1 once consuming, WATCHDOG=1 at half the period, STOPPING=1 on SIGTERM."""
    settings = make_settings()
    catalog = write_catalog(tmp_path / "catalog.toml", {"m": {"connector": "mock", "config": {"items": 1}}})
    proc = _start(
        processes,
        tmp_path,
        fake_systemd.path,
        400_000,
        redis_url=settings.redis_url,
        queue_name=settings.queue_name,
        catalog_file=catalog,
        data_dir=tmp_path / "data",
    )
    ready = await asyncio.to_thread(fake_systemd.wait_for, "READY")
    assert ready["READY"] == "1"
    assert settings.queue_name in ready["STATUS"]
    assert fake_systemd.sent()[0] == "STATUS", "a status line comes before READY"
    await asyncio.to_thread(fake_systemd.collect, 1.2)
    pings = [at for at, fields in fake_systemd.messages if "WATCHDOG" in fields]
    assert len(pings) >= 4, f"expected a ping every 0.2 s, got {len(pings)}"
    assert max(b - a for a, b in itertools.pairwise(pings)) < 0.4
    proc.send_signal(signal.SIGTERM)
    stopping = await asyncio.to_thread(fake_systemd.wait_for, "STOPPING")
    assert stopping["STATUS"].startswith("draining")
    assert await asyncio.to_thread(proc.wait, 30) == 0


@pytest.mark.slow
async def test_no_ready_while_redis_unreachable(
    make_settings: Callable[..., Settings], tmp_path: Path, fake_systemd: FakeSystemd, processes: Processes
) -> None:
    """With Redis down the worker never claims READY and exits 3 (so Restart=on-failure retries it)."""
    settings = make_settings()
    catalog = write_catalog(tmp_path / "catalog.toml", {})
    proc = _start(
        processes,
        tmp_path,
        fake_systemd.path,
        0,
        redis_url=f"redis://127.0.0.1:{free_port()}/0",
        redis_startup_timeout_s=1,
        queue_name=settings.queue_name,
        catalog_file=catalog,
    )
    assert await asyncio.to_thread(proc.wait, 30) == 3
    fake_systemd.pump()
    assert "READY" not in fake_systemd.sent()
    assert "STATUS" in fake_systemd.sent()


def test_abstract_socket_and_no_socket(tmp_path: Path) -> None:
    """An ``@name`` socket is the abstract namespace; without NOTIFY_SOCKET nothing is sent."""
    name = f"crawl-worker-test-{tmp_path.name}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind("\0" + name)
        sock.settimeout(2)
        assert Notifier(f"@{name}").status("hello")
        assert sock.recv(100) == b"STATUS=hello"
    assert not Notifier(None).notify("READY=1")
    assert not Notifier(str(tmp_path / "missing.sock")).notify("READY=1"), "a dead socket is reported, not raised"


def test_systemd_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """WATCHDOG_USEC applies only when WATCHDOG_PID is absent or names this process."""
    monkeypatch.setenv("NOTIFY_SOCKET", "/run/x.sock")
    monkeypatch.setenv("WATCHDOG_USEC", "30000000")
    monkeypatch.delenv("WATCHDOG_PID", raising=False)
    assert systemd_environment().watchdog_usec == 30_000_000
    monkeypatch.setenv("WATCHDOG_PID", "1")
    assert systemd_environment().watchdog_usec == 0
    monkeypatch.delenv("NOTIFY_SOCKET")
    assert systemd_environment().notify_socket is None
