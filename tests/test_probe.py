"""``python -m worker.probe``: the container health check asks the configured port, not a fixed one."""

from __future__ import annotations

import http.server
import threading
from collections.abc import Iterator

import pytest

from worker import probe


class _Answers(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(200 if self.path == "/healthz" else 503)
        self.end_headers()

    def log_message(self, *_: object) -> None:
        return None


@pytest.fixture
def ops_port() -> Iterator[int]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Answers)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_address[1]
    server.shutdown()
    server.server_close()


def test_the_probe_asks_the_configured_metrics_port(ops_port: int, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CRAWL_WORKER_METRICS_PORT", str(ops_port))
    assert probe.main([]) == 0
    assert probe.main(["--ready"]) == 1  # this server's /readyz answers 503


def test_the_probe_fails_where_nothing_answers(ops_port: int, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CRAWL_WORKER_METRICS_PORT", str(ops_port + 1 if ops_port < 65535 else ops_port - 1))
    assert probe.main(["--timeout", "0.5"]) == 1


def test_the_probe_refuses_bad_settings(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("CRAWL_WORKER_METRICS_PORT", "not-a-port")
    assert probe.main([]) == 1
    assert "metrics_port" in capsys.readouterr().err
