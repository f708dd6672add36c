"""The LSH index (the estimator): fit, add, remove, query, save.

Building and the tuned parameters live here; answering queries is :mod:`.query` (the path is
chosen once at fit/load), the file layout is :mod:`.fileformat`, parameter search is :mod:`.tune`.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from . import families, fileformat, query, tables
from .families import FAMILIES, Family, make_family
from .fileformat import INDEX_FORMAT_VERSION
from .query import KERNEL_BATCH, PROJECT_BATCH, QUERY_BATCH

__all__ = ["INDEX_FORMAT_VERSION", "KERNEL_BATCH", "PROJECT_BATCH", "QUERY_BATCH", "RECALL_TOLERANCE", "LSHIndex"]

log = logging.getLogger(__name__)

# Recall differences below this (one standard error at 200 held-out queries is ~0.015) do not
# justify a wider Hamming cut once the cut no longer raises recall.
RECALL_TOLERANCE = 0.003


class LSHIndex:
    """Approximate nearest neighbours by Locality Sensitive Hashing, with exact re-ranking.

    Scikit-learn conventions: the constructor only stores parameters, :meth:`fit`
    validates and builds. Similarities are cosine (inner products of unit vectors).
    Results are approximate: a true neighbour is missed when it shares no probed bucket
    with the query; :attr:`recall_` is the recall@k measured against exact search
    during :meth:`fit` when parameters were tuned.

    Parameters
    ----------
    family : {"hyperplane", "brp", "minhash"}, default "hyperplane"
        Hash family (see :mod:`lookalike.lsh.families`).
    n_tables : int, optional
        Hash tables (L). With ``n_bits`` unset too, both are tuned in ``fit``.
    n_bits : int, optional
        Hashes per table (K): bits for hyperplane, projections for brp, min-hashes for minhash.
    n_probes : int, optional
        Buckets visited per table per query (hyperplane multi-probe); tuned if unset.
    bucket_length : float, optional
        brp only: bucket width in projection units (tuned if unset).
    top_dims : int, default 50
        minhash only: size of each vector's set of most activated dimensions.
    target_recall : float, default 0.95
        Recall@k the tuner aims for.
    k : int, default 10
        The k the tuner measures recall at (queries may ask any k).
    rerank : int, default 64
        hyperplane only, when tables x bits >= 128: candidates are first ordered by the
        Hamming distance of all their hash bits to the query's (a cheap angle estimate)
        and only the best ``rerank`` per query get the exact cosine. 0 disables. When
        ``fit`` tunes, the cut is tuned too: the smallest that keeps ``target_recall``.
    seed : int, default 0
    dtype : {"float32", "float16"}, default "float32"
        Storage of the vectors kept for re-ranking (float16 halves memory).

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> X = rng.normal(size=(1000, 32)).astype(np.float32)
    >>> X /= np.linalg.norm(X, axis=1, keepdims=True)
    >>> index = LSHIndex(n_tables=8, n_bits=8, n_probes=4).fit(X)
    >>> scores, ids = index.kneighbors(X[:2], k=3)
    >>> ids[:, 0].tolist()
    [0, 1]
    """

    def __init__(self, *, family: str = "hyperplane", n_tables: int | None = None, n_bits: int | None = None,
                 n_probes: int | None = None, bucket_length: float | None = None, top_dims: int = 50,
                 target_recall: float = 0.95, k: int = 10, rerank: int = 64, seed: int = 0,
                 dtype: str = "float32"):
        self.family = family
        self.n_tables = n_tables
        self.n_bits = n_bits
        self.n_probes = n_probes
        self.bucket_length = bucket_length
        self.top_dims = top_dims
        self.target_recall = target_recall
        self.k = k
        self.rerank = rerank
        self.seed = seed
        self.dtype = dtype

    # ------------------------------------------------------------------ building
    def _validate(self, X, ids):
        if self.family not in FAMILIES:
            raise ValueError(f"Unknown LSH family {self.family!r}; expected one of {sorted(FAMILIES)}")
        if self.dtype not in ("float32", "float16"):
            raise ValueError(f"dtype must be 'float32' or 'float16', got {self.dtype!r}")
        if not 0 < self.target_recall <= 1:
            raise ValueError(f"target_recall must be in (0, 1], got {self.target_recall}")
        X = np.asarray(X)
        if X.ndim != 2 or X.shape[0] == 0:
            raise ValueError(f"Expected a non-empty 2-D array of vectors, got shape {X.shape}")
        ids = np.arange(len(X), dtype=np.int64) if ids is None else np.asarray(ids, dtype=np.int64)
        if ids.shape != (len(X),):
            raise ValueError(f"Expected {len(X)} ids, one per vector, got shape {ids.shape}")
        if len(np.unique(ids)) != len(ids):
            raise ValueError("ids must be unique")
        return X, ids

    def _family_params(self) -> dict:
        p = {"n_tables": self.n_tables_, "n_bits": self.n_bits_, "seed": self.seed}
        if self.family == "brp":
            p["bucket_length"] = self.bucket_length_
        if self.family == "minhash":
            p["top_dims"] = self.top_dims
        return p

    def fit(self, X: np.ndarray, ids: np.ndarray | None = None) -> LSHIndex:
        """Index vectors ``X`` ``(n, d)`` (unit length) under ``ids`` (default ``0..n-1``).

        Unset parameters are tuned on a sample of ``X`` for :attr:`target_recall` at
        :attr:`k`; the measured recall is stored in :attr:`recall_`.

        Returns
        -------
        self
        """
        X, ids = self._validate(X, ids)
        self.n_tables_, self.n_bits_ = self.n_tables, self.n_bits
        self.n_probes_ = self.n_probes or 1
        self.bucket_length_ = self.bucket_length
        self.recall_ = None
        self.tuning_ = None
        needs_tuning = self.n_tables is None or self.n_bits is None or (
            self.family == "hyperplane" and self.n_probes is None)
        if needs_tuning:
            from .tune import tune

            self.tuning_ = tune(self, X)
            best = self.tuning_["best"]
            self.n_tables_, self.n_bits_ = best["n_tables"], best["n_bits"]
            self.n_probes_ = best.get("n_probes", 1)
            self.bucket_length_ = best.get("bucket_length", self.bucket_length)
        self._X = np.ascontiguousarray(X, dtype=self.dtype)
        self._ids = ids.copy()
        self._alive = np.ones(len(X), bool)
        self.family_: Family = make_family(self.family, **self._family_params()).fit(X)
        self.bucket_length_ = getattr(self.family_, "bucket_length", None)
        self.bucket_bits_ = tables.bucket_bits(self.n_bits_ if self.family == "hyperplane" else None, len(X))
        # (n, words) Hamming codes: a candidate's hash bits are one cache line (the compiled path
        # reads them in scan order)
        hamming = query.hamming_filter(self.family, self.rerank, self.n_tables_, self.n_bits_)
        buckets, self._codes = self.family_.bucket_ids(X, self.bucket_bits_, hamming=hamming)
        self._keys, self._rows = tables.build_from_buckets(buckets, self.bucket_bits_)
        del buckets
        self._query = query.path_for(self.family, self._codes is not None)
        self.rerank_ = self.tuning_["best"].get("rerank", self.rerank) if self.tuning_ else self.rerank
        if self.tuning_ is not None:
            from .tune import choose_rerank, measure

            holdout = self.tuning_.pop("holdout", None)
            tuning_queries = self.tuning_.pop("tuning_queries", None)
            if self._codes is not None and tuning_queries is not None:
                # the tuner estimated the cut on a row sample; set it on the real tables
                self.rerank_ = choose_rerank(self, X, *tuning_queries)
            self.recall_, self.candidates_ = measure(self, X, k=self.k, seed=self.seed, holdout=holdout)
            self._safety_net(X, holdout)
        return self

    # Most probes per table the safety net goes to (query time only: no tables rebuilt).
    MAX_PROBES = 128

    def _safety_net(self, X, holdout) -> None:
        """Reach the target on the held-out queries if the tuned settings fall short.

        First a wider Hamming cut; when recall stops rising the misses were never candidates,
        so the narrowest cut that reached the best recall is kept and the probes per table are
        doubled instead (hyperplane; both are query-time settings, the tables stay as built).
        """
        from .tune import measure

        def widen_cut():
            tried = [(self.rerank_, self.recall_, self.candidates_)]
            while (self._codes is not None and self.recall_ < self.target_recall
                   and self.rerank_ < self.candidates_):
                self.rerank_ *= 2
                self.recall_, self.candidates_ = measure(self, X, k=self.k, seed=self.seed, holdout=holdout)
                tried.append((self.rerank_, self.recall_, self.candidates_))
            if self.recall_ < self.target_recall and len(tried) > 1:
                best = max(r for _, r, _ in tried)
                self.rerank_, self.recall_, self.candidates_ = min(
                    (t for t in tried if t[1] >= best - RECALL_TOLERANCE), key=lambda t: t[0])

        widen_cut()
        while (self.family == "hyperplane" and self.recall_ < self.target_recall
               and self.n_probes_ < self.MAX_PROBES):
            self.n_probes_ *= 2
            self.recall_, self.candidates_ = measure(self, X, k=self.k, seed=self.seed, holdout=holdout)
            widen_cut()

    def _check_fitted(self):
        if not hasattr(self, "_X"):
            raise RuntimeError("This LSHIndex is not fitted yet; call fit(X) first.")

    def __len__(self) -> int:
        return int(self._alive.sum()) if hasattr(self, "_alive") else 0

    @property
    def ids_(self) -> np.ndarray:
        """Ids of the indexed (not removed) vectors."""
        self._check_fitted()
        return self._ids[self._alive]

    def add(self, X: np.ndarray, ids: np.ndarray, *, allow_existing: bool = False) -> LSHIndex:
        """Add vectors without rebuilding: only the new vectors are hashed.

        Parameters
        ----------
        allow_existing : bool, default False
            If True, an id already indexed is replaced by the new vector; else it is an error.
        """
        self._check_fitted()
        X = np.atleast_2d(np.asarray(X))
        ids = np.atleast_1d(np.asarray(ids, np.int64))
        if X.shape != (len(ids), self._X.shape[1]):
            raise ValueError(f"Expected X of shape ({len(ids)}, {self._X.shape[1]}) for {len(ids)} ids, got {X.shape}")
        present = np.isin(ids, self.ids_)
        if present.any():
            if not allow_existing:
                raise ValueError(
                    f"ids already indexed: {ids[present][:5].tolist()}; pass allow_existing=True to replace"
                )
            self.remove(ids[present])
        new_rows = np.arange(len(self._X), len(self._X) + len(X))
        codes = self.family_.keys(X)
        self._keys, self._rows = tables.insert(self._keys, self._rows, codes, new_rows, self.bucket_bits_)
        if self._codes is not None:
            self._codes = np.concatenate([self._codes, families.hamming_codes(codes, self.n_bits_)])
        self._X = np.concatenate([self._X, X.astype(self.dtype)])
        self._ids = np.concatenate([self._ids, ids])
        self._alive = np.concatenate([self._alive, np.ones(len(X), bool)])
        return self

    def remove(self, ids, *, allow_missing: bool = True) -> int:
        """Remove vectors by id (tombstoned, dropped on save); returns how many were removed."""
        self._check_fitted()
        ids = np.atleast_1d(np.asarray(ids, np.int64))
        hit = np.isin(self._ids, ids) & self._alive
        n = int(hit.sum())
        if n < len(np.unique(ids)) and not allow_missing:
            raise KeyError(f"{len(np.unique(ids)) - n} ids are not in the index")
        self._alive[hit] = False
        return n

    # ------------------------------------------------------------------ querying
    def candidates(self, Q: np.ndarray, n_probes: int | None = None, *, filtered: bool = True):
        """Unique ``(query_index, row)`` candidate pairs for queries ``Q`` ``(q, d)``, sorted by query.

        With ``filtered`` (and Hamming filtering in use), at most ``rerank`` per query:
        those whose hash bits are closest to the query's.
        """
        self._check_fitted()
        return self._query.candidates(self, np.atleast_2d(np.asarray(Q, np.float32)), n_probes, filtered)

    def hamming_distances(self, Q: np.ndarray, qi: np.ndarray, rows: np.ndarray) -> np.ndarray:
        """Hamming distance between the hash bits of query ``Q[qi[i]]`` and of row ``rows[i]``.

        Only for an index that filters on Hamming distance (hyperplane, tables x bits >= 128).
        """
        if self._codes is None:
            raise ValueError("This index keeps no Hamming codes (hyperplane family, tables x bits >= 128 only)")
        return np.bitwise_count(np.take(self._codes, rows, axis=0) ^ self.family_.hamming(Q)[qi]).sum(axis=1)

    def kneighbors(self, X: np.ndarray | None = None, k: int | None = None, *, n_probes: int | None = None,
                   rerank: int | None = None):
        """The ``k`` most similar indexed vectors to each query.

        Parameters
        ----------
        X : ndarray, shape (q, d), optional
            Queries (unit vectors). None: every indexed vector queries the index,
            excluding itself (what duplicate finding needs).
        k : int, optional
            Default: the ``k`` given at construction.
        n_probes : int, optional
            Override the buckets probed per table (more = higher recall, slower).
        rerank : int, optional
            Override the Hamming cut of batch queries (candidates re-ranked exactly per query).

        Returns
        -------
        scores : ndarray, shape (q, k), float32
            Cosine similarities, descending; ``-inf`` where fewer than k candidates.
        ids : ndarray, shape (q, k), int64
            Ids of the neighbours; ``-1`` where fewer than k candidates.
        """
        self._check_fitted()
        k = int(k or self.k)
        if k < 1:
            raise ValueError(f"k must be at least 1, got {k}")
        Q, self_rows = self._queries(X)
        return self._query.kneighbors(self, Q, k, n_probes, rerank, self_rows)

    def radius_neighbors(self, X: np.ndarray | None = None, threshold: float = 0.9, *, n_probes: int | None = None):
        """All indexed vectors with cosine >= ``threshold`` to each query (approximate).

        Returns
        -------
        list of (scores, ids)
            One pair of arrays per query, sorted by descending score. With ``X=None``,
            each indexed vector queries the others (itself excluded).
        """
        self._check_fitted()
        Q, self_rows = self._queries(X)
        return self._query.radius_neighbors(self, Q, threshold, n_probes, self_rows)

    def _queries(self, X):
        """Queries as float32 ``(q, d)`` and, for self-queries (``X=None``), each one's own row."""
        if X is None:
            self_rows = np.nonzero(self._alive)[0]
            return self._X[self_rows].astype(np.float32), self_rows
        Q = np.atleast_2d(np.asarray(X, np.float32))
        if Q.shape[1] != self._X.shape[1]:
            raise ValueError(f"Queries have {Q.shape[1]} dimensions; the index has {self._X.shape[1]}")
        return Q, None

    # ------------------------------------------------------------------ persistence
    def params(self) -> dict:
        """The fitted parameters and measured quality (JSON-ready)."""
        return {
            "family": self.family,
            "n_tables": self.n_tables_,
            "n_bits": self.n_bits_,
            "n_probes": self.n_probes_,
            "bucket_length": self.bucket_length_,
            "top_dims": self.top_dims,
            "k": self.k,
            "seed": self.seed,
            "target_recall": self.target_recall,
            "recall": self.recall_,
            "rerank": getattr(self, "rerank_", self.rerank),
            "candidates": getattr(self, "candidates_", None),
            "dtype": self.dtype,
            "bucket_bits": getattr(self, "bucket_bits_", None),
        }

    def save(self, path: str | Path, *, include_vectors: bool = True) -> None:
        """Write the index to one ``.npz`` file (removed vectors are dropped).

        With ``include_vectors=False`` the caller must pass the same vectors to :meth:`load`
        (a collection does this: its embeddings file already holds them).
        """
        Path(path).write_bytes(self.to_bytes(include_vectors=include_vectors))

    def to_bytes(self, *, include_vectors: bool = False) -> bytes:
        """The index as ``.npz`` bytes, by default without its vectors (see :meth:`save`)."""
        self._check_fitted()
        self.compact()
        arrays = {"keys": self._keys, "rows": self._rows, "ids": self._ids, "codes": self._codes,
                  "vectors": self._X if include_vectors else None}
        return fileformat.dumps(self.params(), self.family_.state(), arrays)

    @classmethod
    def load(cls, source, vectors: np.ndarray | None = None) -> LSHIndex:
        """Read an index written by :meth:`save` or :meth:`to_bytes` (any format version, see :mod:`.fileformat`).

        Parameters
        ----------
        source : path or bytes
        vectors : ndarray, optional
            Required when the file holds no vectors; row ``i`` must be the vector of ``ids[i]``.
        """
        p, state, arrays = fileformat.loads(source)
        index = cls(family=p["family"], n_tables=p["n_tables"], n_bits=p["n_bits"], n_probes=p["n_probes"],
                    bucket_length=p["bucket_length"], top_dims=p["top_dims"], target_recall=p["target_recall"],
                    k=p["k"], rerank=p.get("rerank", 128), seed=p["seed"], dtype=p["dtype"])
        index.n_tables_, index.n_bits_, index.n_probes_ = p["n_tables"], p["n_bits"], p["n_probes"]
        index.bucket_length_, index.recall_, index.candidates_ = p["bucket_length"], p["recall"], p["candidates"]
        index.tuning_ = None
        index.rerank_ = index.rerank
        index.family_ = FAMILIES[p["family"]].from_state(state)
        index._keys, index._rows, index._ids = arrays["keys"], arrays["rows"], arrays["ids"]
        index._codes = arrays["codes"]
        index.bucket_bits_ = p["bucket_bits"]
        X = arrays["vectors"] if arrays["vectors"] is not None else vectors
        if X is None:
            raise ValueError("This index file holds no vectors; pass the vectors it was built on")
        if len(X) != len(index._ids):
            raise ValueError(f"Index has {len(index._ids)} ids but {len(X)} vectors were given")
        index._X = np.ascontiguousarray(X, dtype=p["dtype"])
        index._alive = np.ones(len(X), bool)
        index._query = query.path_for(index.family, index._codes is not None)
        return index

    def compact(self) -> None:
        """Drop removed vectors from storage and tables (renumbers rows)."""
        if self._alive.all():
            return
        new_row = np.cumsum(self._alive) - 1
        self._keys, self._rows = tables.drop(self._keys, self._rows, self._alive, new_row, self.bucket_bits_)
        self._X, self._ids = self._X[self._alive], self._ids[self._alive]
        if self._codes is not None:
            self._codes = np.ascontiguousarray(self._codes[self._alive])
        self._alive = np.ones(len(self._X), bool)
