"""Acting on duplicate groups: plans, and journaled, undoable moves, trash and links; remembered decisions.

Nothing here decides what is a duplicate (that is :mod:`lookalike.dupes`): a plan takes the
members whose role is ``act`` and does one thing to each.

Every action is written to a journal in the collection folder, ``<db>/journal/RUN_ID.jsonl``
(one fsync'd JSON line per event), *before* it is done. Each action is one rename or link
away from its undo, and :func:`undo` looks at the files themselves, so a run killed at any
moment is restored by ``undo``: moves, trash and links come back byte-identical; deletes are
final (the plan says so).

Original files replaced by a link go to the trash first (that is what undo restores), so for
links, as for ``trash``, the space comes free when the trash is emptied.
"""

from __future__ import annotations

import errno
import hashlib
import json
import logging
import os
import shutil
import stat
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from urllib.parse import quote, unquote

from . import storage

log = logging.getLogger(__name__)

ACTIONS = ("move", "trash", "hardlink", "symlink", "delete")
JOURNAL_DIR = "journal"
DECISIONS_FILE = "decisions.json"
HASH_CHUNK = 1 << 22  # 4 MiB reads when re-checking a file's hash


class ActionError(RuntimeError):
    """A plan cannot be made or a run cannot be undone as asked."""


# ---------------------------------------------------------------- decisions
def load_decisions(db: str | os.PathLike) -> list[set[str]]:
    """The "not duplicates" decisions stored in collection ``db``: sets of content hashes."""
    p = Path(db) / DECISIONS_FILE
    try:
        data = json.loads(p.read_text())
    except FileNotFoundError:
        return []
    except (OSError, ValueError) as err:
        raise ActionError(f"Cannot read the decisions file {p}: {err}. Fix or delete it (its decisions are "
                          "then forgotten).") from None
    return [set(s) for s in data.get("not_duplicates", [])]


def remember_not_duplicates(col, ids) -> set[str]:
    """Store that the images ``ids`` of ``col`` are not duplicates of each other; returns their hashes.

    Decisions are keyed by content hash, so they survive a re-index (and follow a moved file).
    Two ids of byte-identical files mean "these copies are meant to be there".
    """
    from .collection import store

    ids = [int(i) for i in ids]
    if len(ids) < 2:
        raise ValueError(f"--ignore needs at least 2 image ids (the images that are not duplicates), got {ids}")
    hashes = set()
    for i in ids:
        try:
            h = col.record(i)["content_hash"]
        except KeyError:
            raise ValueError(f"No image with id {i} in {col.path}; ids are those shown by lookalike dupes") from None
        if not h:
            raise ValueError(f"Image {i} has no content hash (imported without one); it cannot be remembered")
        hashes.add(h)
    with store.Lock(col.path):  # the collection's own commits clean temp files up: write under its lock
        decisions = load_decisions(col.path)
        if hashes not in decisions:
            decisions.append(hashes)
        storage.atomic_write_json(col.path / DECISIONS_FILE, {"version": 1, "not_duplicates": [
            sorted(s) for s in decisions]})
    return hashes


# ---------------------------------------------------------------- plans
@dataclass
class Step:
    """One file an action will touch, with what the index says of it and of its keeper."""

    n: int
    group: int  # 1-based number of its group in the report
    path: str
    size: int
    mtime_ns: int
    content_hash: str
    keeper: str
    keeper_size: int
    keeper_mtime_ns: int
    keeper_hash: str
    dest: str | None = None  # move: where the file goes


