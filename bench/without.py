"""``crawl-worker run`` with one optimisation taken away, to measure what it buys.

Usage: ``python -m bench.without hiredis|autopipeline`` (settings from the environment, as for
``crawl-worker run``). ``hiredis``: redis-py's pure-Python reply parser and command packer.
``autopipeline``: every caller's commands go out in a round trip of their own. (uvloop is a
setting: ``CRAWL_WORKER_EVENT_LOOP=asyncio``.)
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Any


def _unbatched() -> None:
    from worker.connections import AutoPipeline, Command

    async def execute(self: AutoPipeline, commands: Sequence[Command]) -> list[Any]:
        return await self._send_batch([(commands, None)])

    AutoPipeline.execute = execute  # type: ignore[method-assign]


def main(what: str) -> int:
    """Take ``what`` away, then run the worker."""
    if what == "hiredis":
        sys.modules["hiredis"] = None  # type: ignore[assignment]  # redis-py then uses its Python parser and packer
    elif what == "autopipeline":
        _unbatched()
    else:
        raise SystemExit(f"unknown optimisation {what!r} (hiredis, autopipeline)")
    from worker.cli import main as cli

    return cli(["run"])


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
