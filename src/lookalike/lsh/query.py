"""How a fitted LSH index answers queries: candidates from the tables, then exact re-ranking.

The path is chosen once, when the index is fitted or loaded (:func:`path_for`), from what the
index holds; it does not change with ``add``/``remove``:

* :class:`KeyPath` (brp, minhash): probe keys, bucket lookup. One query runs compiled
  (:func:`_kernels.query_candidates`), a batch in numpy (:mod:`.tables`).
* :class:`HyperplanePath` (hyperplane without Hamming codes): one query is compiled end to end
  (projection, multi-probe, lookup: :func:`_kernels.query_one`); batches as above.
* :class:`HammingPath` (hyperplane with Hamming codes, ``tables x bits >= 128``): candidates are
  cut to the ``rerank`` closest in Hamming distance before the exact cosine; batches of outside
  queries run on the compiled, parallel block kernels.

A path holds no state: every method takes the index (``ix``) and reads its tables.
"""

from __future__ import annotations

import numpy as np

from . import _kernels, families, tables

# Queries processed together: bounds the gathered candidate block (queries x candidates x dim).
QUERY_BATCH = 32
# Queries projected in one BLAS call by the compiled batch path.
PROJECT_BATCH = 4096
# Queries per call of the compiled (parallel) batch kernels: each call wakes numba's threads,
# which costs ~10 ms on a busy 2-core machine (measured), so calls must carry many queries.
KERNEL_BATCH = 1024
# Bits needed before Hamming distance is a good enough angle estimate to filter on.
MIN_HAMMING_BITS = 128
_NO_CODES = np.empty((0, 0), np.uint64)  # "no Hamming codes" for the compiled kernels
_NO_QCODE = np.empty(0, np.uint64)


def hamming_filter(family: str, rerank: int, n_tables: int, n_bits: int) -> bool:
    """Whether an index with these settings keeps Hamming codes and cuts candidates on them."""
    return family == "hyperplane" and bool(rerank) and n_tables * n_bits >= MIN_HAMMING_BITS


