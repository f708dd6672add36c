"""Compiled query kernels (numba, a required dependency), used by :mod:`.query`.

Probes, bucket lookup, de-duplication and Hamming scoring in one pass, with no intermediate
arrays, and the exact re-ranking dot products: one query at a time (the latency path) and
blocks of queries in parallel. The numpy batch path of :mod:`.query` gives the same
candidates (tests compare them).

numba is imported and the kernels compiled (from its on-disk cache) on first use of
``query_one`` / ``query_candidates``, not at import: numba and LLVM take ~130 MB of memory and
~1 s, which hashing and building the tables do not need.
"""

from __future__ import annotations

import numpy as np

# Compiled on first access (module __getattr__); the numba-only helpers they call are
# replaced by their compiled versions at the same time.
_COMPILED = ("query_one", "query_batch", "rerank_batch", "rerank_batch_half", "query_candidates", "project_one")
prange = range  # numba.prange once numba is loaded


def _query_candidates(offsets, rows, buckets, codes, qcode, alive):
    """Unique live rows in the probed buckets, and each one's Hamming distance to ``qcode``.

    offsets (L', 2**b + 1) int32; rows (L', n) int32; buckets (L, P) int64 bucket ids;
    codes (n, W) uint64 row-major hash bits, one cache line per candidate (or shape (n, 0) for none); qcode (W,) uint64.
    """
    n_tables, n_probes = buckets.shape
    n = rows.shape[1]
    seen = np.zeros(n, np.bool_)
    total = 0
    for t in range(n_tables):
        for p in range(n_probes):
            b = buckets[t, p]
            total += offsets[t, b + 1] - offsets[t, b]
    out = np.empty(total, np.int64)
    ham = np.zeros(total, np.int32)
    m = 0
    n_words = codes.shape[1]
    for t in range(n_tables):
        for p in range(n_probes):
            b = buckets[t, p]
            for j in range(offsets[t, b], offsets[t, b + 1]):
                r = rows[t, j]
                if seen[r] or not alive[r]:
                    continue
                seen[r] = True
                out[m] = r
                h = 0
                for w in range(n_words):
                    x = codes[r, w] ^ qcode[w]
                    # popcount (SWAR)
                    x = x - ((x >> np.uint64(1)) & np.uint64(0x5555555555555555))
                    x = (x & np.uint64(0x3333333333333333)) + ((x >> np.uint64(2)) & np.uint64(0x3333333333333333))
                    x = (x + (x >> np.uint64(4))) & np.uint64(0x0F0F0F0F0F0F0F0F)
                    h += np.int32((x * np.uint64(0x0101010101010101)) >> np.uint64(56))
                ham[m] = h
                m += 1
    return out[:m], ham[:m]


