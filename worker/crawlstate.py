"""A run's crawl state beyond its checkpoint: named sets, queues and maps that grow with the crawl.

A connector's checkpoint holds cursors and counters; what grows with the work (a web crawl's
frontier and seen set, page states, a filesystem crawl's file states) lives in structures of its
own, stored incrementally. A step returns the *changes* it made (:class:`StateChanges`); the runner
writes them in the same fenced call as the checkpoint, so a step's state and its checkpoint commit
together or not at all, and a step costs what it changed, not the size of the crawl.

A connector reads its stored state through :class:`RunData` (the runner binds a Redis-backed one,
``worker.rundata``): once when an attempt resumes, and the previous completed run's maps for
incremental re-crawls. :class:`MemoryRunData` keeps it in memory, for a connector run on its own
(tests, benchmarks). Three kinds of structure, by the name a connector gives them:

- a *set* (``add``): members only ever added;
- a *queue* (``push`` / ``push_front`` / ``pop`` / ``clear``): a list consumed from the front;
- a *map* (``put`` / ``incr``): field -> value (or counter).

Names a connector lists in ``Connector.carried`` are maps kept after the run completes, for the next
run to read as ``previous``; everything else is deleted when the run ends.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

#: Operation codes, as the commit script knows them (``worker.runs``).
ADD, PUSH, PUSH_FRONT, POP, CLEAR, PUT, INCR = "sadd", "rpush", "lpush", "pop", "del", "hset", "incr"


@dataclass
class StateOp:
    """One change to one named structure; ``args`` are members, items or field/value pairs."""

    code: str
    name: str
    args: list[str] = field(default_factory=list)


class StateChanges:
    """What one step changed in its run's stored state, in order; consecutive changes of a kind merge."""

    def __init__(self) -> None:
        self.ops: list[StateOp] = []
        #: UTF-8 bytes added (members, items, fields and values): what the run's state cap counts.
        self.size = 0

    def __bool__(self) -> bool:
        return bool(self.ops)

    def _extend(self, code: str, name: str, args: Iterable[str]) -> None:
        values = list(args)
        if not values:
            return
        # bytes as Redis stores them: a character each for ASCII (no copy), the encoded length otherwise
        self.size += sum(map(len, values)) + sum(len(v.encode()) - len(v) for v in values if not v.isascii())
        last = self.ops[-1] if self.ops else None
        if last is not None and last.code == code and last.name == name:
            if code == PUSH_FRONT:
                last.args[:0] = values
            else:
                last.args.extend(values)
            return
        self.ops.append(StateOp(code, name, values))

    def add(self, name: str, members: Iterable[str]) -> None:
        """Add ``members`` to the set ``name``."""
        self._extend(ADD, name, members)

    def push(self, name: str, items: Iterable[str]) -> None:
        """Append ``items`` to the queue ``name``."""
        self._extend(PUSH, name, items)

    def push_front(self, name: str, items: Sequence[str]) -> None:
        """Put ``items`` back at the front of the queue ``name``, in their order."""
        self._extend(PUSH_FRONT, name, items)

    def pop(self, name: str, count: int) -> None:
        """Drop the first ``count`` items of the queue ``name``."""
        if count > 0:
            self.ops.append(StateOp(POP, name, [str(count)]))

    def clear(self, name: str) -> None:
        """Empty the structure ``name``."""
        self.ops.append(StateOp(CLEAR, name))

    def put(self, name: str, values: Mapping[str, str]) -> None:
        """Set fields of the map ``name``."""
        self._extend(PUT, name, (item for pair in values.items() for item in pair))

    def incr(self, name: str, counts: Mapping[str, int]) -> None:
        """Add to counters of the map ``name``."""
        self._extend(INCR, name, (item for key, n in counts.items() for item in (key, str(n))))

    def names(self) -> set[str]:
        """The structures these changes touch."""
        return {op.name for op in self.ops}


class RunData(Protocol):
    """What a connector can read of its run's stored state (and of the previous completed run's maps)."""

    async def members(self, name: str) -> set[str]:
        """Every member of the set ``name``."""

    async def items(self, name: str) -> list[str]:
        """The queue ``name``, front first."""

    async def mapping(self, name: str) -> dict[str, str]:
        """The whole map ``name`` (for maps that stay small, e.g. counters)."""

    async def fields(self, name: str) -> list[str]:
        """The field names of the map ``name``."""

    async def get(self, name: str, keys: Sequence[str], *, previous: bool = False) -> list[str | None]:
        """Values of ``keys`` in the map ``name`` (of the previous completed run with ``previous``)."""

    def scan(self, name: str, *, previous: bool = False) -> AsyncIterator[list[tuple[str, str]]]:
        """The map ``name`` in chunks of (field, value) pairs."""


class MemoryRunData:
    """Run data kept in memory: a connector on its own (tests, benchmarks) and the reference semantics."""

    def __init__(self, carried: Iterable[str] = ()) -> None:
        self.carried = frozenset(carried)
        self.sets: dict[str, set[str]] = {}
        self.queues: dict[str, list[str]] = {}
        self.maps: dict[str, dict[str, str]] = {}
        self.previous: dict[str, dict[str, str]] = {}

    def apply(self, changes: StateChanges) -> None:
        """Apply a step's changes (what the runner's commit does in Redis)."""
        for op in changes.ops:
            if op.code == ADD:
                self.sets.setdefault(op.name, set()).update(op.args)
            elif op.code == PUSH:
                self.queues.setdefault(op.name, []).extend(op.args)
            elif op.code == PUSH_FRONT:
                self.queues.setdefault(op.name, [])[:0] = op.args
            elif op.code == POP:
                del self.queues.setdefault(op.name, [])[: int(op.args[0])]
            elif op.code == CLEAR:
                self.sets.pop(op.name, None)
                self.queues.pop(op.name, None)
                self.maps.pop(op.name, None)
            elif op.code == PUT:
                target = self.maps.setdefault(op.name, {})
                target.update(zip(op.args[::2], op.args[1::2], strict=True))
            elif op.code == INCR:
                counters = self.maps.setdefault(op.name, {})
                for key, n in zip(op.args[::2], op.args[1::2], strict=True):
                    counters[key] = str(int(counters.get(key, "0")) + int(n))

    def complete(self) -> None:
        """The run completed: its carried maps become the previous run's, the rest is dropped."""
        self.previous = {name: value for name, value in self.maps.items() if name in self.carried}
        self.sets, self.queues, self.maps = {}, {}, {}

    async def members(self, name: str) -> set[str]:
        """Every member of the set ``name``."""
        return set(self.sets.get(name, ()))

    async def items(self, name: str) -> list[str]:
        """The queue ``name``, front first."""
        return list(self.queues.get(name, ()))

    async def mapping(self, name: str) -> dict[str, str]:
        """The whole map ``name``."""
        return dict(self.maps.get(name, {}))

    async def fields(self, name: str) -> list[str]:
        """The field names of the map ``name``."""
        return list(self.maps.get(name, {}))

    async def get(self, name: str, keys: Sequence[str], *, previous: bool = False) -> list[str | None]:
        """Values of ``keys`` in the map ``name``."""
        source = (self.previous if previous else self.maps).get(name, {})
        return [source.get(key) for key in keys]

    async def scan(self, name: str, *, previous: bool = False) -> AsyncIterator[list[tuple[str, str]]]:
        """The map ``name`` in chunks."""
        pairs = list((self.previous if previous else self.maps).get(name, {}).items())
        for start in range(0, len(pairs), 1000):
            yield pairs[start : start + 1000]
