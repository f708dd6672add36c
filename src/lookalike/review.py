"""Groups ready to act on: tiers, keep rules, each member's role, score to the keeper and facts.

The building blocks of :func:`lookalike.dupes.review_groups` (defined there, beside the
default threshold).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import numpy as np

from .grouping import Group, keeper_rank
from .pairs import _rotations, find_pairs

TIERS = ("exact", "near", "all")
KEEP_RULES = ("pixels", "largest", "oldest", "newest", "shortest-path")
# Roles of a member in a ReviewGroup: only "act" members may be touched by an action.
ROLES = ("keep", "act", "reference", "chained", "ignored", "other")


@dataclass
class Member:
    """One image of a :class:`ReviewGroup`, with what a person needs to judge it."""

    id: int
    path: str
    size: int
    width: int
    height: int
    mtime_ns: int
    content_hash: str
    score: float  # cosine to the group's keeper (1.0 for the keeper itself)
    identical: bool  # byte-identical to the keeper (same content hash)
    role: str  # one of ROLES: keep, act (an action may touch it), reference, chained, ignored, other
    in_other: bool = False  # from the ``against`` collection (its id is that collection's)
    verified: bool = False  # below the threshold to the keeper, shown the same photo by the geometric check

    @property
    def folder(self) -> str:
        """The folder holding the file."""
        import os

        return os.path.dirname(self.path)

    def to_dict(self) -> dict:
        """Plain dict (JSON-ready), with ``folder`` and an ISO ``modified`` time (UTC)."""
        from datetime import datetime, timezone

        modified = datetime.fromtimestamp(self.mtime_ns / 1e9, timezone.utc).isoformat(timespec="seconds")
        return {**asdict(self), "score": round(self.score, 6), "folder": self.folder, "modified": modified}


@dataclass
class ReviewGroup(Group):
    """A :class:`Group` ready to act on: its tier, and every member's role, score to the keeper and facts.

    A member may be acted on (role ``act``) only if it scores at or above the threshold
    against the keeper itself (not only through a chain of other members), is not under a
    reference folder, and was not marked "not duplicates" with the keeper.
    """

    tier: str = "near"  # "exact": byte-identical files; "near": similar images
    members: list[Member] = field(default_factory=list)

    @property
    def min_score(self) -> float:
        """The weakest link inside the group (1.0 for an exact group)."""
        if self.tier == "exact":
            return 1.0
        return min((s for _, _, s in self.pairs), default=min((m.score for m in self.members), default=1.0))

    def to_dict(self) -> dict:
        """Plain dict (JSON-ready): tier, keeper, ids, paths, min_score, members, pairs."""
        return {"tier": self.tier, "keeper": self.keeper, "min_score": round(self.min_score, 6), "ids": self.ids,
                "paths": self.paths, "members": [m.to_dict() for m in self.members],
                "pairs": [[a, b, round(s, 6)] for a, b, s in self.pairs]}


def keep_key(rule: str) -> Callable[[dict], tuple]:
    """Sort key (smallest first = keeper) of a keep rule over a member's facts.

    Every rule breaks ties by :func:`keeper_rank` (most pixels, then oldest, then path).

    Parameters
    ----------
    rule : {"pixels", "largest", "oldest", "newest", "shortest-path"}
        "pixels" (default) is :func:`keeper_rank` alone; "largest" is the largest file in bytes.
    """
    if rule not in KEEP_RULES:
        raise ValueError(f"Unknown keep rule: {rule!r}; expected one of {', '.join(KEEP_RULES)}")

    def key(f: dict) -> tuple:
        base = keeper_rank(f["path"], f["width"] * f["height"], f["mtime_ns"])
        first = {"pixels": (), "largest": (-f["size"],), "oldest": (f["mtime_ns"],), "newest": (-f["mtime_ns"],),
                 "shortest-path": (len(f["path"]),)}[rule]
        return first + base

    return key


def _under(path: str, folders: tuple[str, ...]) -> bool:
    import os

    return any(path == d or path.startswith(d.rstrip(os.sep) + os.sep) for d in folders)


class MemberFacts(dict):
    """Id -> the index's facts of that image (path, size, pixels, mtime, hash), read on first use."""

    def __init__(self, col):
        super().__init__()
        self.col, self.cols = col, col.metadata_columns()

    def __missing__(self, i: int) -> dict:
        c, r = self.cols, self.col.row_of_id(i)
        f = self[i] = {"path": c["path"][r], "size": int(c["size"][r]), "width": int(c["width"][r]),
                       "height": int(c["height"][r]), "mtime_ns": int(c["mtime_ns"][r]),
                       "content_hash": c["content_hash"][r] or ""}
        return f


def _ids_by_hash(cols, only: set | None = None) -> dict[str, list[int]]:
    """Content hash -> ids, for hashes held by two images or more (or, with ``only``, for those hashes)."""
    from collections import Counter

    hashes = cols["content_hash"].tolist()
    counts = Counter(hashes) if only is None else None
    out: dict[str, list[int]] = {}
    for i, h in zip(cols["id"].tolist(), hashes):
        if h and (counts[h] > 1 if only is None else h in only):
            out.setdefault(h, []).append(int(i))
    return out


