"""Near-duplicate pairs and groups. Reports only: nothing here deletes or moves files."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import numpy as np

# The `dupes` threshold of the CLI, the library, the server and the Spark job (one definition):
# calibrated on the near-duplicate suite (benchmarks/quality_default.py) as the lowest cosine where
# pairs of different photos (same-class ones included) stay under 1 % of the pairs reported.
DEFAULT_THRESHOLD = 0.88

# The exact all-pairs scan reads both sides in blocks (the embeddings may be a float16 memmap of
# 1M x 1280): a 1,024 x 4,096 float32 score block is 16 MB; the two blocks as float32 are 5 MB
# and 21 MB at dim 1,280. Nothing holds the whole matrix.
PAIR_BLOCK_ROWS = 1_024
PAIR_OTHER_ROWS = 4_096
# Queries per LSH radius-search call: 4,096 x 1,280 float32 = 21 MB of query vectors.
LSH_QUERY_ROWS = 4_096

Progress = Callable[[float], None]


@dataclass(frozen=True)
class Pair:
    """Two images whose cosine similarity passed the threshold."""

    score: float
    id_a: int
    id_b: int
    path_a: str
    path_b: str


@dataclass
class Group:
    """A set of near-duplicate images and the one suggested to keep."""

    ids: list[int]
    paths: list[str]
    keeper: int  # id of the suggested keeper: most pixels, then oldest file, then path
    pairs: list[tuple[int, int, float]] = field(default_factory=list)  # (id_a, id_b, score)

    @property
    def min_score(self) -> float:
        """The weakest link inside the group."""
        return min((s for _, _, s in self.pairs), default=1.0)

    def to_dict(self) -> dict:
        """Plain dict (JSON-ready)."""
        return {**asdict(self), "min_score": self.min_score}


@dataclass
class PairScan:
    """The result of :func:`scan_pairs`: the pairs, and whether ``max_pairs`` cut some off."""

    pairs: list[Pair]
    truncated: bool = False


class _TopPairs:
    """Row pairs at or above a threshold; with a ``cap``, only the ``cap`` best are kept.

    Memory stays O(cap): a block with more hits than ``cap`` is cut at its cap-th best score
    first, and the kept set is pruned back to ``cap`` whenever it doubles; the threshold then
    rises to the weakest kept score, so later blocks yield fewer candidates.

    ``merge``: pairs may come from several scans (rotations); a pair found twice keeps its best
    score (and with ``symmetric``, ``(a, b)`` and ``(b, a)`` are one pair, kept as ``(min, max)``).
    """

    def __init__(self, threshold: float, cap: int | None, *, merge: bool = False, symmetric: bool = False):
        if cap is not None and cap < 1:
            raise ValueError(f"max_pairs must be at least 1 (or None for no cap), got {cap}")
        self.threshold, self.cap = float(threshold), cap
        self.merge, self.symmetric = merge or symmetric, symmetric
        self.parts: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
        self.count = 0
        self.truncated = False

    def add_scores(self, s: np.ndarray, i0: int, j0: int, *, swap: bool = False) -> None:
        """Add the hits of a score block whose cell (i, j) is the pair (i0 + i, j0 + j) (``swap``: (j0 + j, i0 + i))."""
        thr = self.threshold
        if self.cap is not None:
            hits = int(np.count_nonzero(s >= thr))
            if hits > self.cap:
                flat = s.ravel()
                kth = flat.size - self.cap
                thr = max(thr, float(np.partition(flat, kth)[kth]))
                self.truncated = True
        i, j = np.nonzero(s >= thr)
        if swap:
            self.add(j + j0, i + i0, s[i, j])
        else:
            self.add(i + i0, j + j0, s[i, j])

    def add(self, a, b, scores) -> None:
        """Add pairs ``a[k] - b[k]`` with their scores (already at or above the threshold)."""
        if len(a):
            a, b = np.asarray(a, np.int64), np.asarray(b, np.int64)
            if self.symmetric:
                a, b = np.minimum(a, b), np.maximum(a, b)
            self.parts.append((a, b, np.asarray(scores, np.float32)))
            self.count += len(a)
        if self.cap is not None and self.count > 2 * self.cap:
            self._prune()

    def _best_of_each(self, a, b, s):
        """One row per pair, its best score (pairs found by several scans)."""
        order = np.lexsort((-s, b, a))
        a, b, s = a[order], b[order], s[order]
        first = np.ones(len(a), bool)
        first[1:] = (a[1:] != a[:-1]) | (b[1:] != b[:-1])
        return a[first], b[first], s[first]

    def _prune(self) -> None:
        a, b, s = (np.concatenate(x) for x in zip(*self.parts))
        if self.merge:
            a, b, s = self._best_of_each(a, b, s)
        if len(s) > self.cap:
            self.truncated = True
            order = np.lexsort((b, a, -s))[: self.cap]
            a, b, s = a[order], b[order], s[order]
            self.threshold = max(self.threshold, float(s[-1]))
        self.parts, self.count = [(a, b, s)], len(s)

    def result(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        if not self.parts:
            return np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.float32)
        if self.cap is not None and self.count > self.cap:
            self._prune()
        a, b, s = (np.concatenate(x) for x in zip(*self.parts))
        if self.merge:
            a, b, s = self._best_of_each(a, b, s)
        return a, b, s


def _exact_scan(A, threshold: float, B=None, *, max_pairs: int | None = None, progress: Progress | None = None,
                found: _TopPairs | None = None, skip_diagonal: bool = False, swap: bool = False) -> _TopPairs:
    """All pairs of ``A`` (``B`` None: i < j) or of ``A`` x ``B`` at or above ``threshold``, into ``found``.

    ``skip_diagonal``: leave out cells (i, i) of ``A`` x ``B`` (the variants of an image against
    the images of the same collection); ``swap``: record cell (i, j) as the pair (j, i).
    """
    n_a = len(A)
    other = A if B is None else B
    n_b = len(other)
    found = _TopPairs(threshold, max_pairs) if found is None else found
    # work in score cells, to report a fraction done: the upper triangle for a self-scan
    total = n_a * (n_a - 1) / 2 if B is None else n_a * n_b
    done = 0.0
    for i0 in range(0, n_a, PAIR_BLOCK_ROWS):
        block = np.asarray(A[i0 : i0 + PAIR_BLOCK_ROWS], np.float32)
        i1 = i0 + len(block)
        for j0 in range(i0 if B is None else 0, n_b, PAIR_OTHER_ROWS):
            ob = np.asarray(other[j0 : j0 + PAIR_OTHER_ROWS], np.float32)
            s = block @ ob.T
            if B is None and j0 < i1:  # the block overlaps the diagonal: upper triangle only
                s[np.arange(i0, i1)[:, None] >= np.arange(j0, j0 + len(ob))[None, :]] = -np.inf
            elif skip_diagonal and j0 < i1 and i0 < j0 + len(ob):
                s[np.arange(i0, i1)[:, None] == np.arange(j0, j0 + len(ob))[None, :]] = -np.inf
            found.add_scores(s, i0, j0, swap=swap)
            if progress is not None:
                if B is None:
                    # cells (r, c) with r in the block, c in [j0, j0 + len(ob)), r < c
                    rows = np.arange(i0, i1)[:, None]
                    done += float(np.clip(j0 + len(ob) - np.maximum(rows + 1, j0), 0, None).sum())
                else:
                    done += len(block) * len(ob)
                progress(min(1.0, done / total) if total else 1.0)
    if progress is not None:
        progress(1.0)
    return found


def exact_pairs(A: np.ndarray, threshold: float, B: np.ndarray | None = None, *, max_pairs: int | None = None,
                progress: Progress | None = None):
    """All pairs with cosine >= ``threshold``: within ``A`` (i < j) or between ``A`` and ``B``.

    Both sides are read in blocks (``PAIR_BLOCK_ROWS`` x ``PAIR_OTHER_ROWS``), so ``A`` and
    ``B`` may be memory-mapped matrices larger than memory (float16 or float32).

    Parameters
    ----------
    A : array (n, d) of unit vectors
    threshold : float
    B : array (m, d), optional
    max_pairs : int, optional
        Keep only the ``max_pairs`` best pairs (memory O(max_pairs) whatever the threshold).
    progress : callable, optional
        Called with the fraction done (0..1) after each block.

    Returns
    -------
    rows_a, rows_b : ndarray of int64
    scores : ndarray of float32
    """
    return _exact_scan(A, threshold, B, max_pairs=max_pairs, progress=progress).result()


def _lsh_scan(index, row_of_id, threshold: float, *, vectors=None, ids=None, max_pairs: int | None = None,
              progress: Progress | None = None, found: _TopPairs | None = None) -> _TopPairs:
    found = _TopPairs(threshold, max_pairs) if found is None else found

    def take(qids, results):
        for qid, (scores, hit_ids) in zip(qids, results):
            keep = (hit_ids > qid) & (scores >= found.threshold)
            if keep.any():
                found.add([row_of_id(qid)] * int(keep.sum()), [row_of_id(i) for i in hit_ids[keep]], scores[keep])

    if hasattr(index, "pairs"):  # a collection's segmented index finds each pair once itself
        for a, b, scores in index.pairs(threshold, progress=progress):
            keep = scores >= found.threshold
            if keep.any():
                found.add(a[keep], b[keep], scores[keep])
    elif vectors is None:  # the index queries its own vectors (itself excluded)
        take(index.ids_, index.radius_neighbors(None, threshold))
    else:
        n = len(vectors)
        for b0 in range(0, n, LSH_QUERY_ROWS):
            q = np.asarray(vectors[b0 : b0 + LSH_QUERY_ROWS], np.float32)
            take(np.asarray(ids[b0 : b0 + len(q)]).tolist(), index.radius_neighbors(q, found.threshold))
            if progress is not None:
                progress(min(1.0, (b0 + len(q)) / n))
    if progress is not None:
        progress(1.0)
    return found


def lsh_pairs(index, row_of_id, threshold: float, *, vectors=None, ids=None, max_pairs: int | None = None,
              progress: Progress | None = None):
    """Pairs within the indexed set from LSH radius search (approximate: may miss pairs).

    With ``vectors`` (the indexed vectors, in the order of ``ids``) the queries go in blocks of
    ``LSH_QUERY_ROWS`` rows, so memory stays bounded and ``progress`` is called per block.
    """
    return _lsh_scan(index, row_of_id, threshold, vectors=vectors, ids=ids, max_pairs=max_pairs,
                     progress=progress).result()


def _lsh_variant_scan(index, row_of_id, found: _TopPairs, variants, ids, progress: Progress | None = None) -> None:
    """Pairs (image, other image) where the image's variant (``variants``, in row order) meets the other one."""
    n = len(variants)
    for b0 in range(0, n, LSH_QUERY_ROWS):
        q = np.asarray(variants[b0 : b0 + LSH_QUERY_ROWS], np.float32)
        for qid, (scores, hit_ids) in zip(np.asarray(ids[b0 : b0 + len(q)]).tolist(),
                                          index.radius_neighbors(q, found.threshold)):
            keep = (hit_ids != qid) & (scores >= found.threshold)
            if keep.any():
                found.add([row_of_id(qid)] * int(keep.sum()), [row_of_id(i) for i in hit_ids[keep]], scores[keep])
        if progress is not None:
            progress(min(1.0, (b0 + len(q)) / n))


