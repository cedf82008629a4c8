"""Node BullMQ 5.56's next-tick arithmetic (worker/queue/repeat.py): every, cron in a zone, limit, endDate,
immediately."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from worker.errors import RepeatError
from worker.queue.repeat import cron_next, next_tick

HOUR = 3_600_000


def _ms(text: str) -> int:
    return int(datetime.fromisoformat(text).timestamp() * 1000)


def test_every_advances_one_slot_from_the_tick_it_replaces() -> None:
    """A tick picked up 40 ms late: the next is one interval after it, delayed by the interval minus nothing lost."""
    tick = _ms("2026-01-01T00:00:03+00:00")
    opts = {"repeat": {"every": 3000, "count": 1}, "prevMillis": tick, "attempts": 3, "jobId": f"repeat:k:{tick}"}
    nxt = next_tick("k", "crawl-x", opts, now_ms=tick + 40)
    assert nxt is not None
    assert nxt.next_millis == tick + 3000
    assert nxt.job_id == f"repeat:k:{tick + 3000}"
    assert nxt.opts["repeat"] == {"every": 3000, "count": 2, "offset": 40}
    assert nxt.opts["delay"] == 3000
    assert (nxt.opts["prevMillis"], nxt.opts["timestamp"], nxt.opts["attempts"]) == (tick + 3000, tick + 40, 3)
    assert nxt.opts["repeatJobKey"] == "k"


def test_a_cron_pattern_is_evaluated_in_its_time_zone() -> None:
    """09:00 in New York is 14:00 UTC in winter and 13:00 UTC in summer."""
    assert cron_next("0 9 * * *", _ms("2026-01-10T12:00:00+00:00"), {"tz": "America/New_York"}) == _ms(
        "2026-01-10T14:00:00+00:00"
    )
    assert cron_next("0 9 * * *", _ms("2026-07-10T12:00:00+00:00"), {"tz": "America/New_York"}) == _ms(
        "2026-07-10T13:00:00+00:00"
    )
    assert cron_next("*/2 * * * * *", _ms("2026-07-10T12:00:00.500+00:00"), {}) == _ms("2026-07-10T12:00:02+00:00")


def test_limit_counts_the_ticks_already_made() -> None:
    """limit 3: the third tick still gets made (count 2 -> 3), the fourth does not."""
    tick = _ms("2026-01-01T00:00:00+00:00")
    base = {"prevMillis": tick}
    assert next_tick("k", "n", {**base, "repeat": {"every": 1000, "limit": 3, "count": 2}}, tick) is not None
    assert next_tick("k", "n", {**base, "repeat": {"every": 1000, "limit": 3, "count": 3}}, tick) is None


def test_end_date_stops_the_schedule() -> None:
    """Past endDate nothing is made; a cron time after endDate is no time at all (cron-parser's range)."""
    now = _ms("2026-03-01T10:00:00+00:00")
    assert next_tick("k", "n", {"repeat": {"every": 1000, "endDate": now - 1}, "prevMillis": now}, now) is None
    iso_end = datetime.fromtimestamp((now + HOUR) / 1000, UTC).isoformat()
    assert next_tick("k", "n", {"repeat": {"pattern": "0 0 * * *", "endDate": iso_end}, "prevMillis": now}, now) is None
    made = next_tick("k", "n", {"repeat": {"pattern": "30 10 * * *", "endDate": iso_end}, "prevMillis": now}, now)
    assert made is not None
    assert made.next_millis == _ms("2026-03-01T10:30:00+00:00")
    assert made.opts["repeat"]["endDate"] == now + HOUR, "stored as epoch milliseconds, as Node stores it"


def test_immediately_makes_the_tick_now_and_is_not_carried_over() -> None:
    """immediately: the next time is now; the option itself is dropped from the tick it makes."""
    now = _ms("2026-03-01T10:00:00.250+00:00")
    made = next_tick("k", "n", {"repeat": {"pattern": "0 0 1 1 *", "immediately": True}}, now)
    assert made is not None
    assert (made.next_millis, made.opts["delay"]) == (now, 0)
    assert "immediately" not in made.opts["repeat"]


@pytest.mark.parametrize(
    ("repeat", "message"),
    [
        ({"every": 1000, "pattern": "* * * * *"}, "both .pattern and .every"),
        ({"tz": "UTC"}, "either .pattern or .every"),
        ({"pattern": "61 * * * *"}, "invalid cron pattern"),
        ({"pattern": "0 9 * * *", "tz": "Mars/Olympus"}, "unknown timezone"),
    ],
)
def test_options_that_cannot_repeat_are_errors(repeat: dict[str, object], message: str) -> None:
    """Node throws on these; the queue adapter logs the error and ends the schedule."""
    with pytest.raises(RepeatError, match=message):
        next_tick("k", "n", {"repeat": repeat}, _ms("2026-01-01T00:00:00+00:00"))


def test_an_every_below_the_minimum_is_computed_as_the_minimum() -> None:
    """every 1 (or true) with a 60 s minimum: the next tick is one minute after the current one, not 1 ms."""
    tick = _ms("2026-01-01T00:00:00+00:00")
    for every in (1, True):
        opts = {"repeat": {"every": every, "count": 1, "offset": 0}, "prevMillis": tick}
        made = next_tick("k", "n", opts, now_ms=tick + 5, min_every_ms=60_000)
        assert made is not None
        assert made.next_millis == tick + 60_000
        assert made.opts["repeat"]["every"] == every, "the schedule is stored as sent"


@pytest.mark.parametrize(
    "repeat", [{"every": "abc"}, {"every": 1e300}, {"every": [1]}, {"pattern": "* * * * *", "tz": 5}]
)
def test_options_bullmq_never_writes_raise_a_repeat_error(repeat: dict[str, object]) -> None:
    """Not a TypeError or OverflowError deep in the arithmetic: a RepeatError that names the option."""
    with pytest.raises(RepeatError, match="job option repeat"):
        next_tick("k", "n", {"repeat": repeat}, 0)
