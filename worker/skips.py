"""Why a crawl did not fetch an item: the fixed set of skip reasons, and the ones that cut a crawl short.

Every URL or file a connector passes over is counted under one of :data:`REASONS` (anything else
becomes ``other``), so the counts can label a metric, fill the job's return value (``skipped``) and
its progress, and still stay bounded. A skip for a reason in :data:`TRUNCATING` means the crawl did
not see everything it was asked to (a budget, a limit or a trap guard cut it): the run's return value
says ``truncated: true`` and one ``crawl.truncated`` warning is logged.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping

from worker.labels import OTHER

#: Skips of things the configuration says not to crawl: expected, not a truncation.
SCOPE = frozenset(
    {
        "out-of-scope:host",
        "out-of-scope:path",
        "excluded:pattern",
        "excluded:not-included",
        "robots:disallowed",
        "blocked:address",
        "invalid-url",
        # filesystem
        "excluded",
        "not-regular",
        "outside-root",
    }
)

#: Skips that cut the crawl short: a budget or limit was reached, a trap guard or a capped wait fired.
TRUNCATING = frozenset(
    {
        "out-of-scope:depth",
        "budget:max-pages",
        "trap:pattern-budget",
        "trap:calendar",
        "trap:query-permutations",
        "trap:session-id",
        "trap:repeated-path-segment",
        "trap:url-too-long",
        "trap:too-deep-path",
        "trap:too-many-query-params",
        "crawl-delay-too-long",
        "retry-after-too-long",
        "too-large",
    }
)

REASONS = SCOPE | TRUNCATING | {OTHER}


def reason(name: str) -> str:
    """``name`` if it is one of :data:`REASONS`, else ``other`` (metric labels stay bounded)."""
    return name if name in REASONS else OTHER


def truncates(counts: Mapping[str, int]) -> bool:
    """Whether skips counted in ``counts`` mean the crawl was cut short."""
    return any(count > 0 and name in TRUNCATING for name, count in counts.items())


def merged(total: Mapping[str, int], step: Mapping[str, int]) -> dict[str, int]:
    """``total`` plus ``step``, reasons bounded, in name order (what a run record and return value hold)."""
    out: Counter[str] = Counter({reason(k): 0 for k in total})
    for name, count in (*total.items(), *step.items()):
        out[reason(name)] += count
    return {name: out[name] for name in sorted(out) if out[name] > 0}


def describe(counts: Mapping[str, int]) -> str:
    """``"3 skipped (robots:disallowed 2, trap:calendar 1)"`` for log lines; ``"0 skipped"`` when none."""
    total = sum(counts.values())
    if not total:
        return "0 skipped"
    parts = ", ".join(f"{name} {count}" for name, count in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))
    return f"{total} skipped ({parts})"
