"""Near-duplicate pairs and groups. Reports only: nothing here deletes or moves files."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import numpy as np

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
    """

    def __init__(self, threshold: float, cap: int | None):
        if cap is not None and cap < 1:
            raise ValueError(f"max_pairs must be at least 1 (or None for no cap), got {cap}")
        self.threshold, self.cap = float(threshold), cap
        self.parts: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
        self.count = 0
        self.truncated = False

    def add_scores(self, s: np.ndarray, i0: int, j0: int) -> None:
        """Add the hits of a score block whose cell (i, j) is the pair (i0 + i, j0 + j)."""
        thr = self.threshold
        if self.cap is not None:
            hits = int(np.count_nonzero(s >= thr))
            if hits > self.cap:
                flat = s.ravel()
                kth = flat.size - self.cap
                thr = max(thr, float(np.partition(flat, kth)[kth]))
                self.truncated = True
        i, j = np.nonzero(s >= thr)
        self.add(i + i0, j + j0, s[i, j])

    def add(self, a, b, scores) -> None:
        """Add pairs ``a[k] - b[k]`` with their scores (already at or above the threshold)."""
        if len(a):
            self.parts.append((np.asarray(a, np.int64), np.asarray(b, np.int64), np.asarray(scores, np.float32)))
            self.count += len(a)
        if self.cap is not None and self.count > 2 * self.cap:
            self._prune()

    def _prune(self) -> None:
        a, b, s = (np.concatenate(x) for x in zip(*self.parts))
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
        return a, b, s


def _exact_scan(A, threshold: float, B=None, *, max_pairs: int | None = None,
                progress: Progress | None = None) -> _TopPairs:
    n_a = len(A)
    other = A if B is None else B
    n_b = len(other)
    found = _TopPairs(threshold, max_pairs)
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
            found.add_scores(s, i0, j0)
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
              progress: Progress | None = None) -> _TopPairs:
    found = _TopPairs(threshold, max_pairs)

    def take(qids, results):
        for qid, (scores, hit_ids) in zip(qids, results):
            keep = (hit_ids > qid) & (scores >= found.threshold)
            if keep.any():
                found.add([row_of_id(qid)] * int(keep.sum()), [row_of_id(i) for i in hit_ids[keep]], scores[keep])

    if vectors is None:  # the index queries its own vectors (itself excluded)
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
    if against is not None:
        if against.manifest["encoder"] != col.manifest["encoder"]:
            raise ValueError(f"Cannot compare collections built with different encoders "
                             f"({col.manifest['encoder']!r} vs {against.manifest['encoder']!r}).")
        found = _exact_scan(col.embeddings, threshold, against.embeddings, max_pairs=max_pairs, progress=progress)
        other = against.metadata_columns()
    else:
        use = col.resolve_method(method)
        if use == "lsh" and col.manifest.get("dba"):
            use = "exact"  # the LSH index holds augmented vectors; duplicates use the raw ones
        if use == "lsh":
            found = _lsh_scan(col.lsh, col.row_of_id, threshold, vectors=col.embeddings, ids=meta["id"],
                              max_pairs=max_pairs, progress=progress)
        else:
            found = _exact_scan(col.embeddings, threshold, max_pairs=max_pairs, progress=progress)
        other = meta
    ra, rb, sc = found.result()
    pairs = [Pair(float(s), int(meta["id"][a]), int(other["id"][b]), meta["path"][a], other["path"][b])
             for a, b, s in zip(ra.tolist(), rb.tolist(), sc.tolist())]
    pairs.sort(key=lambda p: (-p.score, p.id_a, p.id_b))
    return PairScan(pairs, found.truncated)


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
