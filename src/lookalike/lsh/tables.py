"""Bucket tables as one sorted array (CSR-like): no per-item Python objects.

Every (table, bucket key) pair becomes one uint64 ``table << KEY_BITS | key``; all
tables live in a single sorted array ``keys`` with the aligned ``rows`` (row numbers).
A bucket is the slice between ``searchsorted(.., 'left')`` and ``'right'``, so the
lookup of every probe of every table is two vectorised calls.
"""

from __future__ import annotations

import numpy as np

KEY_BITS = 40  # bucket keys use the low 40 bits; the table number sits above them
KEY_MASK = np.uint64((1 << KEY_BITS) - 1)
MAX_TABLES = 1 << (64 - KEY_BITS)


def _tagged(codes: np.ndarray) -> np.ndarray:
    """``(..., L)`` codes -> table-tagged uint64 keys of the same shape."""
    n_tables = codes.shape[-1]
    if n_tables > MAX_TABLES:
        raise ValueError(f"At most {MAX_TABLES} tables are supported, got {n_tables}")
    tag = np.arange(n_tables, dtype=np.uint64) << np.uint64(KEY_BITS)
    return (codes.astype(np.uint64) & KEY_MASK) | tag


def build(codes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sorted ``keys (L*n,)`` uint64 and ``rows (L*n,)`` int32 from ``(n, L)`` codes."""
    n, n_tables = codes.shape
    tagged = _tagged(codes).T.ravel()  # table-major
    order = np.argsort(tagged, kind="stable")
    rows = np.tile(np.arange(n, dtype=np.int32), n_tables)[order]
    return tagged[order], rows


def insert(keys: np.ndarray, rows: np.ndarray, codes: np.ndarray, new_rows: np.ndarray):
    """Merge new ``(m, L)`` codes with row numbers ``new_rows`` into the tables (O(n))."""
    tagged = _tagged(codes).T.ravel()
    r_new = np.tile(np.asarray(new_rows, np.int32), codes.shape[1])
    order = np.argsort(tagged, kind="stable")
    tagged, r_new = tagged[order], r_new[order]
    pos = np.searchsorted(keys, tagged, side="right")
    return np.insert(keys, pos, tagged), np.insert(rows, pos, r_new)


def first_tables(keys: np.ndarray, rows: np.ndarray, n_tables: int) -> tuple[np.ndarray, np.ndarray]:
    """The part of the arrays that holds tables ``0 .. n_tables-1`` (a view, no copy)."""
    end = np.searchsorted(keys, np.uint64(n_tables) << np.uint64(KEY_BITS))
    return keys[:end], rows[:end]


def lookup(keys: np.ndarray, rows: np.ndarray, probe_keys: np.ndarray, *, with_probe: bool = False):
    """All (query, row) pairs whose bucket matches a probe key.

    Parameters
    ----------
    keys, rows : ndarray, shape (L*n,)
    probe_keys : ndarray, shape (q, L, P)
    with_probe : bool
        Also return each pair's probe index (0..P-1).

    Returns
    -------
    query_idx, row (, probe) : ndarray, shape (c,)
        Candidate pairs; a row may repeat for the same query (several tables/probes).
    """
    q, n_tables, n_probes = probe_keys.shape
    flat = _tagged(probe_keys.transpose(0, 2, 1)).ravel()  # (q, P, L) order
    lo = np.searchsorted(keys, flat, side="left")
    cnt = np.searchsorted(keys, flat, side="right") - lo
    nz = np.flatnonzero(cnt)
    lo, cnt = lo[nz], cnt[nz]
    total = int(cnt.sum())
    # positions lo[i] .. lo[i]+cnt[i]-1 for every probe, without a Python loop
    pos = np.repeat(lo - np.cumsum(cnt) + cnt, cnt) + np.arange(total)
    qidx = np.repeat(nz // (n_tables * n_probes), cnt)
    out = (qidx.astype(np.int64), rows[pos].astype(np.int64))
    if with_probe:
        out += (np.repeat((nz // n_tables) % n_probes, cnt),)
    return out


def unique_pairs(query_idx: np.ndarray, row: np.ndarray, n_rows: int) -> tuple[np.ndarray, np.ndarray]:
    """Deduplicate (query, row) pairs; sorted by query then row."""
    if len(row) == 0:
        return query_idx, row
    u = np.sort(query_idx * np.int64(n_rows) + row)
    u = u[np.r_[True, u[1:] != u[:-1]]]
    return u // n_rows, u % n_rows