def _distinct_files(ids: list[int], facts: MemberFacts, keeper: int) -> list[int]:
    """``ids`` less those naming the same file (hard or symbolic link) as one before them, keeper first."""
    import os

    seen, out = set(), []
    for i in sorted(ids, key=lambda i: i != keeper):
        try:
            st = os.stat(facts[i]["path"])
            key = (st.st_dev, st.st_ino)
        except OSError:
            key = ("missing", i)
        if key not in seen:
            seen.add(key)
            out.append(i)
    return sorted(out)


def ignored_pairs(decisions):
    """A test ``(hash_a, hash_b) -> bool``: whether one of ``decisions`` marks two files "not duplicates".

    ``decisions``: sets of content hashes (:func:`lookalike.actions.load_decisions`); two files
    whose hashes are in one set are never paired.
    """
    of: dict[str, set[int]] = {}
    for k, hashes in enumerate(decisions):
        for h in hashes:
            of.setdefault(h, set()).add(k)

    def ignored(h1: str, h2: str) -> bool:
        return bool(of.get(h1, set()) & of.get(h2, set()))

    return ignored


def make_group(col, facts, ids, keeper, pairs, tier, threshold, reference, ignored_pair, *,
               verified=frozenset()) -> ReviewGroup:
    """A review group: each member's facts, score to the keeper and role (keep, act, chained, ignored).

    ``verified``: id pairs ``(low, high)`` a geometric check showed to be the same photo; a member
    verified against the keeper may be acted on whatever its score.
    """
    rows = [col.row_of_id(i) for i in ids]
    if tier == "exact":
        scores = [1.0] * len(ids)
    else:
        from .rotations import variant_scores

        vecs = np.asarray(col.embeddings[np.asarray(rows)], np.float32)
        variants = col.variants_of_rows(rows) if _rotations(col) else None
        scores = variant_scores(vecs, variants, ids.index(keeper)).tolist()
    kf = facts[keeper]
    members = []
    for i, s in zip(ids, scores):
        f = facts[i]
        identical = bool(f["content_hash"]) and f["content_hash"] == kf["content_hash"]
        if i == keeper:
            role, s = "keep", 1.0
        elif _under(f["path"], reference):
            role = "reference"
        elif not identical and ignored_pair(f["content_hash"], kf["content_hash"]):
            role = "ignored"
        elif identical or s >= threshold or (min(i, keeper), max(i, keeper)) in verified:
            role = "act"
        else:
            role = "chained"
        checked = not identical and s < threshold and (min(i, keeper), max(i, keeper)) in verified
        members.append(Member(id=i, score=float(s), identical=identical, role=role, verified=checked, **f))
    return ReviewGroup(ids=list(ids), paths=[facts[i]["path"] for i in ids], keeper=keeper, pairs=list(pairs),
                       tier=tier, members=members)


def _against_groups(col, other, threshold, tier, rank, reference, ignored_pair, method) -> list[ReviewGroup]:
    """One group per image of ``col`` with a match in ``other``: keeper = its best match there."""
    facts, ofacts = MemberFacts(col), MemberFacts(other)
    matches: dict[int, list[tuple[float, int]]] = {}
    for p in find_pairs(col, threshold, method=method, against=other):
        if not ignored_pair(facts[p.id_a]["content_hash"], ofacts[p.id_b]["content_hash"]):
            matches.setdefault(p.id_a, []).append((p.score, p.id_b))
    mine = _ids_by_hash(col.metadata_columns(), set(col.metadata_columns()["content_hash"].tolist()))
    theirs = _ids_by_hash(other.metadata_columns(), set(mine))
    for h, ids in mine.items():  # byte-identical matches even below a (high) threshold
        if h in theirs:
            j = min(theirs[h], key=lambda o: rank(ofacts[o]))
            for i in ids:
                if all(o != j for _, o in matches.get(i, [])):
                    matches.setdefault(i, []).append((1.0, j))
    groups = []
    for i, found in matches.items():
        h = facts[i]["content_hash"]
        same = [o for _, o in found if h and ofacts[o]["content_hash"] == h]
        keeper = min(same, key=lambda o: rank(ofacts[o])) if same else max(found, key=lambda t: (t[0], -t[1]))[1]
        g_tier = "exact" if same else "near"
        if tier not in ("all", g_tier):
            continue
        f = facts[i]
        role = "reference" if _under(f["path"], reference) else "act"
        score = 1.0 if same else max(s for s, o in found if o == keeper)
        members = [Member(id=i, score=score, identical=bool(same), role=role, **f)]
        for s, o in sorted(found, key=lambda t: (-t[0], t[1])):
            members.append(Member(id=o, score=1.0 if o == keeper else s,
                                  identical=bool(h) and ofacts[o]["content_hash"] == h,
                                  role="keep" if o == keeper else "other", in_other=True, **ofacts[o]))
        groups.append(ReviewGroup(ids=[m.id for m in members], paths=[m.path for m in members], keeper=keeper,
                                  pairs=[(i, o, s) for s, o in found], tier=g_tier, members=members))
    groups.sort(key=lambda g: (g.tier != "exact", -g.min_score, g.ids[0]))
    return groups
