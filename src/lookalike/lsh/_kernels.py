"""Compiled single-query path (numba): bucket lookup, de-duplication and Hamming scoring in one
pass, with no intermediate arrays. Used when numba is installed; the numpy path gives the same
candidates (tests compare them).
"""

from __future__ import annotations

import numpy as np

try:
    from numba import njit
except ImportError:  # pragma: no cover - numba is a declared dependency
    njit = None


def _query_candidates(offsets, rows, buckets, codes, qcode, alive):
    """Unique live rows in the probed buckets, and each one's Hamming distance to ``qcode``.

    offsets (L', 2**b + 1) int32; rows (L', n) int32; buckets (L, P) int64 bucket ids;
    codes (W, n) uint64 word-major hash bits (or shape (0, n) for none); qcode (W,) uint64.
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
    n_words = codes.shape[0]
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
                    x = codes[w, r] ^ qcode[w]
                    # popcount (SWAR)
                    x = x - ((x >> np.uint64(1)) & np.uint64(0x5555555555555555))
                    x = (x & np.uint64(0x3333333333333333)) + ((x >> np.uint64(2)) & np.uint64(0x3333333333333333))
                    x = (x + (x >> np.uint64(4))) & np.uint64(0x0F0F0F0F0F0F0F0F)
                    h += np.int32((x * np.uint64(0x0101010101010101)) >> np.uint64(56))
                ham[m] = h
                m += 1
    return out[:m], ham[:m]


query_candidates = njit(cache=True, nogil=True)(_query_candidates) if njit is not None else None


def _csr_fill(buckets, rows, offsets):
    """Stable counting sort: ``rows`` placed by bucket (``offsets`` from the bucket counts)."""
    pos = offsets[:-1].copy()
    out = np.empty(len(rows), np.int32)
    for i in range(len(buckets)):
        b = buckets[i]
        out[pos[b]] = rows[i]
        pos[b] += 1
    return out


csr_fill = njit(cache=True, nogil=True)(_csr_fill) if njit is not None else None