def _probe_buckets(proj, n_probes, probe_bits, bits):
    """Multi-probe bucket ids ``(L, P')`` and own codes ``(L,)`` of one query's projections ``(L, K)``.

    The same probes as ``families.probe_from_projection`` (patterns of the ``probe_bits``
    lowest-margin bits by smallest sum of squared margins).
    """
    n_tables, n_bits = proj.shape
    m = min(probe_bits, n_bits, max(n_probes - 1, 0))
    n_pat = 1 << m
    n_out = min(n_probes, n_pat)
    buckets = np.empty((n_tables, n_out), np.int64)
    codes = np.zeros(n_tables, np.uint64)
    mask = (1 << bits) - 1
    scores = np.empty(2 * n_out + 2, np.float64)  # open perturbation sets: score, bit set, largest bit
    flips = np.empty(2 * n_out + 2, np.int64)
    top = np.empty(2 * n_out + 2, np.int64)
    low = np.empty(max(m, 1), np.int64)
    low_sq = np.empty(max(m, 1), np.float64)
    taken = np.empty(n_bits, np.bool_)
    for t in range(n_tables):
        code = 0
        for j in range(n_bits):
            taken[j] = False
            if proj[t, j] > 0:
                code |= 1 << j
        codes[t] = code
        for i in range(m):  # the m bits with the smallest |margin|, smallest first
            best, best_v = -1, np.inf
            for j in range(n_bits):
                v = abs(proj[t, j])
                if not taken[j] and v < best_v:
                    best, best_v = j, v
            taken[best] = True
            low[i] = best
            low_sq[i] = np.float64(best_v) * np.float64(best_v)
        # Perturbation sets in increasing score order (Lv et al. 2007): from the best set so
        # far, "shift" replaces its largest bit i by i+1, "expand" adds i+1; every subset of
        # the m bits is generated once. At most 2 * n_out sets are open at a time.
        buckets[t, 0] = (code ^ (code >> bits) ^ (code >> (2 * bits)) ^ (code >> (3 * bits))) & mask
        n_open = 0
        if n_out > 1:
            scores[0], flips[0], top[0] = low_sq[0], 1, 0
            n_open = 1
        for o in range(1, n_out):
            best = 0
            for h in range(1, n_open):
                if scores[h] < scores[best]:
                    best = h
            sc, f, i = scores[best], flips[best], top[best]
            n_open -= 1
            scores[best], flips[best], top[best] = scores[n_open], flips[n_open], top[n_open]
            k = code
            for j in range(m):
                if (f >> j) & 1:
                    k ^= 1 << low[j]
            buckets[t, o] = (k ^ (k >> bits) ^ (k >> (2 * bits)) ^ (k >> (3 * bits))) & mask
            if i + 1 < m:
                scores[n_open], flips[n_open], top[n_open] = (
                    sc - low_sq[i] + low_sq[i + 1],
                    (f ^ (1 << i)) | (1 << (i + 1)),
                    i + 1,
                )
                scores[n_open + 1], flips[n_open + 1], top[n_open + 1] = sc + low_sq[i + 1], f | (1 << (i + 1)), i + 1
                n_open += 2
    return buckets, codes