class KeyPath:
    """Any family: bucket keys looked up in every table (see the module docstring)."""

    def candidates(self, ix, Q: np.ndarray, n_probes: int | None = None, filtered: bool = True):
        """Unique ``(query_index, row)`` pairs for queries ``Q`` ``(q, d)``, sorted by query."""
        n_probes = int(n_probes or ix.n_probes_)
        if len(Q) == 1:
            rows = self.one(ix, Q[0], n_probes, filtered)
            return np.zeros(len(rows), np.int64), rows
        pk = ix.family_.probe_keys(Q, n_probes)
        qi, rows = tables.lookup(ix._keys, ix._rows, pk, ix.bucket_bits_)
        qi, rows = tables.unique_pairs(qi, rows, len(ix._X))
        keep = ix._alive[rows]
        qi, rows = qi[keep], rows[keep]
        if filtered:
            qi, rows = self.cut(ix, len(Q), pk, qi, rows)
        return qi, rows

    def one(self, ix, q: np.ndarray, n_probes: int, filtered: bool) -> np.ndarray:
        """Candidate rows of one query ``q`` ``(d,)`` (compiled)."""
        buckets = tables.bucket_of(ix.family_.probe_keys(q[None], n_probes)[0], ix.bucket_bits_)
        return _kernels.query_candidates(ix._keys, ix._rows, buckets, _NO_CODES, _NO_QCODE, ix._alive)[0]

    def cut(self, ix, nq: int, pk, qi, rows):
        """The candidates kept for exact re-ranking (all of them: no Hamming codes)."""
        return qi, rows

    def kneighbors(self, ix, Q: np.ndarray, k: int, n_probes: int | None, rerank: int | None,
                   self_rows: np.ndarray | None):
        """Top-``k`` ``(scores, ids)`` of queries ``Q``; ``self_rows``: each query's own row, excluded."""
        out_s = np.full((len(Q), k), -np.inf, np.float32)
        out_i = np.full((len(Q), k), -1, np.int64)
        if len(Q) == 1 and self_rows is None:  # the latency path: no grouping by query
            _, rows = self.candidates(ix, Q, n_probes)
            s = exact_scores(ix, Q, None, rows)
            top = np.argpartition(-s, k - 1)[:k] if len(s) > k else np.arange(len(s))
            top = top[np.lexsort((rows[top], -s[top]))]
            out_s[0, : len(top)], out_i[0, : len(top)] = s[top], ix._ids[rows[top]]
            return out_s, out_i
        for b0, q, qi, rows, s in self._scored_blocks(ix, Q, n_probes, self_rows):
            order = np.lexsort((rows, -s, qi))
            qi, rows, s = qi[order], rows[order], s[order]
            starts = np.searchsorted(qi, np.arange(len(q)))
            rank = np.arange(len(qi)) - starts[qi]
            m = (rank < k) & np.isfinite(s)
            out_s[b0 + qi[m], rank[m]] = s[m]
            out_i[b0 + qi[m], rank[m]] = ix._ids[rows[m]]
        return out_s, out_i

    def radius_neighbors(self, ix, Q: np.ndarray, threshold: float, n_probes: int | None,
                         self_rows: np.ndarray | None) -> list:
        """Per query, ``(scores, ids)`` of the candidates with cosine >= ``threshold``, best first."""
        result = []
        for _, q, qi, rows, s in self._scored_blocks(ix, Q, n_probes, self_rows):
            m = s >= threshold
            qi, rows, s = qi[m], rows[m], s[m]
            order = np.lexsort((rows, -s, qi))
            qi, rows, s = qi[order], rows[order], s[order]
            bounds = np.searchsorted(qi, np.arange(len(q) + 1))
            for j in range(len(q)):
                sl = slice(bounds[j], bounds[j + 1])
                result.append((s[sl], ix._ids[rows[sl]]))
        return result

    def _scored_blocks(self, ix, Q, n_probes, self_rows):
        """``(first query, queries, query_index, rows, cosines)`` per block of ``QUERY_BATCH`` queries."""
        for b0 in range(0, len(Q), QUERY_BATCH):
            q = Q[b0 : b0 + QUERY_BATCH]
            qi, rows = self.candidates(ix, q, n_probes)
            ex = None if self_rows is None else self_rows[b0 : b0 + QUERY_BATCH]
            yield b0, q, qi, rows, exact_scores(ix, q, qi, rows, ex)


class HyperplanePath(KeyPath):
    """Hyperplane family: one query compiled end to end, from its projection."""

    def one(self, ix, q, n_probes, filtered):  # noqa: D102
        fam = ix.family_
        proj = _kernels.project_one(np.asarray(q, np.float32), np.asarray(fam.mean_, np.float32),
                                    np.asarray(fam.planes_, np.float32)).reshape(fam.n_tables, fam.n_bits)
        return _kernels.query_one(proj, n_probes, families.PROBE_BITS, ix.bucket_bits_, ix._keys, ix._rows,
                                  self._codes(ix), ix._alive, ix.rerank_ if filtered else 0)

    def _codes(self, ix):
        return _NO_CODES