@dataclass
class Plan:
    """What a run would do: the action, its steps, and the files left out (with the reason)."""

    action: str
    steps: list[Step]
    to: str | None = None
    left_out: list[tuple[str, str]] = field(default_factory=list)  # (path, reason)

    @property
    def groups(self) -> int:
        """Number of groups with at least one file acted on."""
        return len({s.group for s in self.steps})

    @property
    def bytes(self) -> int:
        """Bytes the run frees (for trash and links: once the trash is emptied)."""
        return sum(s.size for s in self.steps)

    @property
    def final(self) -> bool:
        """True when undo cannot restore the files (delete)."""
        return self.action == "delete"

    def to_dict(self) -> dict:
        """Plain dict (JSON-ready)."""
        return {"action": self.action, "to": self.to, "files": len(self.steps), "groups": self.groups,
                "bytes": self.bytes, "final": self.final, "steps": [asdict(s) for s in self.steps],
                "left_out": [{"path": p, "reason": r} for p, r in self.left_out]}


def _root_of(path: str, roots: list[str]) -> str | None:
    best = None
    for r in roots:
        if path.startswith(r.rstrip(os.sep) + os.sep) and (best is None or len(r) > len(best)):
            best = r
    return best


def move_target(path: str, to: str | os.PathLike, roots: list[str]) -> Path:
    """Where ``--apply move --to`` puts ``path``: its path relative to its collection root, under ``to``.

    A file under no root (added one by one) keeps its whole absolute path under ``to``.
    """
    root = _root_of(path, roots)
    rel = os.path.relpath(path, root) if root else path.lstrip(os.sep)
    return Path(to) / rel


def make_plan(col, groups, action: str, *, to: str | os.PathLike | None = None) -> Plan:
    """The plan of ``action`` over the ``act`` members of ``groups`` (see :func:`lookalike.dupes.review_groups`).

    No file is touched. A file that is a keeper, a reference or any other non-``act`` member
    of some group is never in the plan, nor a file already linked to its keeper.

    Parameters
    ----------
    col : Collection
        The collection the groups come from (its roots place moved files).
    groups : list of ReviewGroup
    action : {"move", "trash", "hardlink", "symlink", "delete"}
    to : path, optional
        The folder moved files go to (``move`` only; required there).
    """
    if action not in ACTIONS:
        raise ValueError(f"Unknown action: {action!r}; expected one of {', '.join(ACTIONS)}")
    if action == "move" and to is None:
        raise ValueError("--apply move needs --to DIR: the folder the duplicates are moved to")
    if action != "move" and to is not None:
        raise ValueError(f"--to is for --apply move only, not {action!r}")
    if to is not None:
        to = os.path.abspath(os.path.expanduser(str(to)))
        db = os.path.abspath(col.path)
        if to == db or to.startswith(db.rstrip(os.sep) + os.sep):
            raise ValueError(f"--to {to} is inside the collection folder {col.path}; choose a folder outside it")
    protected = {m.path for g in groups for m in g.members if m.role != "act"}
    roots = col.manifest.get("roots", [])
    steps, left_out, seen, dests = [], [], set(), set()
    for n, g in enumerate(groups, 1):
        keeper = next((m for m in g.members if m.role == "keep"), None)
        for m in g.members:
            if m.role != "act" or keeper is None or m.path in seen:
                continue
            if m.path in protected:
                left_out.append((m.path, "a keeper or reference file in another group"))
                continue
            if os.path.islink(m.path):
                left_out.append((m.path, "a symbolic link (links are never acted on)"))
                continue
            if _same_file(m.path, keeper.path):
                left_out.append((m.path, "already a hard link to its keeper"))
                continue
            dest = None
            if action == "move":
                target = move_target(m.path, to, roots)
                k = 1
                while str(target) in dests or os.path.lexists(target):
                    k += 1
                    base = move_target(m.path, to, roots)
                    target = base.with_name(f"{base.stem} ({k}){base.suffix}")
                dest = str(target)
                dests.add(dest)
            seen.add(m.path)
            steps.append(Step(len(steps), n, m.path, m.size, m.mtime_ns, m.content_hash, keeper.path, keeper.size,
                              keeper.mtime_ns, keeper.content_hash, dest))
    return Plan(action, steps, str(to) if to else None, left_out)


