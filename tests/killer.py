"""Kill a running `lookalike index` at a seeded random point of its progress."""

from __future__ import annotations

import json
import signal
import subprocess
import time
from pathlib import Path

import numpy as np


def committed_rows(db: Path) -> int:
    """Rows in the last committed generation (0 if none yet)."""
    try:
        return int(json.loads((db / "manifest.json").read_text())["count"])
    except (OSError, ValueError, KeyError):
        return 0


def run_and_kill(cmd: list[str], env: dict, db: Path, total: int, seed: int, timeout: float = 120) -> dict:
    """Start ``cmd``; once a random share of ``total`` rows is committed, wait a random few ms
    more (so the kill lands in embedding or in the middle of a commit) and SIGKILL it."""
    rng = np.random.default_rng(seed)
    target = int(rng.integers(0, total))
    extra = float(rng.uniform(0, 0.3))
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + timeout
    while proc.poll() is None and committed_rows(db) < target and time.monotonic() < deadline:
        time.sleep(0.01)
    time.sleep(extra)
    finished = proc.poll() is not None
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    return {"target_rows": target, "finished_before_kill": finished, "rows_at_kill": committed_rows(db)}
