"""The bare filesystem probe: os.scandir walk + read + SHA-256 of every file; prints JSON.

Usage: ``python -m bench.fs_probe ROOT``. The ceiling the filesystem connector is measured against.
"""

from __future__ import annotations

import hashlib
import json
import os
import resource
import sys
import time


def main(root: str) -> dict[str, float]:
    """Walk, read and hash everything under ``root``."""
    t0 = time.monotonic()
    files = 0
    pending = [root]
    while pending:
        with os.scandir(pending.pop()) as entries:
            for entry in entries:
                if entry.is_dir(follow_symlinks=False):
                    pending.append(entry.path)
                elif entry.is_file(follow_symlinks=False):
                    with open(entry.path, "rb") as fh:
                        hashlib.sha256(fh.read()).hexdigest()
                    files += 1
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"files": files, "seconds": time.monotonic() - t0, "peak_rss_mb": peak_mb}


if __name__ == "__main__":
    print(json.dumps(main(sys.argv[1])))
