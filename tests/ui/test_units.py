"""Pure parts of the dashboard: event messages, reason folding, error class names, formatting."""

from __future__ import annotations

from worker.ui.events import END, QUEUE_DEPTH, Subscription, entry_id, percentage, to_message
from worker.ui.failures import class_name, reason_pattern
from worker.ui.render import duration, instance_of, progress_percent, utf8


def test_event_messages_carry_state_and_progress_but_never_return_values() -> None:
    """progress -> percentage, completed -> 100 without the return value, failed -> a short reason, others dropped."""
    assert to_message({"event": "progress", "jobId": "7", "data": '{"percentage": 12.5, "current": 1}'}) == {
        "event": "progress", "jobId": "7", "state": "active", "progress": 12.5,
    }  # fmt: skip
    done = to_message({"event": "completed", "jobId": "7", "returnvalue": '{"huge": "' + "x" * 10_000 + '"}'})
    assert done == {"event": "completed", "jobId": "7", "state": "completed", "progress": 100.0}
    failed = to_message({"event": "failed", "jobId": "7", "failedReason": "r" * 1000})
    assert failed is not None
    assert failed["reason"] == "r" * 300
    assert to_message({"event": "paused"}) == {"event": "paused", "paused": True}
    assert to_message({"event": "drained"}) is None
    assert to_message({"event": "progress", "jobId": "7", "data": "not json"}) is None


def test_percentages_of_every_progress_shape() -> None:
    """Numbers are clamped to 0-100, objects give their percentage, anything else none."""
    assert percentage(42) == 42.0
    assert percentage(140) == 100.0
    assert percentage({"percentage": 3}) == 3.0
    assert percentage({"current": 3}) is None
    assert percentage(True) is None
    assert progress_percent(None) is None


def test_only_stream_ids_are_accepted_as_resume_points() -> None:
    """Last-Event-ID / since must look like a stream entry id, else the stream starts from now."""
    assert entry_id("1700000000000-3") == "1700000000000-3"
    assert entry_id("$") is None
    assert entry_id("0-0; DROP") is None


def test_reasons_fold_per_job_parts_but_keep_status_codes() -> None:
    """Quoted names, hex ids and long numbers fold; short numbers such as HTTP statuses stay."""
    one = reason_pattern("connectorId 'site-1' is not configured in config/catalog.toml (3 instance(s) configured)")
    two = reason_pattern("connectorId 'site-2' is not configured in config/catalog.toml (3 instance(s) configured)")
    assert one == two
    assert reason_pattern("job 507f1f77bcf86cd799439011 timed out after 120000 ms") == "job … timed out after N ms"
    assert reason_pattern("HTTP 503 from x") != reason_pattern("HTTP 404 from x")
    assert class_name("worker.errors.CredentialsError") == "CredentialsError"
    assert class_name("") == "(no stack trace)"


def test_formatting_helpers() -> None:
    """Durations pick a readable unit; job data of any shape yields its instance fields as text."""
    assert duration(250) == "250 ms"
    assert duration(90_000) == "1.5 min"
    assert duration(None) == ""
    assert instance_of({"connector": "web", "connectorId": 5}) == {"connector": "web", "connectorId": "5", "orgId": ""}
    assert instance_of("garbage") == {"connector": "", "connectorId": "", "orgId": ""}


async def test_a_stream_too_far_behind_is_ended_not_grown() -> None:
    """A subscription whose browser reads slower than events arrive is ended (its browser resumes from its
    last id) instead of queueing without bound; what it queued comes first, the end marker last."""
    sub = Subscription("session")
    for n in range(QUEUE_DEPTH + 5):
        sub.put((f"{n}-0", {"event": "progress"}))
    assert sub.ended
    assert sub.queue.qsize() == QUEUE_DEPTH + 1
    items = [sub.queue.get_nowait() for _ in range(QUEUE_DEPTH + 1)]
    assert [ident for ident, _ in items[:-1]] == [f"{n}-0" for n in range(QUEUE_DEPTH)]
    assert items[-1] == END


def test_utf8_replaces_what_redis_could_not_decode() -> None:
    """Bytes that were not UTF-8 (read as surrogates) become U+FFFD; valid text is unchanged."""
    assert utf8("café") == "café".encode()
    assert utf8(b"caf\xe9 \xff".decode("utf-8", "surrogateescape")) == "caf\ufffd \ufffd".encode()
    assert utf8("a\ud800b") == "a\ufffdb".encode()