class HammingPath(HyperplanePath):
    """Hyperplane family with Hamming codes: the ``rerank`` Hamming-nearest candidates only."""

    def _codes(self, ix):
        return ix._codes

    def cut(self, ix, nq, pk, qi, rows):
        """Per query, the ``rerank_`` candidates whose hash bits are closest to the query's."""
        if len(rows) <= ix.rerank_:
            return qi, rows
        qcodes = families.hamming_codes(pk[:, :, 0], ix.n_bits_)  # (q, words)
        cand = np.take(ix._codes, rows, axis=0)  # (c, words); np.take beats fancy indexing 3x here
        cand ^= qcodes[qi]
        ham = np.bitwise_count(cand).sum(axis=1, dtype=np.int32)
        order = np.lexsort((ham, qi))
        qi, rows = qi[order], rows[order]
        starts = np.searchsorted(qi, np.arange(nq))
        keep = (np.arange(len(qi)) - starts[qi]) < ix.rerank_
        return qi[keep], rows[keep]

    def kneighbors(self, ix, Q, k, n_probes, rerank, self_rows):  # noqa: D102
        if len(Q) == 1 or self_rows is not None:
            return super().kneighbors(ix, Q, k, n_probes, rerank, self_rows)
        # The Hamming cut bounds the candidates: compiled block kernels on all cores. All
        # projections first: a BLAS call between the kernels would leave BLAS threads
        # spinning against numba's (2x slower on 2 cores).
        out_s = np.full((len(Q), k), -np.inf, np.float32)
        out_i = np.full((len(Q), k), -1, np.int64)
        for c0 in range(0, len(Q), PROJECT_BATCH):
            proj = ix.family_.project(Q[c0 : c0 + PROJECT_BATCH])
            for b0 in range(0, len(proj), KERNEL_BATCH):
                sl = slice(c0 + b0, c0 + b0 + KERNEL_BATCH)
                self._block(ix, Q[sl], proj[b0 : b0 + KERNEL_BATCH], k, n_probes, rerank, out_s[sl], out_i[sl])
        return out_s, out_i

    def _block(self, ix, Q, proj, k, n_probes, rerank, out_s, out_i):
        """Top-``k`` of a block of queries (``proj``: their projections), compiled and in parallel.

        Each query's cut candidates, then their exact inner products.
        """
        rows = _kernels.query_batch(proj, int(n_probes or ix.n_probes_), families.PROBE_BITS, ix.bucket_bits_,
                                    ix._keys, ix._rows, ix._codes, ix._alive, int(rerank or ix.rerank_))
        s = _kernels.dot(ix._X, Q, rows)
        kk = min(k, rows.shape[1])
        top = np.argpartition(-s, kk - 1, axis=1)[:, :kk] if rows.shape[1] > kk else \
            np.broadcast_to(np.arange(rows.shape[1]), s.shape)
        ts, tr = np.take_along_axis(s, top, axis=1), np.take_along_axis(rows, top, axis=1)
        order = np.lexsort((tr, -ts), axis=1)
        ts, tr = np.take_along_axis(ts, order, axis=1), np.take_along_axis(tr, order, axis=1)
        ok = np.isfinite(ts)
        out_s[:, :kk] = np.where(ok, ts, -np.inf)
        out_i[:, :kk] = np.where(ok, ix._ids[np.where(ok, tr, 0)], -1)


def exact_scores(ix, Q: np.ndarray, qi: np.ndarray | None, rows: np.ndarray,
                 exclude_rows: np.ndarray | None = None) -> np.ndarray:
    """Exact cosine of each ``(query, row)`` candidate pair; ``qi`` must be sorted (one gemv per query).

    One query: compiled, without gathering a copy of the rows. ``exclude_rows``: per query, a
    row whose score becomes ``-inf`` (the query itself).
    """
    if len(Q) == 1:
        scores = _kernels.dot(ix._X, Q[:1], rows[None])[0]
    else:
        scores = np.empty(len(rows), np.float32)
        bounds = np.searchsorted(qi, np.arange(len(Q) + 1))
        for j in range(len(Q)):
            a, b = bounds[j], bounds[j + 1]
            if b > a:
                scores[a:b] = ix._X[rows[a:b]].astype(np.float32, copy=False) @ Q[j]
    if exclude_rows is not None:
        scores[rows == exclude_rows[0 if qi is None else qi]] = -np.inf
    return scores


_PATHS = {"keys": KeyPath(), "hyperplane": HyperplanePath(), "hamming": HammingPath()}


def path_for(family: str, has_codes: bool) -> KeyPath:
    """The query path of a fitted index of ``family`` (with Hamming codes or not)."""
    if family != "hyperplane":
        return _PATHS["keys"]
    return _PATHS["hamming" if has_codes else "hyperplane"]
