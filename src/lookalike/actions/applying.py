"""Doing a plan: re-check each file, journal the action, do it; then the collection follows the files."""

from __future__ import annotations

import errno
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

from .. import storage
from .files import changed, move_file
from .journal import Journal, journal_dir, lock, new_run_id
from .planning import Plan
from .trash import to_trash, trash_names


@dataclass
class RunResult:
    """What :func:`apply_plan` or :func:`undo` did."""

    run: str
    action: str
    done: list[str] = field(default_factory=list)  # paths acted on (or restored)
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (path, reason)
    bytes: int = 0

    def to_dict(self) -> dict:
        """Plain dict (JSON-ready)."""
        return {"run": self.run, "action": self.action, "done": self.done, "bytes": self.bytes,
                "skipped": [{"path": p, "reason": r} for p, r in self.skipped]}


def apply_plan(col, plan: Plan, *, run_id: str | None = None) -> RunResult:
    """Do ``plan``, journaled; then make the collection follow the files.

    Each file (and its keeper) is re-checked against the index first (size, modified time,
    content hash); a changed file is skipped with the reason. The journal line of an action
    is on disk before the action starts.
    """
    run_id = run_id or new_run_id()
    res = RunResult(run_id, plan.action)
    moved: list[tuple[str, str]] = []
    with lock(col.path):
        j = Journal(journal_dir(col.path) / f"{run_id}.jsonl")
        try:
            j.write(op="begin", run=run_id, action=plan.action, to=plan.to, db=str(col.path), steps=len(plan.steps),
                    time=time.time())
            keeper_ok: dict[str, str | None] = {}
            for s in plan.steps:
                if s.keeper not in keeper_ok:
                    why = changed(s.keeper, s.keeper_size, s.keeper_mtime_ns, s.keeper_hash)
                    keeper_ok[s.keeper] = None if why is None else f"its keeper {s.keeper}: {why}"
                why = keeper_ok[s.keeper] or changed(s.path, s.size, s.mtime_ns, s.content_hash)
                if why is None and plan.action == "hardlink" and os.stat(s.path).st_dev != os.stat(s.keeper).st_dev:
                    why = "its keeper is on another file system (use --apply symlink)"
                if why is not None:
                    j.write(op="skip", n=s.n, src=s.path, reason=why)
                    res.skipped.append((s.path, why))
                    continue
                rec = {"op": "intent", "n": s.n, "action": plan.action, "src": s.path, "keeper": s.keeper,
                       "size": s.size, "mtime_ns": s.mtime_ns, "hash": s.content_hash}
                try:
                    if plan.action == "move":
                        rec["dst"] = s.dest
                        if os.path.lexists(s.dest):
                            raise FileExistsError(errno.EEXIST, "the target exists", s.dest)
                        rec["tmp"] = str(Path(s.dest).with_name(f".{Path(s.dest).name}.lookalike-tmp"))
                    elif plan.action in ("trash", "hardlink", "symlink"):
                        rec["trash"], rec["info"] = trash_names(s.path)
                    j.write(**rec)
                    _do(rec)
                except OSError as err:
                    reason = f"{plan.action} failed: {err.strerror or err}"
                    j.write(op="fail", n=s.n, src=s.path, reason=reason)
                    res.skipped.append((s.path, reason))
                    continue
                j.write(op="done", n=s.n)
                res.done.append(s.path)
                res.bytes += s.size
                if plan.action == "move":
                    moved.append((s.path, s.dest))
            j.write(op="end")
        finally:
            j.close()
    _follow(col, plan.action, res.done, [d for _, d in moved])
    return res


def _do(rec: dict) -> None:
    action, src = rec["action"], rec["src"]
    if action == "move":
        Path(rec["dst"]).parent.mkdir(parents=True, exist_ok=True)
        move_file(src, rec["dst"], rec["tmp"])
    elif action == "delete":
        os.unlink(src)
        storage.fsync_dir(Path(src).parent)
    else:
        to_trash(src, rec["trash"], rec["info"])
        if action == "hardlink":
            os.link(rec["keeper"], src)
        elif action == "symlink":
            os.symlink(os.path.abspath(rec["keeper"]), src)
        storage.fsync_dir(Path(src).parent)


def _follow(col, action: str, gone: list[str], new: list[str]) -> None:
    """The collection follows the files: gone paths removed, new ones (and re-linked ones) added."""
    if not gone and not new:
        return
    if action == "move":  # re-pointed: ids and embeddings kept, nothing embedded again
        col.rename(dict(zip(gone, new)))
        return
    col.remove(gone)
    if action in ("hardlink", "symlink") and gone:
        col.add(gone)
