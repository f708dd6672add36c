"""Retrieval quality measures: P@k and mAP (leave-one-out), recall of approximate search."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from .search import exact_topk


def class_retrieval(embeddings: np.ndarray, labels: Sequence[str], k: int = 10) -> dict:
    """Leave-one-out class retrieval: every image queries all the others.

    Parameters
    ----------
    embeddings : ndarray, shape (n, d)
        Unit vectors.
    labels : sequence of str, length n
    k : int, default 10

    Returns
    -------
    dict
        ``p_at_1``, ``p_at_k`` (mean precision of the top 1 / top k) and ``map`` (mean
        average precision over the full ranking), plus ``n`` and ``k``.
    """
    emb = np.asarray(embeddings, dtype=np.float32)
    lab = np.asarray(labels)
    n = len(lab)
    _, codes = np.unique(lab, return_inverse=True)
    _, idx = exact_topk(emb, emb, k, exclude=np.arange(n))
    same = codes[idx] == codes[:, None]
    aps = []
    for q0 in range(0, n, 512):  # full ranking per block of queries for mAP
        s = emb[q0 : q0 + 512] @ emb.T
        rows = np.arange(s.shape[0])
        s[rows, q0 + rows] = -np.inf
        order = np.argsort(-s, axis=1)[:, :-1]
        rel = codes[order] == codes[q0 : q0 + 512, None]
        hits = np.cumsum(rel, axis=1)
        ranks = np.arange(1, rel.shape[1] + 1)
        n_rel = np.maximum(rel.sum(axis=1), 1)
        aps.append(((hits / ranks) * rel).sum(axis=1) / n_rel)
    return {"n": n, "k": k, "p_at_1": float(same[:, 0].mean()), "p_at_k": float(same.mean()),
            "map": float(np.concatenate(aps).mean())}


def recall_at_k(approx_ids: np.ndarray, exact_ids: np.ndarray) -> float:
    """Fraction of the exact top-k found by the approximate top-k (row-wise, averaged)."""
    approx_ids, exact_ids = np.atleast_2d(approx_ids), np.atleast_2d(exact_ids)
    k = exact_ids.shape[1]
    if k == 0:
        return 1.0
    found = sum(len(set(a[a >= 0].tolist()) & set(e.tolist())) for a, e in zip(approx_ids, exact_ids))
    return found / (k * len(exact_ids))
