"""Settings: one typed object, environment over file over defaults, unknown keys rejected with clear messages."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.proc import run_cli
from worker.errors import ConfigError
from worker.settings import Settings, load


def test_defaults_match_the_producer(monkeypatch: pytest.MonkeyPatch) -> None:
    """With nothing set, the worker serves PipesHub's queue and prefix."""
    for key in [k for k in __import__("os").environ if k.startswith("CRAWL_WORKER_")]:
        monkeypatch.delenv(key)
    settings = load()
    assert settings.queue_name == "crawling-scheduler"
    assert settings.prefix == "bull"
    assert settings.redis_socket_timeout_s > 11, "must outlast bullmq's longest blocking read"


def test_environment_beats_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A CRAWL_WORKER_* variable overrides the same key in the TOML file."""
    config = tmp_path / "w.toml"
    config.write_text('queue_name = "from-file"\nconcurrency = 7\n')
    monkeypatch.setenv("CRAWL_WORKER_QUEUE_NAME", "from-env")
    settings = load(config)
    assert settings.queue_name == "from-env"
    assert settings.concurrency == 7


def test_unknown_file_key_is_an_error(tmp_path: Path) -> None:
    """A misspelled key in the file stops start-up and names the key."""
    config = tmp_path / "w.toml"
    config.write_text("concurrencyy = 3\n")
    with pytest.raises(ConfigError, match="unknown setting 'concurrencyy'"):
        load(config)


def test_unknown_environment_variable_is_an_error(monkeypatch: pytest.MonkeyPatch) -> None:
    """A misspelled CRAWL_WORKER_ variable is reported, not ignored."""
    monkeypatch.setenv("CRAWL_WORKER_CONCURENCY", "3")
    with pytest.raises(ConfigError, match="CRAWL_WORKER_CONCURENCY"):
        load()


def test_invalid_value_names_the_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    """An invalid value says which setting (and its variable) is wrong."""
    monkeypatch.setenv("CRAWL_WORKER_CONCURRENCY", "zero")
    with pytest.raises(ConfigError, match=r"setting concurrency \(CRAWL_WORKER_CONCURRENCY\)"):
        load()


def test_cluster_needs_a_hash_tag_prefix() -> None:
    """Cluster mode without a {hash-tag} prefix is rejected (BullMQ's keys must share a slot)."""
    with pytest.raises(ValueError, match="hash-tag prefix"):
        Settings(redis_cluster=True, prefix="bull")


def test_cli_exits_2_on_invalid_configuration() -> None:
    """The CLI stops with exit code 2 and a message naming the setting."""
    result = run_cli("check", lock_duration_ms="10")
    assert result.returncode == 2
    assert "lock_duration_ms" in result.stderr


def test_the_test_suites_own_redis_variable_is_not_an_unknown_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    """The README tells you to set CRAWL_WORKER_TEST_REDIS_URL for make test: the worker accepts it (and ignores it)."""
    monkeypatch.setenv("CRAWL_WORKER_TEST_REDIS_URL", "redis://127.0.0.1:6399/5")
    assert load().redis_url == "redis://127.0.0.1:6379/0"
    monkeypatch.setenv("CRAWL_WORKER_TEST_REDIS_URLS", "x")  # a near miss is still refused
    with pytest.raises(ConfigError, match="CRAWL_WORKER_TEST_REDIS_URLS"):
        load()
