"""The container health probe: ``python -m worker.probe [--ready]`` asks this worker's own ``/healthz``
(or ``/readyz``) on the *configured* metrics port and exits 0 (healthy) or 1.

It reads the same Settings as the worker (file and ``CRAWL_WORKER_*`` variables), so a changed
``metrics_port`` moves the probe with it; it imports nothing but the settings, so a probe every few
seconds costs a short interpreter start, not the whole worker.
"""

from __future__ import annotations

import argparse
import sys
import urllib.error
import urllib.request
from collections.abc import Sequence

from worker.errors import ConfigError
from worker.settings import Settings, load

#: Bind-all addresses: the probe asks loopback instead.
_ANY = {"0.0.0.0", "::", ""}  # noqa: S104 - compared with, never bound


def probe_url(settings: Settings, *, ready: bool) -> str:
    """Where this worker answers its probes."""
    host = settings.metrics_host
    host = "127.0.0.1" if host in _ANY else host
    host = f"[{host}]" if ":" in host else host
    return f"http://{host}:{settings.metrics_port}/{'readyz' if ready else 'healthz'}"


def main(argv: Sequence[str] | None = None) -> int:
    """Exit 0 when the probe answers 200 within the timeout, 1 otherwise (reason on stderr)."""
    parser = argparse.ArgumentParser(prog="python -m worker.probe", description=__doc__.splitlines()[0])
    parser.add_argument("--ready", action="store_true", help="ask /readyz instead of /healthz")
    parser.add_argument("--timeout", type=float, default=2.0, help="seconds (default 2)")
    args = parser.parse_args(argv)
    try:
        settings = load()
    except ConfigError as exc:
        print(f"probe: {exc}", file=sys.stderr)
        return 1
    if not settings.metrics_enabled:
        print("probe: metrics_enabled is false: no probe port to ask", file=sys.stderr)
        return 1
    url = probe_url(settings, ready=args.ready)
    try:
        with urllib.request.urlopen(url, timeout=args.timeout) as answer:  # noqa: S310 - our own loopback URL
            return 0 if answer.status == 200 else 1
    except (urllib.error.URLError, OSError) as exc:
        print(f"probe: {url}: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
