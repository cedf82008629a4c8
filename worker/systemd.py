"""systemd service notification (``Type=notify``): READY, STOPPING, WATCHDOG and STATUS.

The protocol (sd_notify(3)) is one datagram of ``KEY=VALUE`` lines to the unix socket named by
``$NOTIFY_SOCKET`` (a leading ``@`` means the abstract namespace). We speak it directly in a few
lines rather than depend on a library: ``sdnotify`` on PyPI was last released in 2017 and swallows
every error, and ``systemd-python`` is a C extension that needs libsystemd headers to build, which
the slim container image must not carry. Neither adds anything the datagram below does not do.

Without ``$NOTIFY_SOCKET`` (not under systemd, or ``Type=simple``) every call is a no-op.
``settings.systemd_environment()`` reads the variables, so Settings stays the only env reader.
"""

from __future__ import annotations

import asyncio
import socket
from dataclasses import dataclass

from worker.app import App
from worker.logs import get_logger
from worker.settings import SystemdEnvironment

log = get_logger(__name__)


@dataclass
class Notifier:
    """Sends sd_notify messages; a no-op when ``socket_path`` is None."""

    socket_path: str | None = None
    watchdog_usec: int = 0

    @classmethod
    def from_environment(cls, env: SystemdEnvironment) -> Notifier:
        """A notifier for what systemd passed to this process."""
        return cls(socket_path=env.notify_socket, watchdog_usec=env.watchdog_usec)

    @property
    def enabled(self) -> bool:
        """True when running under a notify-aware service manager."""
        return bool(self.socket_path)

    def notify(self, *lines: str) -> bool:
        """Send ``lines`` as one datagram; False (and a warning) if it could not be delivered."""
        if not self.socket_path:
            return False
        address = "\0" + self.socket_path[1:] if self.socket_path.startswith("@") else self.socket_path
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
                sock.sendto("\n".join(lines).encode(), address)
        except OSError as exc:
            log.warning("systemd.notify_failed", error=str(exc))
            return False
        return True

    def status(self, text: str) -> bool:
        """Set the one-line status ``systemctl status`` shows."""
        return self.notify(f"STATUS={text}")

    async def watchdog(self) -> None:
        """Ping the watchdog at half of ``WatchdogSec`` from the event loop until cancelled.

        A blocked event loop stops the pings, so systemd restarts a hung worker.
        """
        if not self.socket_path or self.watchdog_usec <= 0:
            return
        interval = self.watchdog_usec / 2_000_000
        while True:
            self.notify("WATCHDOG=1")
            await asyncio.sleep(interval)


def attach(app: App, notifier: Notifier) -> None:
    """Report ``app``'s lifecycle to systemd: READY once consuming, STOPPING when the drain starts."""
    if not notifier.enabled:
        return
    tasks: set[asyncio.Task[None]] = set()
    notifier.status("starting: connecting to Redis")

    async def started(started_app: App) -> None:
        s = started_app.settings
        notifier.notify(
            "READY=1", f"STATUS=consuming queue {s.queue_name!r} as {s.worker_name} (concurrency {s.concurrency})"
        )
        task = asyncio.create_task(notifier.watchdog(), name="systemd-watchdog")
        tasks.add(task)  # cancelled by asyncio.run when the process ends; keeps pinging through the drain
        task.add_done_callback(tasks.discard)

    async def draining(draining_app: App) -> None:
        active = draining_app.queue_worker.active if draining_app.queue_worker else 0
        notifier.notify("STOPPING=1", f"STATUS=draining: {active} active job(s)")

    app.on_started.append(started)
    app.on_draining.append(draining)