def _same_file(a: str, b: str) -> bool:
    try:
        return os.path.islink(a) or os.path.samefile(a, b)
    except OSError:
        return False


# ---------------------------------------------------------------- checks
def _hash(path: str) -> str:
    h = hashlib.blake2b(digest_size=16)  # the index's content hash (lookalike.indexer.content_hash)
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(HASH_CHUNK), b""):
            h.update(chunk)
    return h.hexdigest()


def _changed(path: str, size: int, mtime_ns: int, content_hash: str) -> str | None:
    """Why ``path`` no longer matches the index (None if it does): size, modified time, then hash."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return "missing"
    except OSError as err:
        return f"cannot read: {err.strerror}"
    if stat.S_ISLNK(st.st_mode):
        return "is now a link"
    if st.st_size != size or st.st_mtime_ns != mtime_ns:
        return "changed since it was indexed (size or modified time); run lookalike index again"
    try:
        if content_hash and _hash(path) != content_hash:
            return "content changed since it was indexed; run lookalike index again"
    except OSError as err:
        return f"cannot read: {err.strerror}"
    return None


# ---------------------------------------------------------------- trash (freedesktop.org trash spec)
def _trash_dir(path: str) -> tuple[Path, bool]:
    """The trash for ``path`` and whether it keeps ``info/*.trashinfo`` (freedesktop) files.

    The home trash (``$XDG_DATA_HOME/Trash``) when it is on the file's file system, else
    ``$topdir/.Trash-$uid`` at the top of the file's mount; macOS: ``~/.Trash``.
    """
    if sys.platform == "darwin":
        return Path.home() / ".Trash", False
    if os.name != "posix":
        raise ActionError("--apply trash (and links, which trash the original) needs a POSIX system here")
    dev = os.stat(path).st_dev
    home = Path(os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share") / "Trash"
    probe = home
    while not probe.exists() and probe.parent != probe:
        probe = probe.parent
    if os.stat(probe).st_dev == dev:
        return home, True
    top = Path(os.path.abspath(path)).parent
    while top.parent != top and os.stat(top.parent).st_dev == dev:
        top = top.parent
    return top / f".Trash-{os.getuid()}", True


def _trash_names(path: str) -> tuple[str, str | None]:
    """A free name in the trash for ``path``: (file there, its .trashinfo or None)."""
    trash, with_info = _trash_dir(path)
    for sub in ("files", "info") if with_info else ():
        (trash / sub).mkdir(parents=True, exist_ok=True, mode=0o700)
    trash.mkdir(parents=True, exist_ok=True, mode=0o700)
    base = Path(path).name
    stem, suffix = os.path.splitext(base)
    k = 1
    while True:
        name = base if k == 1 else f"{stem}.{k}{suffix}"
        f = trash / "files" / name if with_info else trash / name
        info = trash / "info" / f"{name}.trashinfo" if with_info else None
        if not os.path.lexists(f) and (info is None or not info.exists()):
            return str(f), str(info) if info else None
        k += 1


def _to_trash(src: str, target: str, info: str | None) -> None:
    if info is not None:
        fd = os.open(info, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)  # reserves the name
        with os.fdopen(fd, "w") as f:
            f.write(f"[Trash Info]\nPath={quote(src)}\nDeletionDate={time.strftime('%Y-%m-%dT%H:%M:%S')}\n")
            f.flush()
            os.fsync(f.fileno())
    try:
        os.rename(src, target)
    except OSError:
        if info is not None:
            os.unlink(info)
        raise
    storage.fsync_dir(Path(target).parent)
    storage.fsync_dir(Path(src).parent)


def _info_names(info: str | None, src: str) -> bool:
    """The .trashinfo ``info`` is ours for ``src`` (or there is none to check)."""
    if info is None or not os.path.exists(info):
        return True
    try:
        for line in Path(info).read_text().splitlines():
            if line.startswith("Path="):
                return unquote(line[5:]) == src
    except OSError:
        return False
    return False


# ---------------------------------------------------------------- the journal
class _Journal:
    """Append-only JSON lines, each flushed and fsync'd before the caller goes on."""

    def __init__(self, path: Path):
        self.path = path
        cut = path.exists() and path.stat().st_size and not path.read_bytes().endswith(b"\n")
        self.f = open(path, "ab")
        if cut:  # a line cut by a kill: end it, so the next line stands alone
            self.f.write(b"\n")
        storage.fsync_dir(path.parent)

    def write(self, **rec) -> None:
        self.f.write((json.dumps(rec, sort_keys=True) + "\n").encode())
        self.f.flush()
        os.fsync(self.f.fileno())

    def close(self) -> None:
        self.f.close()


def journal_dir(db: str | os.PathLike) -> Path:
    """The folder of the run journals in collection ``db``."""
    return Path(db) / JOURNAL_DIR


def _read_journal(path: Path) -> list[dict]:
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
        recs = _read_journal(p)
        begin = next((r for r in recs if r.get("op") == "begin"), {})
        out.append({"run": p.stem, "action": begin.get("action"), "to": begin.get("to"),
                    "done": sum(r.get("op") == "done" for r in recs),
                    "finished": any(r.get("op") == "end" for r in recs),
                    "undone": any(r.get("op") == "undo_end" for r in recs)})
    return out


def _lock(db):
    """The lock of runs on ``db``: one run or undo at a time (a ``store.Lock`` on the journal folder)."""
    from .collection import store

    folder = journal_dir(db)
    if not folder.is_dir():
        folder.mkdir()
        storage.fsync_dir(Path(db))
    return store.Lock(folder, wait=False)


# ---------------------------------------------------------------- apply
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


def new_run_id() -> str:
    """A run id that sorts by time: ``20261127T105300.123456Z-3fa2c1``."""
    ns = time.time_ns()
    stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime(ns // 10**9))
    return f"{stamp}.{ns // 1000 % 10**6:06d}Z-{os.urandom(3).hex()}"


def apply_plan(col, plan: Plan, *, run_id: str | None = None) -> RunResult:
    """Do ``plan``, journaled; then make the collection follow the files.

    Each file (and its keeper) is re-checked against the index first (size, modified time,
    content hash); a changed file is skipped with the reason. The journal line of an action
    is on disk before the action starts.
    """
    run_id = run_id or new_run_id()
    res = RunResult(run_id, plan.action)
    moved: list[tuple[str, str]] = []
    with _lock(col.path):
        j = _Journal(journal_dir(col.path) / f"{run_id}.jsonl")
        try:
            j.write(op="begin", run=run_id, action=plan.action, to=plan.to, db=str(col.path), steps=len(plan.steps),
                    time=time.time())
            keeper_ok: dict[str, str | None] = {}
            for s in plan.steps:
                if s.keeper not in keeper_ok:
                    why = _changed(s.keeper, s.keeper_size, s.keeper_mtime_ns, s.keeper_hash)
                    keeper_ok[s.keeper] = None if why is None else f"its keeper {s.keeper}: {why}"
                why = keeper_ok[s.keeper] or _changed(s.path, s.size, s.mtime_ns, s.content_hash)
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
                        rec["trash"], rec["info"] = _trash_names(s.path)
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
        _move(src, rec["dst"], rec["tmp"])
    elif action == "delete":
        os.unlink(src)
        storage.fsync_dir(Path(src).parent)
    else:
        _to_trash(src, rec["trash"], rec["info"])
        if action == "hardlink":
            os.link(rec["keeper"], src)
        elif action == "symlink":
            os.symlink(os.path.abspath(rec["keeper"]), src)
        storage.fsync_dir(Path(src).parent)


def _move(src: str, dst: str, tmp: str) -> None:
    """Move without ever overwriting ``dst``: a link then an unlink, or a copy (other file system)."""
    try:
        os.link(src, dst)  # fails if dst exists; both names on one inode until the unlink
    except OSError as err:
        if err.errno == errno.EEXIST:
            raise
        if err.errno == errno.EXDEV:
            shutil.copy2(src, tmp)  # keeps the modified time
            with open(tmp, "rb") as f:
                os.fsync(f.fileno())
            if os.path.lexists(dst):
                os.unlink(tmp)
                raise FileExistsError(errno.EEXIST, "the target exists", dst) from None
            os.rename(tmp, dst)
        else:  # a file system without hard links: rename (the target was checked to be free)
            os.rename(src, dst)
            storage.fsync_dir(Path(dst).parent)
            storage.fsync_dir(Path(src).parent)
            return
    storage.fsync_dir(Path(dst).parent)
    os.unlink(src)
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


# ---------------------------------------------------------------- undo
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
    recs = _read_journal(path)
    begin = next((r for r in recs if r.get("op") == "begin"), {})
    failed = {r["n"] for r in recs if r.get("op") == "fail"}
    intents = [r for r in recs if r.get("op") == "intent" and r["n"] not in failed]
    res = RunResult(run_id, "undo " + str(begin.get("action")))
    restored, gone = [], []
    with _lock(col.path):
        j = _Journal(path)
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
            _move(dst, src, str(Path(src).with_name(f".{Path(src).name}.lookalike-tmp")))
            return None
        return "" if has_src else "missing from both its old and its new place"
    trash, info = rec["trash"], rec.get("info")
    if not _info_names(info, src):
        return "" if os.path.lexists(src) else f"the trash entry {trash} is not this file's"
    if not os.path.lexists(trash):
        if info and os.path.exists(info):
            os.unlink(info)  # killed after reserving the name: nothing was moved
        return "" if os.path.lexists(src) else "missing from both its place and the trash (trash emptied?)"
    if os.path.lexists(src):
        if action in ("hardlink", "symlink") and _same_file(src, rec["keeper"]):
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


# ---------------------------------------------------------------- groups chosen by a person (the page)
def chosen_groups(col, choices, threshold: float) -> list:
    """Review groups from a person's choices: ``[(keeper_id, [ids to act on]), ...]``.

    Each chosen member is scored against its keeper again: one below ``threshold``, or marked
    "not duplicates" with it, gets a role other than ``act`` and :func:`make_plan` leaves it
    alone, whatever the request said. Only ids of ``col`` are accepted.

    Parameters
    ----------
    col : Collection
    choices : sequence of (int, sequence of int)
    threshold : float
        The score to the keeper a member needs to be acted on.

    Raises
    ------
    ValueError
        An id that is not in ``col``, a keeper among its own members, or a group without members.
    """
    from .dupes import MemberFacts, make_group

    decisions_of: dict[str, set[int]] = {}
    for k, hashes in enumerate(load_decisions(col.path)):
        for h in hashes:
            decisions_of.setdefault(h, set()).add(k)

    def ignored_pair(h1: str, h2: str) -> bool:
        return bool(decisions_of.get(h1, set()) & decisions_of.get(h2, set()))

    facts, groups = MemberFacts(col), []
    for keeper, members in choices:
        ids = [int(keeper), *(int(i) for i in members)]
        if not members:
            raise ValueError(f"The group of keeper {keeper} names no image to act on.")
        if len(set(ids)) != len(ids):
            raise ValueError(f"The group of keeper {keeper} names an image twice (or the keeper as a member).")
        for i in ids:
            try:
                col.row_of_id(i)
            except (KeyError, OverflowError):
                raise ValueError(f"No image with id {i} in {col.path}.") from None
        groups.append(make_group(col, facts, sorted(ids), int(keeper), [], "near", threshold, (), ignored_pair))
    return groups
