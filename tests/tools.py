"""The one rule for tests that need an outside tool: skipped on a laptop without it, a failure in CI.

``.ci/run`` installs every tool these tests use, so a CI run (``CI=true``) never skips one.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}


def missing(what: str, install: str) -> None:
    """Skip the test (fail it in CI) because ``what`` is not available; ``install`` says how to get it."""
    message = f"{what} is not installed ({install})"
    if IN_CI:
        pytest.fail(f"{message}; CI=true, so this is an error, not a skip")
    pytest.skip(message)


def need(tool: str, install: str, *, path: Path | None = None) -> str:
    """The path of ``tool`` (on PATH, or at ``path``); see :func:`missing` when it is absent."""
    found = str(path) if path is not None and path.exists() else None if path is not None else shutil.which(tool)
    if found is None:
        missing(tool, install)
    assert found is not None
    return found
