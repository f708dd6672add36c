"""Near-duplicate pairs: the blocked exact all-pairs scan, LSH radius search, and rotations.

Every scan keeps memory bounded (blocks of rows, an optional cap on the pairs kept) and may be
given a progress callback. With a collection indexed with rotations (:mod:`lookalike.rotations`)
the variant embeddings are scanned too and a pair keeps its best score. Grouping the pairs is
:mod:`lookalike.grouping`; groups ready to act on are :func:`lookalike.dupes.review_groups`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

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


# Queries per neighbour search when looking for pairs to verify (bounded memory, as above).
VERIFY_QUERY_ROWS = 4_096


def verified_pairs(col, threshold: float, *, low: float | None = None, k: int | None = None,
                   method: str = "auto", progress: Progress | None = None, workers: int | None = None) -> list[Pair]:
    """Pairs below ``threshold`` that a geometric check shows to be the same photo.

    Candidates are each image's ``k`` nearest neighbours (plain cosine, exact or LSH) whose
    cosine is in ``[low, threshold)``: the hard copies (blur + noise, 15-25 degree turns,
    watermarks, thumbnails, screenshots, deep crops) score there, among similar photos. Each
    candidate is checked with local features + RANSAC (:func:`lookalike.verify.verify_pairs`,
    OpenCV, the ``verify`` extra); the ones that pass are returned with their cosine as score.
    The cost grows with the collection (at most ``k`` checks per image), not its square; features
    are computed only for the images of candidate pairs, in ``workers`` threads (default: the cores).
    ``progress`` gets the fraction done: the neighbour search is the first 5 %.
    """
    from . import verify
    from .collection import LSH_MIN_IMAGES
    from .storage import CollectionError

    low = verify.BAND_LOW if low is None else float(low)
    k = verify.TOP_K if k is None else int(k)
    n = len(col)
    if n < 2 or low >= threshold:
        if progress is not None:
            progress(1.0)
        return []
    how = "exact"  # plain cosine neighbours: the LSH index where it serves, else the exact scan
    if method != "exact" and n >= LSH_MIN_IMAGES and col.manifest.get("lsh"):
        try:
            how = col.resolve_method("lsh")
        except CollectionError:  # DBA on: search is exact
            how = "exact"
    ids, paths = col.ids, col.metadata_columns()["path"]
    emb = col.embeddings
    seen: set[tuple[int, int]] = set()
    cand_a, cand_b, cand_s = [], [], []
    for start in range(0, n, VERIFY_QUERY_ROWS):
        rows = np.arange(start, min(n, start + VERIFY_QUERY_ROWS))
        vecs = np.asarray(emb[rows], np.float32)
        for r, hits in zip(rows.tolist(), col.search_vectors(vecs, min(k, n - 1), method=how, exclude_rows=rows)):
            for h in hits:
                o = col.row_of_id(h.id)
                key = (min(r, o), max(r, o))
                if o == r or key in seen:
                    continue
                seen.add(key)
                s = float(np.dot(vecs[r - start], np.asarray(emb[o], np.float32)))
                if low <= s < threshold:
                    cand_a.append(key[0])
                    cand_b.append(key[1])
                    cand_s.append(s)
        if progress is not None:
            progress(0.05 * min(n, start + VERIFY_QUERY_ROWS) / n)
    if not cand_a:
        if progress is not None:
            progress(1.0)
        return []
    ok, _ = verify.verify_pairs([paths[a] for a in cand_a], [paths[b] for b in cand_b], workers=workers,
                                progress=_share(progress, 0.05, 1.0))
    out = [Pair(score=s, id_a=int(ids[a]), id_b=int(ids[b]), path_a=str(paths[a]), path_b=str(paths[b]))
           for a, b, s, good in zip(cand_a, cand_b, cand_s, ok) if good]
    if progress is not None:
        progress(1.0)
    return sorted(out, key=lambda p: (-p.score, p.id_a, p.id_b))
