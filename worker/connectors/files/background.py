"""One daemon thread that runs a connector's blocking file work in order, for the event loop to await.

Not the loop's default executor: asyncio joins the executor's threads at exit, so a read that never
returns (a hung network filesystem) would keep the process alive past its shutdown deadline; a daemon
thread does not. Each piece of work gets a stop event, set when its awaiting task is cancelled, and is
expected to check it between files. The thread lives on between pieces of work (starting a thread per
step costs a wait for the GIL) and ends after ``idle_s`` without work or at :meth:`close`.
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
import threading
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")
Work = Callable[[threading.Event], Any]


class Background:
    """Runs submitted work in one daemon thread named ``name``, one piece after another."""

    def __init__(self, name: str, idle_s: float = 5.0) -> None:
        self.name = name
        self.idle_s = idle_s
        self._queue: queue.SimpleQueue[tuple[Work, threading.Event, asyncio.Future[Any]] | None] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    async def run(self, work: Callable[[threading.Event], T]) -> T:
        """Run ``work(stop)`` in the thread and return its result; cancelling the wait sets ``stop``."""
        future: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        stop = threading.Event()
        self._queue.put((work, stop, future))
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(target=self._serve, name=self.name, daemon=True)
                self._thread.start()
        try:
            return await future
        finally:
            stop.set()

    def close(self) -> None:
        """Let the thread end once the work already submitted is done."""
        self._queue.put(None)

    def _serve(self) -> None:
        while True:
            try:
                item = self._queue.get(timeout=self.idle_s)
            except queue.Empty:
                with self._lock:  # submitters put, then look at the thread under this lock
                    if self._queue.empty():
                        self._thread = None
                        return
                continue
            if item is None:
                with self._lock:
                    if self._queue.empty():
                        self._thread = None
                        return
                continue
            work, stop, future = item
            if stop.is_set():
                continue  # its caller is gone
            try:
                result, error = work(stop), None
            except BaseException as exc:  # handed to the waiting task, raised there
                result, error = None, exc
            with contextlib.suppress(RuntimeError):  # the loop is closed: nobody waits any more
                future.get_loop().call_soon_threadsafe(_deliver, future, result, error)


def _deliver(future: asyncio.Future[Any], result: Any, error: BaseException | None) -> None:
    if future.done():
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)
