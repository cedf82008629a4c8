"""The vendored Lua is the npm package's, byte for byte: worker/queue/lua/update_job_scheduler_5_56.lua against the
script inside the ``bullmq@5.56.1`` the interop tests install (``bullmq5``), read through Node as BullMQ
loads it. A hand edit of either copy, or a different npm version, fails here."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from tests.interop.pipeshub import HERE, node_binary

pytestmark = pytest.mark.node

VENDORED = Path(__file__).resolve().parents[2] / "worker" / "queue" / "lua" / "update_job_scheduler_5_56.lua"
LOAD = """
const pkg = require('./node_modules/bullmq5/package.json');
const mod = require('./node_modules/bullmq5/dist/cjs/scripts/updateJobScheduler-12.js');
const script = Object.values(mod)[0];
process.stdout.write(JSON.stringify({version: pkg.version, name: script.name, keys: script.keys,
                                     content: script.content}));
"""


def _vendored_body() -> str:
    """The vendored file without its leading licence/provenance comment."""
    text = VENDORED.read_text()
    assert text.startswith("--[[")
    assert "5.56.1" in text.split("]]", 1)[0], "the header names the npm version"
    return text.split("]]\n", 1)[1]


def test_the_vendored_update_job_scheduler_is_npm_bullmq_5_56_1s() -> None:
    done = subprocess.run([node_binary(), "-e", LOAD], cwd=HERE, capture_output=True, text=True, timeout=60, check=True)
    npm = json.loads(done.stdout)
    assert npm["version"] == "5.56.1"
    assert (npm["name"], npm["keys"]) == ("updateJobScheduler", 12)
    assert _vendored_body().strip() == npm["content"].strip(), (
        "worker/queue/lua/update_job_scheduler_5_56.lua differs from npm bullmq@5.56.1's updateJobScheduler-12: "
        "re-vendor it (includes inlined) and re-run tests/test_repeat.py"
    )
