"""Bucket tables in CSR form: per table an offsets array over all buckets, and row numbers.

Table ``t`` maps a bucket id ``b`` (``bucket_bits`` wide) to ``rows[t, offsets[t, b]:offsets[t, b+1]]``.
A lookup is two vectorised gathers, however many tables and probes: no per-item Python
objects, no binary search. Keys wider than ``bucket_bits`` are folded into it (extra
collisions only add candidates, which are re-ranked anyway).
"""

from __future__ import annotations

import numpy as np

# Widest bucket id: 2**20 + 1 int32 offsets = 4 MB per table.
MAX_BUCKET_BITS = 20


def bucket_bits(key_bits: int | None, n: int) -> int:
    """Bucket id width: the key's width if it fits, else enough for ~1 row per bucket."""
    enough = max(8, int(n).bit_length() + 2)  # more buckets than this would be almost all empty
    return int(min(MAX_BUCKET_BITS, enough, key_bits if key_bits is not None else enough))


def bucket_of(keys: np.ndarray, bits: int) -> np.ndarray:
    """Fold uint64 keys to ``bits``-wide bucket ids (int64)."""
    k = keys.astype(np.uint64, copy=False)
    b = k ^ (k >> np.uint64(bits)) ^ (k >> np.uint64(2 * bits)) ^ (k >> np.uint64(3 * bits))
    return (b & np.uint64((1 << bits) - 1)).astype(np.int64)


def _stable_order(buckets: np.ndarray, bits: int) -> np.ndarray:
    """Stable argsort of bucket ids in O(n).

    numpy's radix sort of uint16 keys, in two least-significant-first passes when ids are
    wider than 16 bits.
    """
    if bits <= 16:
        return np.argsort(buckets.astype(np.uint16, copy=False), kind="stable")
    b = buckets.astype(np.uint32, copy=False)
    low = np.argsort((b & 0xFFFF).astype(np.uint16), kind="stable")
    return low[np.argsort((b[low] >> 16).astype(np.uint16), kind="stable")]


def _csr(buckets: np.ndarray, rows: np.ndarray, bits: int) -> tuple[np.ndarray, np.ndarray]:
    offsets = np.zeros((1 << bits) + 1, np.int32)
    np.cumsum(np.bincount(buckets, minlength=1 << bits), out=offsets[1:])
    return offsets, rows[_stable_order(buckets, bits)].astype(np.int32, copy=False)


def build(codes: np.ndarray, bits: int) -> tuple[np.ndarray, np.ndarray]:
    """CSR tables from ``(n, L)`` keys: ``offsets (L, 2**bits + 1)`` int32, ``rows (L, n)`` int32."""
    return build_from_buckets(bucket_of(codes, bits).T, bits)


def build_from_buckets(buckets: np.ndarray, bits: int) -> tuple[np.ndarray, np.ndarray]:
    """CSR tables from ``(L, n)`` bucket ids (already folded to ``bits``)."""
    n_tables, n = buckets.shape
    offsets = np.empty((n_tables, (1 << bits) + 1), np.int32)
    rows = np.empty((n_tables, n), np.int32)
    all_rows = np.arange(n, dtype=np.int32)
    for t in range(n_tables):
        offsets[t], rows[t] = _csr(buckets[t], all_rows, bits)
    return offsets, rows


def _buckets_of_positions(offsets_t: np.ndarray) -> np.ndarray:
    return np.repeat(np.arange(len(offsets_t) - 1), np.diff(offsets_t))


def insert(offsets, rows, codes, new_rows, bits):
    """Add ``(m, L)`` keys for ``new_rows``; returns new ``(offsets, rows)`` (O(n) per table)."""
    n_tables = offsets.shape[0]
    out_o = np.empty_like(offsets)
    out_r = np.empty((n_tables, rows.shape[1] + len(new_rows)), np.int32)
    for t in range(n_tables):
        b = np.concatenate([_buckets_of_positions(offsets[t]), bucket_of(codes[:, t], bits)])
        out_o[t], out_r[t] = _csr(b, np.concatenate([rows[t], new_rows]), bits)
    return out_o, out_r


def drop(offsets, rows, alive: np.ndarray, new_row: np.ndarray, bits):
    """Remove rows where ``alive`` is False and renumber the rest through ``new_row``."""
    n_tables = offsets.shape[0]
    n_alive = int(alive.sum())
    out_o = np.empty_like(offsets)
    out_r = np.empty((n_tables, n_alive), np.int32)
    for t in range(n_tables):
        keep = alive[rows[t]]
        b = _buckets_of_positions(offsets[t])[keep]
        out_o[t], out_r[t] = _csr(b, new_row[rows[t][keep]], bits)
    return out_o, out_r


def lookup(offsets: np.ndarray, rows: np.ndarray, probe_keys: np.ndarray, bits: int, *, with_probe: bool = False,
           max_pairs: int | None = None):
    """All (query, row) pairs whose bucket matches a probe key.

    Parameters
    ----------
    offsets : ndarray, shape (L', 2**bits + 1); rows : ndarray, shape (L', n)
        The tables (only the first ``L <= L'`` are used).
    probe_keys : ndarray, shape (q, L, P)
    with_probe : bool
        Also return each pair's probe index (0..P-1).
    max_pairs : int, optional
        Return None instead when there would be more pairs than this (bounds memory).

    Returns
    -------
    query_idx, row (, probe) : ndarray, shape (c,)
        Candidate pairs; a row may repeat for the same query (several tables/probes).
    """
    q, n_tables, n_probes = probe_keys.shape
    width, n = offsets.shape[1], rows.shape[1]
    b = bucket_of(probe_keys, bits)  # (q, L, P)
    idx = (np.arange(n_tables)[None, :, None] * width + b).ravel()
    flat_o = offsets.reshape(-1)
    lo = flat_o[idx].astype(np.int64)
    cnt = flat_o[idx + 1] - lo
    nz = np.flatnonzero(cnt)
    lo, cnt = lo[nz], cnt[nz]
    table = (nz // n_probes) % n_tables
    total = int(cnt.sum())
    if max_pairs is not None and total > max_pairs:
        return None
    # positions lo[i] .. lo[i]+cnt[i]-1 of table t[i], without a Python loop
    start = lo + table * n
    pos = np.repeat(start - np.cumsum(cnt) + cnt, cnt) + np.arange(total)
    qidx = np.repeat(nz // (n_tables * n_probes), cnt)
    out = (qidx.astype(np.int64), rows.reshape(-1)[pos].astype(np.int64))
    if with_probe:
        out += (np.repeat(nz % n_probes, cnt),)
    return out


def unique_pairs(query_idx: np.ndarray, row: np.ndarray, n_rows: int) -> tuple[np.ndarray, np.ndarray]:
    """Deduplicate (query, row) pairs; sorted by query then row."""
    if len(row) == 0:
        return query_idx, row
    u = np.sort(query_idx * np.int64(n_rows) + row)
    u = u[np.r_[True, u[1:] != u[:-1]]]
    return u // n_rows, u % n_rows
