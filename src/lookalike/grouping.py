"""Near-duplicate pairs into groups: connected components, strict groups and the suggested keeper."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np

from .pairs import Pair


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
