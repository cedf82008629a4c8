"""Progress: throttled, monotonic, never 100 before done, object or number."""

from __future__ import annotations

from typing import Any

from worker.progress import ProgressReporter


class Clock:
    """A manual clock."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


async def test_throttles_to_one_write_per_interval_plus_first_and_last() -> None:
    """Reports in the first second write nothing, one after it writes, and finish returns the last value."""
    writes: list[Any] = []

    async def write(value: Any) -> None:
        writes.append(value)

    clock = Clock()
    reporter = ProgressReporter(write, interval_s=1.0, clock=clock)
    for i in range(10):
        clock.now = i * 0.05
        await reporter.report(i, 100)
    assert writes == []
    clock.now = 1.2
    await reporter.report(50, 100)
    clock.now = 1.3
    await reporter.report(60, 100)
    final = reporter.finish(100)
    assert [w["percentage"] for w in writes] == [50.0]
    assert final == reporter.final
    assert isinstance(final, dict)
    assert final["percentage"] == 100.0


async def test_never_reports_100_before_finish_and_never_goes_back() -> None:
    """current == total still reads 99 until finish; a smaller later estimate does not lower it."""
    writes: list[Any] = []

    async def write(value: Any) -> None:
        writes.append(value)

    reporter = ProgressReporter(write, interval_s=0)
    await reporter.report(10, 10)
    await reporter.report(10, 40)  # the total estimate grew
    assert [w["percentage"] for w in writes] == [99.0, 99.0]
    final = reporter.finish(40)
    assert isinstance(final, dict)
    assert final["percentage"] == 100.0


async def test_number_format_and_floor_from_an_earlier_attempt() -> None:
    """Number format writes plain numbers; a resumed run starts at its previous percentage."""
    writes: list[Any] = []

    async def write(value: Any) -> None:
        writes.append(value)

    reporter = ProgressReporter(write, fmt="number", interval_s=0)
    reporter.raise_floor(42.0)
    await reporter.report(1, 100)
    assert writes == [42.0]
