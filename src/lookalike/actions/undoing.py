"""Undo: restore a run's files from what the journal says and what is on disk (killed runs included)."""

from __future__ import annotations

import os
import time
from pathlib import Path

from .. import storage
from .applying import RunResult
from .errors import ActionError
from .files import move_file, same_file
from .journal import Journal, journal_dir, lock, read_journal, runs
from .trash import info_names


def undo(col, run_id: str | None = None) -> RunResult:
    """Restore the files of run ``run_id`` (default: the last run not undone yet).

    Works on a run killed at any moment, and on an undo killed part way (run it again).
    Deleted files cannot come back: they are listed as skipped.
    """
    all_runs = runs(col.path)
    if run_id is None:
        left = [r for r in all_runs if not r["undone"]]
        if not left:
            raise ActionError(f"No run to undo in {col.path} (every journaled run is undone already).")
        run_id = left[-1]["run"]
    path = journal_dir(col.path) / f"{run_id}.jsonl"
    if not path.exists():
        known = ", ".join(r["run"] for r in all_runs[-5:]) or "none"
        raise ActionError(f"No run {run_id!r} in {col.path}; the last runs are: {known}")
    recs = read_journal(path)
    begin = next((r for r in recs if r.get("op") == "begin"), {})
    failed = {r["n"] for r in recs if r.get("op") == "fail"}
    intents = [r for r in recs if r.get("op") == "intent" and r["n"] not in failed]
    res = RunResult(run_id, "undo " + str(begin.get("action")))
    restored, gone = [], []
    with lock(col.path):
        j = Journal(path)
        try:
            j.write(op="undo_begin", time=time.time())
            for rec in reversed(intents):
                try:
                    why = _undo_one(rec)
                except OSError as err:
                    why = f"cannot restore: {err.strerror or err}"
                if why is None:
                    j.write(op="undone", n=rec["n"])
                    res.done.append(rec["src"])
                    res.bytes += rec["size"]
                    restored.append(rec["src"])
                    if rec.get("dst"):
                        gone.append(rec["dst"])
                elif why:
                    j.write(op="undo_skip", n=rec["n"], reason=why)
                    res.skipped.append((rec["src"], why))
            if begin.get("to"):
                _prune_empty(begin["to"], [r["dst"] for r in intents if r.get("dst")])
            j.write(op="undo_end")
        finally:
            j.close()
    if gone or restored:
        back = {rec["dst"]: rec["src"] for rec in intents if rec.get("dst") and rec["src"] in set(restored)}
        col.rename(back)  # moved files: re-pointed to where they were
        col.remove([g for g in gone if g not in back])
        col.add([r for r in restored if r not in set(back.values())])
    return res


def _undo_one(rec: dict) -> str | None:
    """Restore one journaled action from what is on disk; None when restored, "" when nothing was done."""
    action, src = rec["action"], rec["src"]
    if action == "delete":
        return "" if os.path.lexists(src) else "deleted: deletes are final"
    if action == "move":
        dst, tmp = rec["dst"], rec.get("tmp")
        if tmp and os.path.lexists(tmp):
            os.unlink(tmp)
        has_src, has_dst = os.path.lexists(src), os.path.lexists(dst)
        if has_dst and has_src:  # killed between link and unlink (or copy and unlink): the source is intact
            os.unlink(dst)
            storage.fsync_dir(Path(dst).parent)
            return None
        if has_dst:
            Path(src).parent.mkdir(parents=True, exist_ok=True)
            move_file(dst, src, str(Path(src).with_name(f".{Path(src).name}.lookalike-tmp")))
            return None
        return "" if has_src else "missing from both its old and its new place"
    trash, info = rec["trash"], rec.get("info")
    if not info_names(info, src):
        return "" if os.path.lexists(src) else f"the trash entry {trash} is not this file's"
    if not os.path.lexists(trash):
        if info and os.path.exists(info):
            os.unlink(info)  # killed after reserving the name: nothing was moved
        return "" if os.path.lexists(src) else "missing from both its place and the trash (trash emptied?)"
    if os.path.lexists(src):
        if action in ("hardlink", "symlink") and same_file(src, rec["keeper"]):
            os.unlink(src)  # the link we made
        else:
            return f"{src} exists and is not the link this run made; the original is still in {trash}"
    Path(src).parent.mkdir(parents=True, exist_ok=True)
    os.rename(trash, src)
    storage.fsync_dir(Path(src).parent)
    if info and os.path.exists(info):
        os.unlink(info)
    return None


def _prune_empty(to: str, dsts: list[str]) -> None:
    """Remove the folders under ``to`` that the moves made and undo emptied (never ``to`` itself)."""
    top = Path(to)
    for d in sorted({Path(p).parent for p in dsts}, key=lambda p: -len(p.parts)):
        while d != top and top in d.parents:
            try:
                d.rmdir()
            except OSError:
                break
            d = d.parent
