"""Near-duplicate pairs and groups. Reports only: nothing here deletes or moves files."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np

# Rows per block of the exact all-pairs scan: a 2,048 x n score block is 80 MB at n = 10k.
PAIR_BLOCK_ROWS = 2_048


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


def exact_pairs(A: np.ndarray, threshold: float, B: np.ndarray | None = None):
    """All pairs with cosine >= ``threshold``: within ``A`` (i < j) or between ``A`` and ``B``.

    Returns
    -------
    rows_a, rows_b : ndarray of int64
    scores : ndarray of float32
    """
    ra, rb, sc = [], [], []
    other = A if B is None else B
    for i0 in range(0, len(A), PAIR_BLOCK_ROWS):
        block = np.asarray(A[i0 : i0 + PAIR_BLOCK_ROWS], np.float32)
        s = block @ np.asarray(other, np.float32).T
        if B is None:  # upper triangle only
            s[np.arange(len(block))[:, None] + i0 >= np.arange(len(other))[None, :]] = -np.inf
        i, j = np.nonzero(s >= threshold)
        ra.append(i + i0)
        rb.append(j)
        sc.append(s[i, j])
    if not ra:
        return np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.float32)
    return np.concatenate(ra).astype(np.int64), np.concatenate(rb).astype(np.int64), np.concatenate(sc)


def lsh_pairs(index, row_of_id, threshold: float):
    """Pairs within the indexed set from LSH radius search (approximate: may miss pairs)."""
    ra, rb, sc = [], [], []
    for qid, (scores, ids) in zip(index.ids_, index.radius_neighbors(None, threshold)):
        keep = ids > qid
        ra += [row_of_id(qid)] * int(keep.sum())
        rb += [row_of_id(i) for i in ids[keep]]
        sc.append(scores[keep])
    scores = np.concatenate(sc) if sc else np.zeros(0, np.float32)
    return np.asarray(ra, np.int64), np.asarray(rb, np.int64), scores


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
    """Split a component into groups where every pair passes (greedy, strongest links first)."""
    groups: list[list[int]] = []
    degree = {m: 0 for m in members}
    for (x, y) in edges:
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


def find_pairs(col, threshold: float, *, method: str = "auto", against=None) -> list[Pair]:
    """Pairs of images in ``col`` (or between ``col`` and collection ``against``) above ``threshold``.

    ``method``: "exact" scans all pairs blockwise; "lsh" uses the collection's LSH index
    (radius search; approximate); "auto" picks LSH for large collections when it is built.
    Sorted by descending score, then ids.
    """
    if not -1.0 <= threshold <= 1.0:
        raise ValueError(f"threshold is a cosine similarity in [-1, 1], got {threshold}")
    meta = col.metadata_columns()
    if against is not None:
        if against.manifest["encoder"] != col.manifest["encoder"]:
            raise ValueError(f"Cannot compare collections built with different encoders "
                             f"({col.manifest['encoder']!r} vs {against.manifest['encoder']!r}).")
        ra, rb, sc = exact_pairs(col.embeddings, threshold, against.embeddings)
        other = against.metadata_columns()
    else:
        use = col.resolve_method(method)
        if use == "lsh" and col.manifest.get("dba"):
            use = "exact"  # the LSH index holds augmented vectors; duplicates use the raw ones
        if use == "lsh":
            ra, rb, sc = lsh_pairs(col.lsh, col.row_of_id, threshold)
        else:
            ra, rb, sc = exact_pairs(col.embeddings, threshold)
        other = meta
    pairs = [Pair(float(s), int(meta["id"][a]), int(other["id"][b]), meta["path"][a], other["path"][b])
             for a, b, s in zip(ra.tolist(), rb.tolist(), sc.tolist())]
    pairs.sort(key=lambda p: (-p.score, p.id_a, p.id_b))
    return pairs


def group_pairs(col, pairs: list[Pair], *, strict: bool = False) -> list[Group]:
    """Groups of near-duplicates.

    Connected components (or, with ``strict``, groups in which every pair passed).
    Deterministic: groups by size then smallest id; members by id.
    """
    meta = col.metadata_columns()
    if not pairs:
        return []
    edges = {(min(p.id_a, p.id_b), max(p.id_a, p.id_b)): p.score for p in pairs}
    member_sets = []
    for members in connected_groups([p.id_a for p in pairs], [p.id_b for p in pairs]):
        member_sets += strict_split(members, edges) if strict else [sorted(members)]
    groups = []
    for members in member_sets:
        rows = [col.row_of_id(i) for i in members]

        def rank(r):
            return keeper_rank(
                meta["path"][r], int(meta["width"][r]) * int(meta["height"][r]), int(meta["mtime_ns"][r])
            )

        keeper = members[rows.index(min(rows, key=rank))]
        inside = set(members)
        gp = sorted(((x, y, s) for (x, y), s in edges.items() if x in inside and y in inside),
                    key=lambda e: (-e[2], e[0], e[1]))
        groups.append(Group(ids=members, paths=[meta["path"][r] for r in rows], keeper=keeper, pairs=gp))
    groups.sort(key=lambda g: (-len(g.ids), g.ids[0]))
    return groups
