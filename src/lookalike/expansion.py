"""Query expansion, database-side augmentation and the re-ranking `search` does by default.

alpha-QE and alpha-DBA (Radenovic et al. 2018): a query, or a database image, is replaced by
itself plus its nearest neighbours weighted by their cosine to the power ``alpha``. On the
Caltech-101 dev sample (3,000 images, the `balanced` profile) DBA 10 + QE 5 raise P@10 from
0.826 to 0.876 and mAP from 0.708 to 0.826 (benchmarks/quality_default.py; README, "Quality by
default").

:func:`rerank` is what :meth:`Collection.search <lookalike.collection.Collection.search>` does
by default for collections of :data:`RERANK_MIN_IMAGES` to :data:`RERANK_MAX_IMAGES` images: an
exact shortlist of :data:`SHORTLIST` by plain cosine, the DBA vectors of the shortlist (each
from its own exact neighbours in the whole collection: exactly the vectors full DBA would store,
without an O(n^2) pass over the collection), query expansion against them, and the shortlist
ranked by the expanded query's cosine to them, blended with the plain cosine (:data:`RAW_WEIGHT`),
the plain cosine's best match kept first (:data:`KEEP_FIRST`). Re-ranking the shortlist gives
what re-ranking everything gives (P@10 0.8761 against 0.8763 without the blend). `dupes` never
uses any of this: duplicates compare raw embeddings.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from .search import exact_topk

ALPHA = 3.0
# Query-expansion neighbours and DBA neighbours of the default re-ranking (the dev sample's best).
DEFAULT_EXPAND = 5
DEFAULT_DBA = 10
# Share of the plain cosine in the final ranking score (the rest: the expanded query's cosine to the
# DBA vectors). Pure DBA + QE pulls an image towards its neighbours, so an edited copy (watermark,
# screenshot) searched for loses its original to rank 2-3 more often (recall@1 of the worst edit
# 0.93 -> 0.75); with 0.3 of the plain cosine it keeps 0.89 while P@10 stays 0.874 (0.876 without).
RAW_WEIGHT = 0.3
# The plain cosine's best match stays first: a copy searched for keeps its original at rank 1
# whenever plain cosine puts it there (on the whole Caltech-101 collection a watermarked copy
# finds its original first 0.68 of the time by plain cosine, 0.59 re-ranked without this), for
# -1.1 points P@1 and -0.06 points P@10 on the dev sample.
KEEP_FIRST = True
# Candidates the default re-ranking takes by plain cosine (100: same P@10 as re-ranking everything).
SHORTLIST = 100
# Collection sizes the default re-ranking applies to. Below 1,000 images a photo rarely has 5
# neighbours of its own kind and QE/DBA do not help (measured on 100 and 300-image samples);
# above 20,000 the shortlist's DBA (SHORTLIST x n x dim multiply-adds per query) costs more than
# a search should, and ranking is LSH's.
RERANK_MIN_IMAGES = 1_000
RERANK_MAX_IMAGES = 20_000


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


def expand_queries(queries: np.ndarray, database: np.ndarray, n: int, *, alpha: float = ALPHA,
                   exclude: np.ndarray | None = None) -> np.ndarray:
    """Alpha-weighted query expansion (Radenovic et al.); returns unit vectors.

    Adds the top-``n`` neighbours, weighted by their similarity to the power ``alpha``, to each query.
    """
    scores, rows = exact_topk(database, queries, n, exclude=exclude)
    w = np.maximum(scores, 0) ** alpha
    gathered = np.asarray(database[rows.reshape(-1)], np.float32).reshape(*rows.shape, queries.shape[-1])
    Q = queries + np.einsum("qn,qnd->qd", w, gathered)
    return Q / np.maximum(np.linalg.norm(Q, axis=1, keepdims=True), 1e-12)


def database_augment(database: np.ndarray, n: int, *, alpha: float = ALPHA) -> np.ndarray:
    """alpha-weighted database-side augmentation (alpha-DBA, Radenovic et al.).

    Each vector is replaced by itself plus its ``n`` nearest other vectors weighted by
    similarity to the power ``alpha``, re-normalised: images move towards the dense part of
    their neighbourhood, so a query close to some of them reaches the others too. Exact
    (blockwise) neighbours: O(n^2 d) once per collection.
    """
    X = np.asarray(database, np.float32)
    return augment_rows(X, np.arange(len(X)), n, alpha=alpha)


def augment_rows(database, rows: np.ndarray, n: int, *, alpha: float = ALPHA) -> np.ndarray:
    """The alpha-DBA vectors of ``rows`` of ``database`` (what :func:`database_augment` gives them)."""
    rows = np.asarray(rows, np.int64)
    X = np.asarray(database[rows], np.float32).reshape(len(rows), -1)
    out = np.empty_like(X)
    for i in range(0, len(rows), 4096):  # bounded temporary (block, n, d)
        sl = slice(i, i + 4096)
        scores, nb = exact_topk(database, X[sl], n, exclude=rows[sl])
        w = np.maximum(scores, 0) ** alpha
        gathered = np.asarray(database[nb.reshape(-1)], np.float32).reshape(*nb.shape, X.shape[1])
        out[sl] = X[sl] + np.einsum("qn,qnd->qd", w, gathered)
    return _unit(out)


def reranks(n_images: int) -> bool:
    """Whether `search` re-ranks by default (DBA + QE) in a collection of ``n_images``."""
    return RERANK_MIN_IMAGES <= n_images <= RERANK_MAX_IMAGES


def rerank(database, queries: np.ndarray, k: int, *, expand: int = DEFAULT_EXPAND, dba: int = DEFAULT_DBA,
           shortlist: int = SHORTLIST, raw_weight: float = RAW_WEIGHT, keep_first: bool = KEEP_FIRST,
           alpha: float = ALPHA, exclude: np.ndarray | None = None,
           augmented=None, augment: Callable[[np.ndarray], np.ndarray] | None = None):
    """Top-``k`` rows of ``database`` for each query, re-ranked by DBA + QE over a shortlist.

    Parameters
    ----------
    database : array-like, shape (n, d)
        Unit vectors (raw embeddings).
    queries : ndarray, shape (q, d)
    k : int
    expand, dba : int
        Query-expansion and DBA neighbours (0: leave that step out).
    shortlist : int
        Candidates taken by plain cosine; the result is the best ``k`` of them.
    raw_weight : float
        The final score is ``raw_weight`` x plain cosine + (1 - ``raw_weight``) x the expanded
        query's cosine to the DBA vector.
    keep_first : bool
        Keep the plain cosine's best match at rank 1.
    exclude : ndarray of int, shape (q,), optional
        A row to leave out per query (the query itself), or -1.
    augmented : array-like, shape (n, d), optional
        All DBA vectors, precomputed (a collection's stored ones, or :func:`database_augment`).
    augment : callable, optional
        rows -> their DBA vectors (a cache); default :func:`augment_rows` with ``dba``.

    Returns
    -------
    rows : ndarray, shape (q, k'), int64
    scores : ndarray, shape (q, k'), float32
        The plain cosine of the query to each row (what `dupes` and the README's scale speak of),
        in ranking order (so not always descending).
    """
    queries = np.atleast_2d(np.asarray(queries, np.float32))
    _, cand = exact_topk(database, queries, max(k, shortlist), exclude=exclude)
    if cand.shape[1] == 0:
        return cand, np.zeros(cand.shape, np.float32)
    uniq, inv = np.unique(cand, return_inverse=True)
    if augmented is not None:
        vecs = np.asarray(augmented[uniq], np.float32)
    elif dba > 0:
        vecs = augment(uniq) if augment is not None else augment_rows(database, uniq, dba, alpha=alpha)
    else:
        vecs = np.asarray(database[uniq], np.float32)
    D = vecs[inv.reshape(cand.shape)]  # (q, K, d)
    raw = np.einsum("qd,qkd->qk", queries, np.asarray(database[uniq], np.float32)[inv.reshape(cand.shape)])
    s = np.einsum("qd,qkd->qk", queries, D)
    if expand > 0:
        top = np.argsort(-s, axis=1, kind="stable")[:, :expand]
        w = np.maximum(np.take_along_axis(s, top, axis=1), 0) ** alpha
        Q = _unit(queries + np.einsum("qn,qnd->qd", w, np.take_along_axis(D, top[:, :, None], axis=1)))
        s = np.einsum("qd,qkd->qk", Q, D)
    s = raw_weight * raw + (1 - raw_weight) * s
    if keep_first:
        s[:, 0] = np.inf  # the shortlist is in plain-cosine order
    order = np.lexsort((cand, -s), axis=1)[:, :k]
    return np.take_along_axis(cand, order, axis=1), np.take_along_axis(raw, order, axis=1).astype(np.float32)
