"""Exact cosine search: the ground truth every approximate index is measured against."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

# Rows scored per block: 8,192 x 1280 float32 = 40 MB per block, and the score block for
# 1,024 queries is 32 MB; keeps peak memory bounded on million-row collections.
EXACT_CHUNK_ROWS = 8_192
QUERY_CHUNK = 1_024


@dataclass(frozen=True)
class Hit:
    """One search result."""

    rank: int  # 1-based
    score: float  # cosine similarity in [-1, 1]
    id: int  # the image's id in the collection
    path: str
    label: str

    def to_dict(self) -> dict:
        """Plain dict (JSON-ready; a file name that is not UTF-8 is shown escaped)."""
        from .collection.segment import display

        return {**asdict(self), "path": display(self.path), "score": round(self.score, 6)}


def _merge_topk(scores: np.ndarray, idx: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Keep the ``k`` best per row of ``scores``, sorted descending (ties by index)."""
    if scores.shape[1] > k:
        part = np.argpartition(-scores, k - 1, axis=1)[:, :k]
        scores = np.take_along_axis(scores, part, axis=1)
        idx = np.take_along_axis(idx, part, axis=1)
    order = np.lexsort((idx, -scores), axis=1) if scores.size else np.zeros(scores.shape, int)
    return np.take_along_axis(scores, order, axis=1), np.take_along_axis(idx, order, axis=1)


def exact_topk(
    database: np.ndarray,
    queries: np.ndarray,
    k: int,
    *,
    exclude: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Top-``k`` rows of ``database`` by inner product (cosine for unit vectors).

    Parameters
    ----------
    database : ndarray, shape (n, d)
        Unit vectors (may be a read-only memmap; it is read in blocks).
    queries : ndarray, shape (q, d)
    k : int
        Results per query; fewer columns if ``n`` is smaller.
    exclude : ndarray of int, shape (q,), optional
        Row of ``database`` to leave out for each query (the query itself), or -1.

    Returns
    -------
    scores : ndarray, shape (q, k'), float32, descending
    indices : ndarray, shape (q, k'), int64 row numbers in ``database``
    """
    n = database.shape[0]
    queries = np.atleast_2d(np.asarray(queries, dtype=np.float32))
    kk = min(k, n - (1 if exclude is not None else 0))
    if kk <= 0 or queries.shape[0] == 0:
        return np.zeros((queries.shape[0], 0), np.float32), np.zeros((queries.shape[0], 0), np.int64)
    all_s, all_i = [], []
    for q0 in range(0, queries.shape[0], QUERY_CHUNK):
        q = queries[q0 : q0 + QUERY_CHUNK]
        best_s = np.full((q.shape[0], 0), -np.inf, np.float32)
        best_i = np.zeros((q.shape[0], 0), np.int64)
        for r0 in range(0, n, EXACT_CHUNK_ROWS):
            block = np.asarray(database[r0 : r0 + EXACT_CHUNK_ROWS], dtype=np.float32)
            s = q @ block.T
            if exclude is not None:
                ex = exclude[q0 : q0 + QUERY_CHUNK] - r0
                rows = np.nonzero((ex >= 0) & (ex < block.shape[0]))[0]
                s[rows, ex[rows]] = -np.inf
            if s.shape[1] > kk:  # the block's own top-k first: the merge then handles 2k columns, not the block
                i = np.argpartition(-s, kk - 1, axis=1)[:, :kk]
                s = np.take_along_axis(s, i, axis=1)
                i = i + np.int64(r0)
            else:
                i = np.broadcast_to(np.arange(r0, r0 + block.shape[0], dtype=np.int64), s.shape)
            best_s, best_i = _merge_topk(np.hstack([best_s, s]), np.hstack([best_i, i]), kk)
        all_s.append(best_s)
        all_i.append(best_i)
    return np.vstack(all_s), np.vstack(all_i)
