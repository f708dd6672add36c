"""The write-ahead journal of runs: ``<db>/journal/RUN_ID.jsonl``, run ids, the list of runs, the run lock.

One fsync'd JSON line per event, written *before* the event's action starts; a line cut by
a kill is passed over on reading (its action was never started).
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from .. import storage

JOURNAL_DIR = "journal"


class Journal:
    """Append-only JSON lines, each flushed and fsync'd before the caller goes on."""

    def __init__(self, path: Path):
        self.path = path
        cut = path.exists() and path.stat().st_size and not path.read_bytes().endswith(b"\n")
        self.f = open(path, "ab")
        if cut:  # a line cut by a kill: end it, so the next line stands alone
            self.f.write(b"\n")
        storage.fsync_dir(path.parent)

    def write(self, **rec) -> None:
        """Append one record; it is on disk when this returns."""
        self.f.write((json.dumps(rec, sort_keys=True) + "\n").encode())
        self.f.flush()
        os.fsync(self.f.fileno())

    def close(self) -> None:
        """Close the file (every record is on disk already)."""
        self.f.close()


def journal_dir(db: str | os.PathLike) -> Path:
    """The folder of the run journals in collection ``db``."""
    return Path(db) / JOURNAL_DIR


def read_journal(path: Path) -> list[dict]:
    """The records of the journal at ``path``, in order."""
    recs = []
    for line in path.read_bytes().splitlines():
        try:
            recs.append(json.loads(line))
        except ValueError:
            continue  # a line cut by a kill mid-write: its action was never started
    return recs


def runs(db: str | os.PathLike) -> list[dict]:
    """The runs journaled in ``db``, oldest first: run id, action, files done, undone or not."""
    out = []
    folder = journal_dir(db)
    for p in sorted(folder.glob("*.jsonl")) if folder.is_dir() else []:
        recs = read_journal(p)
        begin = next((r for r in recs if r.get("op") == "begin"), {})
        out.append({"run": p.stem, "action": begin.get("action"), "to": begin.get("to"),
                    "done": sum(r.get("op") == "done" for r in recs),
                    "finished": any(r.get("op") == "end" for r in recs),
                    "undone": any(r.get("op") == "undo_end" for r in recs)})
    return out


def lock(db):
    """The lock of runs on ``db``: one run or undo at a time (a ``store.Lock`` on the journal folder)."""
    from ..collection import store

    folder = journal_dir(db)
    if not folder.is_dir():
        folder.mkdir()
        storage.fsync_dir(Path(db))
    return store.Lock(folder, wait=False)


def new_run_id() -> str:
    """A run id that sorts by time: ``20261127T105300.123456Z-3fa2c1``."""
    ns = time.time_ns()
    stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime(ns // 10**9))
    return f"{stamp}.{ns // 1000 % 10**6:06d}Z-{os.urandom(3).hex()}"