def _share(progress: Progress | None, lo: float, hi: float) -> Progress | None:
    """A progress callback for the part ``[lo, hi]`` of a job made of several scans."""
    if progress is None:
        return None
    return lambda f: progress(lo + (hi - lo) * f)


def _variant_scans(col, threshold: float, use: str, found: _TopPairs, against=None,
                   progress: Progress | None = None) -> None:
    """Add the pairs that only a rotated variant finds (see :mod:`lookalike.rotations`) to ``found``.

    Every image's variants are scanned against every other image (both orders: the pair score
    takes the best of ``cos(v(a), b)`` and ``cos(a, v(b))``), so each stored variant costs twice
    the plain scan (exact) or one more query per image (LSH). With ``against``: this
    collection's variants against the other's images, and the other's against these.
    """
    if against is None:
        n_var = len(col.rotations)
        for v in range(n_var):
            part = _share(progress, v / n_var, (v + 1) / n_var)
            if use == "lsh":
                _lsh_variant_scan(col.lsh, col.row_of_id, found, col.variant_embeddings(v), col.ids, part)
            else:
                _exact_scan(col.variant_embeddings(v), found.threshold, col.embeddings, found=found,
                            skip_diagonal=True, progress=part)
        return
    sides = [(c, o, swap) for c, o, swap in ((col, against, False), (against, col, True)) if c.rotations]
    total = sum(len(c.rotations) for c, _, _ in sides)
    done = 0
    for c, o, swap in sides:
        for v in range(len(c.rotations)):
            _exact_scan(c.variant_embeddings(v), found.threshold, o.embeddings, found=found, swap=swap,
                        progress=_share(progress, done / total, (done + 1) / total))
            done += 1