def _pack_query(codes, n_bits, n_words):
    """One query's per-table codes packed like ``families.hamming_codes``.

    np.packbits order: big-endian bits in each byte, bytes little-endian in each uint64 word.
    """
    out = np.zeros(n_words, np.uint64)
    for t in range(len(codes)):
        for j in range(n_bits):
            if (codes[t] >> np.uint64(j)) & np.uint64(1):
                i = t * n_bits + j
                out[i // 64] |= np.uint64(1) << np.uint64(((i // 8) % 8) * 8 + 7 - i % 8)
    return out


def _project_one(q, mean, planes):
    """``(q - mean) @ planes`` for one query, without BLAS.

    A BLAS call for a single query wakes BLAS's threads, which costs ~8 ms on a busy 2-core
    machine (measured; 0.3 ms with one BLAS thread), 30x the rest of the query.
    """
    d, m = planes.shape
    out = np.zeros(m, np.float32)
    for i in range(d):
        x = q[i] - mean[i]
        if x != 0.0:
            for j in range(m):
                out[j] += x * planes[i, j]
    return out


def _query_one(proj, n_probes, probe_bits, bits, offsets, rows, codes, alive, rerank):
    """The whole candidate step of one hyperplane query.

    Probes, bucket scan, de-duplication, Hamming distance, and (``rerank`` > 0) the
    ``rerank`` Hamming-nearest candidates (ties at the cut kept in scan order).
    """
    buckets, own = _probe_buckets(proj, n_probes, probe_bits, bits)
    qcode = _pack_query(own, proj.shape[1], codes.shape[1]) if codes.shape[1] else np.zeros(0, np.uint64)
    cand, ham = _query_candidates(offsets, rows, buckets, codes, qcode, alive)
    if rerank <= 0 or codes.shape[1] == 0 or len(cand) <= rerank:
        return cand
    hist = np.zeros(codes.shape[1] * 64 + 2, np.int64)
    for h in ham:
        hist[h] += 1
    cut, total = 0, 0
    while total + hist[cut] < rerank:
        total += hist[cut]
        cut += 1
    room = rerank - total  # rows at distance == cut that still fit
    out = np.empty(rerank, np.int64)
    m = 0
    for i in range(len(cand)):
        if ham[i] < cut or (ham[i] == cut and room > 0):
            if ham[i] == cut:
                room -= 1
            out[m] = cand[i]
            m += 1
    return out


def _query_batch(proj, n_probes, probe_bits, bits, offsets, rows, codes, alive, rerank):
    """:func:`_query_one` for a block of queries ``proj`` ``(q, L, K)``, on all cores.

    Returns ``(q, rerank)`` candidate rows, padded with -1.
    """
    out = np.full((proj.shape[0], rerank), -1, np.int64)
    for j in prange(proj.shape[0]):
        r = _query_one(proj[j], n_probes, probe_bits, bits, offsets, rows, codes, alive, rerank)
        out[j, : len(r)] = r
    return out


def _dot_rows(X, q, rows):
    """Inner products of ``q`` with the rows ``X[rows]`` (-inf for row -1), without gathering a copy."""
    out = np.full(len(rows), -np.inf, np.float32)
    for i in range(len(rows)):
        r = rows[i]
        if r >= 0:
            acc = np.float32(0.0)
            for t in range(X.shape[1]):
                acc += X[r, t] * q[t]
            out[i] = acc
    return out


def _dot_rows_half(X, half, q, rows):
    """:func:`_dot_rows` for float16 storage viewed as uint16.

    numba has no float16 and cannot branch on an array's dtype inside one function, hence this
    twin: ``half`` is the float32 value of every half-precision bit pattern.
    """
    out = np.full(len(rows), -np.inf, np.float32)
    for i in range(len(rows)):
        r = rows[i]
        if r >= 0:
            acc = np.float32(0.0)
            for t in range(X.shape[1]):
                acc += half[X[r, t]] * q[t]
            out[i] = acc
    return out


def _rerank_batch(X, Q, rows):
    """:func:`_dot_rows` for queries ``Q`` ``(q, d)`` and their rows ``(q, R)``, on all cores."""
    out = np.empty(rows.shape, np.float32)
    for j in prange(rows.shape[0]):
        out[j] = _dot_rows(X, Q[j], rows[j])
    return out


def _rerank_batch_half(X, half, Q, rows):
    """:func:`_dot_rows_half` for a block of queries, on all cores."""
    out = np.empty(rows.shape, np.float32)
    for j in prange(rows.shape[0]):
        out[j] = _dot_rows_half(X, half, Q[j], rows[j])
    return out


def dot(X, Q, rows):
    """Exact inner products of queries ``Q`` ``(q, d)`` with their candidate rows ``(q, R)``.

    Rows index the stored vectors ``X`` (float32 or float16); -1 means none (score -inf).
    Compiled, parallel over queries when there are several.
    """
    Q = np.ascontiguousarray(Q, np.float32)
    if len(Q) == 1:
        if X.dtype == np.float16:
            return _dot_rows_half(X.view(np.uint16), half_table(), Q[0], rows[0])[None]
        return _dot_rows(X, Q[0], rows[0])[None]
    if X.dtype == np.float16:
        return rerank_batch_half(X.view(np.uint16), half_table(), Q, rows)  # noqa: F821 - set by __getattr__
    return rerank_batch(X, Q, rows)  # noqa: F821


HALF_TABLE = None


def half_table() -> np.ndarray:
    """float32 value of every float16 bit pattern (for :func:`_dot_rows` on float16 storage)."""
    global HALF_TABLE
    if HALF_TABLE is None:
        HALF_TABLE = np.arange(1 << 16, dtype=np.uint32).astype(np.uint16).view(np.float16).astype(np.float32)
    return HALF_TABLE


def __getattr__(name):  # PEP 562: compile on first access
    if name not in _COMPILED:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    from numba import njit, prange

    # numba resolves a kernel's globals when it first compiles it (at its first call), so
    # replacing every helper with its compiled version here, in one go, is enough.
    jit = njit(cache=True, nogil=True)
    fast = njit(cache=True, nogil=True, fastmath=True)
    par = njit(cache=True, nogil=True, parallel=True)
    g = {"prange": prange, "_probe_buckets": jit(_probe_buckets), "_pack_query": jit(_pack_query),
         "_dot_rows": fast(_dot_rows), "_dot_rows_half": fast(_dot_rows_half),
         "query_batch": par(_query_batch), "rerank_batch": par(_rerank_batch),
         "rerank_batch_half": par(_rerank_batch_half)}
    g["_query_candidates"] = g["query_candidates"] = jit(_query_candidates)
    g["_query_one"] = g["query_one"] = jit(_query_one)
    g["project_one"] = fast(_project_one)
    globals().update(g)
    return globals()[name]
