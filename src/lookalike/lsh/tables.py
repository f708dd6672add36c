"""Bucket tables as sorted arrays (CSR-like): no per-item Python objects.

Table ``t`` is two aligned arrays: ``keys[t]`` (sorted uint64 bucket keys) and
``rows[t]`` (row numbers). A bucket is the slice ``searchsorted(key, 'left')`` ..
``searchsorted(key, 'right')``; lookups of many keys are one vectorised call per table.
"""

from __future__ import annotations

import numpy as np


def build(codes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sort ``(n, L)`` codes per table; returns ``keys (L, n)`` uint64 and ``rows (L, n)`` int32."""
    n, n_tables = codes.shape
    keys = np.empty((n_tables, n), np.uint64)
    rows = np.empty((n_tables, n), np.int32)
    for t in range(n_tables):
        order = np.argsort(codes[:, t], kind="stable")
        keys[t], rows[t] = codes[order, t], order
    return keys, rows


def insert(keys: np.ndarray, rows: np.ndarray, codes: np.ndarray, new_rows: np.ndarray):
    """Merge new ``(m, L)`` codes with row numbers ``new_rows`` into the tables (O(n) per table)."""
    n_tables = keys.shape[0]
    out_k = np.empty((n_tables, keys.shape[1] + len(new_rows)), np.uint64)
    out_r = np.empty(out_k.shape, np.int32)
    for t in range(n_tables):
        order = np.argsort(codes[:, t], kind="stable")
        k_new, r_new = codes[order, t], new_rows[order].astype(np.int32)
        pos = np.searchsorted(keys[t], k_new, side="right")
        out_k[t] = np.insert(keys[t], pos, k_new)
        out_r[t] = np.insert(rows[t], pos, r_new)
    return out_k, out_r


def lookup(keys: np.ndarray, rows: np.ndarray, probe_keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """All (query, row) pairs whose bucket matches a probe key.

    Parameters
    ----------
    keys, rows : ndarray, shape (L, n)
    probe_keys : ndarray, shape (q, L, P)

    Returns
    -------
    query_idx, row : ndarray, shape (c,)
        Candidate pairs; a row may repeat for the same query (different tables/probes).
    """
    q, n_tables, n_probes = probe_keys.shape
    qs, rs = [], []
    qidx = np.repeat(np.arange(q), n_probes)
    for t in range(n_tables):
        pk = probe_keys[:, t, :].ravel()
        lo = np.searchsorted(keys[t], pk, side="left")
        hi = np.searchsorted(keys[t], pk, side="right")
        counts = hi - lo
        total = int(counts.sum())
        if total == 0:
            continue
        nz = counts > 0
        lo, counts = lo[nz], counts[nz]
        # positions lo[i] .. lo[i]+counts[i]-1 for every probe, without a Python loop
        starts = np.repeat(lo - np.cumsum(counts) + counts, counts)
        pos = starts + np.arange(total)
        rs.append(rows[t][pos])
        qs.append(np.repeat(qidx[nz], counts))
    if not rs:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    return np.concatenate(qs).astype(np.int64), np.concatenate(rs).astype(np.int64)


def unique_pairs(query_idx: np.ndarray, row: np.ndarray, n_rows: int) -> tuple[np.ndarray, np.ndarray]:
    """Deduplicate (query, row) pairs; sorted by query then row."""
    if len(row) == 0:
        return query_idx, row
    u = np.unique(query_idx * np.int64(n_rows) + row)
    return u // n_rows, u % n_rows