def components(n: int, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Connected-component label per node ``0..n-1`` for edges ``a[i] - b[i]`` (union-find)."""
    parent = np.arange(n)

    def find(x):
        root = x
        while parent[root] != root:
            root = parent[root]
        while parent[x] != root:
            parent[x], x = root, parent[x]
        return root

    for x, y in zip(a.tolist(), b.tolist()):
        rx, ry = find(x), find(y)
        if rx != ry:
            parent[max(rx, ry)] = min(rx, ry)
    return np.array([find(x) for x in range(n)])


def connected_groups(a, b) -> list[list[int]]:
    """Connected components of the graph with edges ``a[i] - b[i]`` (any int ids).

    Sorted member lists, in order of their smallest member.
    """
    ids = sorted(set(np.asarray(a).tolist()) | set(np.asarray(b).tolist()))
    if not ids:
        return []
    pos = {i: n for n, i in enumerate(ids)}
    labels = components(len(ids), np.array([pos[x] for x in np.asarray(a).tolist()]),
                        np.array([pos[x] for x in np.asarray(b).tolist()]))
    comps: dict[int, list[int]] = {}
    for i, lab in zip(ids, labels.tolist()):
        comps.setdefault(lab, []).append(i)
    return list(comps.values())


def keeper_rank(path: str, pixels: int, mtime) -> tuple:
    """Sort key of the suggested keeper of a group: most pixels, then oldest, then path.

    ``mtime`` is anything ordered (ns since the epoch locally, a timestamp from Spark).
    """
    return (-pixels, mtime, path)


def strict_split(members: list[int], edges: dict[tuple[int, int], float]) -> list[list[int]]:
    """Split a component into groups where every pair passes (greedy, strongest links first).

    ``edges`` maps ``(min id, max id)`` to a score; edges with an end outside ``members`` are
    ignored, so one dict of every edge may serve every component.
    """
    groups: list[list[int]] = []
    degree = {m: 0 for m in members}
    for (x, y) in edges:
        if x in degree and y in degree:
            degree[x] += 1
            degree[y] += 1
    for m in sorted(members, key=lambda m: (-degree[m], m)):
        for g in groups:
            if all((min(m, o), max(m, o)) in edges for o in g):
                g.append(m)
                break
        else:
            groups.append([m])
    return [sorted(g) for g in groups if len(g) > 1]


def scan_pairs(col, threshold: float, *, method: str = "auto", against=None, max_pairs: int | None = None,
               progress: Progress | None = None) -> PairScan:
    """Pairs of images in ``col`` (or between ``col`` and collection ``against``) above ``threshold``.

    Parameters
    ----------
    col : Collection
    threshold : float
        Cosine similarity in [-1, 1].
    method : {"auto", "exact", "lsh"}, default "auto"
        "exact" scans all pairs blockwise; "lsh" uses the collection's LSH index (radius
        search; approximate); "auto" picks LSH for large collections when it is built.
    against : Collection, optional
    max_pairs : int, optional
        Keep only the ``max_pairs`` best pairs; ``truncated`` says whether any were dropped.
        Memory is then O(max_pairs) whatever the threshold.
    progress : callable, optional
        Called with the fraction of the scan done (0..1), from the calling thread; it may
        raise to abandon the scan.

    Returns
    -------
    PairScan
        Pairs sorted by descending score, then ids.
    """
    if not -1.0 <= threshold <= 1.0:
        raise ValueError(f"threshold is a cosine similarity in [-1, 1], got {threshold}")
    meta = col.metadata_columns()
    # with rotations, the plain scan is a share of the work: a variant costs 2 plain scans (1 against another)
    scans = 2 * len(_rotations(col)) if against is None else len(_rotations(col)) + len(_rotations(against))
    rotations = scans > 0
    main_progress = _share(progress, 0.0, 1 / (1 + scans))
    if against is not None:
        if against.manifest["encoder"] != col.manifest["encoder"]:
            raise ValueError(f"Cannot compare collections built with different encoders "
                             f"({col.manifest['encoder']!r} vs {against.manifest['encoder']!r}).")
        found = _exact_scan(col.embeddings, threshold, against.embeddings, max_pairs=max_pairs,
                            progress=main_progress, found=_TopPairs(threshold, max_pairs, merge=rotations))
        other = against.metadata_columns()
        use = "exact"
    else:
        use = col.resolve_method(method)
        if use == "lsh" and col.manifest.get("dba"):
            use = "exact"  # the LSH index holds augmented vectors; duplicates use the raw ones
        start = _TopPairs(threshold, max_pairs, symmetric=rotations)
        if use == "lsh":
            found = _lsh_scan(col.lsh, col.row_of_id, threshold, vectors=col.embeddings, ids=meta["id"],
                              max_pairs=max_pairs, progress=main_progress, found=start)
        else:
            found = _exact_scan(col.embeddings, threshold, max_pairs=max_pairs, progress=main_progress, found=start)
        other = meta
    if rotations:
        _variant_scans(col, threshold, use, found, against, _share(progress, 1 / (1 + scans), 1.0))
    ra, rb, sc = found.result()
    pairs = [Pair(float(s), int(meta["id"][a]), int(other["id"][b]), meta["path"][a], other["path"][b])
             for a, b, s in zip(ra.tolist(), rb.tolist(), sc.tolist())]
    pairs.sort(key=lambda p: (-p.score, p.id_a, p.id_b))
    return PairScan(pairs, found.truncated)


def _rotations(col) -> tuple:
    """The variants a collection stores (none for collections without rotations, or array-like stand-ins)."""
    return tuple(getattr(col, "rotations", ()) or ())


def find_pairs(col, threshold: float, *, method: str = "auto", against=None, max_pairs: int | None = None,
               progress: Progress | None = None) -> list[Pair]:
    """Pairs of images in ``col`` (or between ``col`` and ``against``) above ``threshold``.

    See :func:`scan_pairs` (this returns its ``pairs``). Sorted by descending score, then ids.
    """
    return scan_pairs(col, threshold, method=method, against=against, max_pairs=max_pairs,
                      progress=progress).pairs


def group_pairs(col, pairs: list[Pair], *, strict: bool = False) -> list[Group]:
    """Groups of near-duplicates.

    Connected components (or, with ``strict``, groups in which every pair passed).
    Deterministic: groups by size then smallest id; members by id.
    """
    if not pairs:
        return []
    meta = col.metadata_columns()
    edges = {(min(p.id_a, p.id_b), max(p.id_a, p.id_b)): p.score for p in pairs}
    comps = connected_groups([p.id_a for p in pairs], [p.id_b for p in pairs])
    comp_of = {m: n for n, members in enumerate(comps) for m in members}
    comp_edges: list[dict[tuple[int, int], float]] = [{} for _ in comps]
    for (x, y), s in edges.items():
        comp_edges[comp_of[x]][(x, y)] = s

    def rank(r):
        return keeper_rank(meta["path"][r], int(meta["width"][r]) * int(meta["height"][r]), int(meta["mtime_ns"][r]))

    groups = []
    for members, inner in zip(comps, comp_edges):
        for group in strict_split(members, inner) if strict else [sorted(members)]:
            rows = [col.row_of_id(i) for i in group]
            keeper = group[rows.index(min(rows, key=rank))]
            inside = set(group)
            gp = sorted(((x, y, s) for (x, y), s in inner.items() if x in inside and y in inside),
                        key=lambda e: (-e[2], e[0], e[1]))
            groups.append(Group(ids=group, paths=[meta["path"][r] for r in rows], keeper=keeper, pairs=gp))
    groups.sort(key=lambda g: (-len(g.ids), g.ids[0]))
    return groups


# ---------------------------------------------------------------- groups to act on
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


def review_groups(col, threshold: float = DEFAULT_THRESHOLD, *, tier: str = "all", keep: str = "pixels", reference=(),
                  ignored=(), strict: bool = False, method: str = "auto", against=None) -> list[ReviewGroup]:
    """Duplicate groups ready to act on: exact tier first, then near tier; a keeper and a role per member.

    Exact groups are byte-identical files (same content hash). Near groups come from the
    pairs at or above ``threshold``; in them each set of byte-identical files is stood for by
    its keeper (its other copies are in the exact group), so no file is in two groups.

    Parameters
    ----------
    col : Collection
    threshold : float, default DEFAULT_THRESHOLD (0.88)
    tier : {"all", "exact", "near"}, default "all"
    keep : str, default "pixels"
        Keep rule (see :func:`keep_key`); files under ``reference`` are preferred as keepers.
    reference : sequence of str
        Absolute folders whose files are always kept, never acted on.
    ignored : sequence of sets of content hashes
        Decisions "not duplicates": two files whose hashes are in one set are never paired
        (a one-hash set: its byte-identical copies are meant to be there).
    strict : bool, default False
        Near groups where every pair passes (default: connected components).
    method : {"auto", "exact", "lsh"}
    against : Collection, optional
        Another collection: one group per image of ``col`` duplicated there, its best match
        there as keeper; only the image of ``col`` may be acted on.

    Returns
    -------
    list of ReviewGroup
        Exact groups (by size, then smallest id), then near groups (strongest first).
    """
    if tier not in TIERS:
        raise ValueError(f"Unknown tier: {tier!r}; expected one of {', '.join(TIERS)}")
    rank = keep_key(keep)
    reference = tuple(str(r) for r in reference)
    ignore_sets = [frozenset(s) for s in ignored]
    decisions_of: dict[str, set[int]] = {}
    for k, hashes in enumerate(ignore_sets):
        for h in hashes:
            decisions_of.setdefault(h, set()).add(k)

    def ignored_pair(h1: str, h2: str) -> bool:
        return bool(decisions_of.get(h1, set()) & decisions_of.get(h2, set()))

    if against is not None:
        return _against_groups(col, against, threshold, tier, rank, reference, ignored_pair, method)
    facts = MemberFacts(col)

    def order(i: int) -> tuple:
        return (not _under(facts[i]["path"], reference), rank(facts[i]))

    exact_groups, stand_in = [], {}
    for h, ids in _ids_by_hash(col.metadata_columns()).items():
        if any(s == {h} for s in ignore_sets):
            continue
        keeper = min(ids, key=order)
        stand_in.update({i: keeper for i in ids if i != keeper})
        ids = _distinct_files(ids, facts, keeper)  # links to one file take no space: not duplicates
        if len(ids) < 2:
            continue
        exact_groups.append(make_group(col, facts, sorted(ids), keeper, [], "exact", threshold, reference,
                                        ignored_pair))
    exact_groups.sort(key=lambda g: (-len(g.ids), g.ids[0]))
    near_groups = []
    if tier != "exact":
        def kept(p: Pair) -> bool:
            ha, hb = facts[p.id_a]["content_hash"], facts[p.id_b]["content_hash"]
            return (p.id_a not in stand_in and p.id_b not in stand_in and not (ha and ha == hb)
                    and not ignored_pair(ha, hb))

        pairs = [p for p in find_pairs(col, threshold, method=method) if kept(p)]
        for g in group_pairs(col, pairs, strict=strict):
            keeper = min(g.ids, key=order)
            near_groups.append(make_group(col, facts, g.ids, keeper, g.pairs, "near", threshold, reference,
                                           ignored_pair))
        near_groups.sort(key=lambda g: (-g.min_score, -len(g.ids), g.ids[0]))
    return (exact_groups if tier != "near" else []) + near_groups


def make_group(col, facts, ids, keeper, pairs, tier, threshold, reference, ignored_pair) -> ReviewGroup:
    """A review group: each member's facts, score to the keeper and role (keep, act, chained, ignored)."""
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
        elif identical or s >= threshold:
            role = "act"
        else:
            role = "chained"
        members.append(Member(id=i, score=float(s), identical=identical, role=role, **f))
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
