"""Plans: what a run would do (the files, their groups, the bytes freed); making one touches no file (the dry run)."""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

from .. import images
from .files import same_file

ACTIONS = ("move", "trash", "hardlink", "symlink", "delete")


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
        to = images.absolute(to)
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
            if same_file(m.path, keeper.path):
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
