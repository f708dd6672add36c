"""Searching a collection: embed the query, choose exact or LSH, rank, turn rows into hits.

Also the explicit builders of the search side structures (``build_lsh``, ``build_dba``),
which :meth:`Collection.maintain` calls after every change.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np

from .. import images
from ..search import Hit, exact_topk
from ..storage import CollectionError
from . import artifacts, store


def _layout(manifest: dict) -> str:
    """A fingerprint of which rows the collection holds, in order (segments and their deletions)."""
    from .. import storage

    return storage.json_sha256([[e["name"], e.get("deleted", 0)] for e in manifest["segments"]])[:16]


class QueryMixin:
    """Query methods of :class:`~lookalike.collection.Collection`."""

    # ---------------------------------------------------------------- LSH / DBA
    def build_lsh(self, *, family: str = "hyperplane", target_recall: float = 0.95, k: int = 10,
                  min_segment_rows: int | None = None):
        """Build (or extend) the LSH index and keep it with the collection.

        Every segment of at least ``min_segment_rows`` live rows (default
        ``LSH_MIN_SEGMENT``) gets LSH tables tuned on its own vectors for ``target_recall``
        at ``k``; smaller segments are scanned exactly at query time. Later updates hash
        only their new segments. The rows-weighted recall of the segments' held-out
        measurements is stored in ``manifest["lsh"]["recall"]``.

        Returns
        -------
        SegmentedLSH
        """
        if len(self) < 2:
            raise CollectionError(f"An LSH index needs at least 2 images; {self.path} has {len(self)}.")
        with self._writing():
            info = self.manifest.get("lsh")
            if info is None or (info["family"], info["target_recall"], info.get("k")) != (family, target_recall, k):
                segments = [{kk: v for kk, v in e.items() if kk != "lsh"} for e in self.manifest["segments"]]
                for seg in self._snap.segments:
                    seg.entry = {kk: v for kk, v in seg.entry.items() if kk != "lsh"}
                self._replace_entries(segments, lsh={"family": family, "target_recall": target_recall, "k": k,
                                                     "segments": {}})
            self._build_missing_lsh(artifacts.LSH_MIN_SEGMENT if min_segment_rows is None else min_segment_rows)
        return self.lsh

    def lsh_summary(self) -> dict | None:
        """Family, settings of the largest indexed segment, estimated recall, candidates/query."""
        info = self.manifest.get("lsh")
        if not info:
            return None
        per = info.get("segments", {})
        recall, cand = artifacts.rows_weighted(per, self._snap)
        biggest = max(per.values(), key=lambda v: v["rows"], default={})
        return {"family": info["family"], "target_recall": info["target_recall"], "recall": recall,
                "candidates": cand, "indexed_segments": len(per), "segments": len(self._snap.segments),
                "n_tables": biggest.get("n_tables"), "n_bits": biggest.get("n_bits"),
                "n_probes": biggest.get("n_probes"), "build_seconds": sum(v["seconds"] for v in per.values())}

    @property
    def lsh(self):
        """The collection's LSH index (a :class:`~.artifacts.SegmentedLSH`) if it has one, else None.

        It is always current: segments without tables are scanned exactly.
        """
        info = self.manifest.get("lsh")
        if not info:
            return None
        if self._lsh is None:
            hint = store.RECOVER_HINT.format(db=self.path)
            parts = [artifacts.load_segment_lsh(self.path, seg, hint) if seg.entry.get("lsh") else None
                     for seg in self._snap.segments]
            summary = self.lsh_summary()
            self._lsh = artifacts.SegmentedLSH(self._snap, parts, {**summary, **info})
        return self._lsh

    def build_dba(self, n: int = 10, *, alpha: float = 3.0) -> None:
        """Store database-side augmented vectors (alpha-DBA with ``n`` neighbours) for search.

        Search then ranks exactly against the augmented vectors (+3 to +4 points P@10 on
        Caltech-101 with ``search --expand 5``). Near-duplicate search keeps the raw
        embeddings. ``n=0`` turns it off. O(n^2 d): recomputed after every change, so meant
        for collections up to ~100k images.
        """
        with self._writing():
            if n <= 0:
                self._commit(dba=None)
                return
            gen = self.generation + 1
            info = artifacts.database_augment_rows(self.path, self._snap, n, alpha, gen)
            self._commit(dba={"n": int(n), "alpha": float(alpha), "file": info, "rows": _layout(self.manifest)})

    @property
    def dba_stale(self) -> bool:
        """DBA is configured but was computed for other rows than the collection's now (run build_dba)."""
        info = self.manifest.get("dba")
        return bool(info) and info.get("rows") != _layout(self.manifest)

    @property
    def search_matrix(self):
        """The vectors search ranks against: DBA-augmented when enabled and current, else the embeddings."""
        info = self.manifest.get("dba")
        if not info or self.dba_stale:
            return self._snap.rows
        if self._search_matrix is None:
            self._search_matrix = artifacts.load_dba(self.path, info, self._snap.rows.shape,
                                                     store.RECOVER_HINT.format(db=self.path), self._dba_fh)
        return self._search_matrix

    # ---------------------------------------------------------------- searching
    def embed(self, query) -> np.ndarray:
        """Embedding ``(dim,)`` of a query: image path, PIL image, bytes, or a vector.

        An indexed, unchanged file reuses its stored embedding.
        """
        if isinstance(query, np.ndarray):
            v = np.asarray(query, np.float32).reshape(-1)
            if v.shape[0] != self.manifest["dim"]:
                raise ValueError(
                    f"Query vector has {v.shape[0]} dimensions; this collection's have {self.manifest['dim']}.")
            return v / max(float(np.linalg.norm(v)), 1e-12)
        if isinstance(query, (str, os.PathLike)):
            p = images.absolute(query)
            r = self._snap.find_path(p)
            if r is not None:
                st = os.stat(p)
                cols = self._snap.cols
                if st.st_size == cols["size"][r] and st.st_mtime_ns == cols["mtime_ns"][r]:
                    return np.asarray(self._snap.rows[r], np.float32)
            if images.needs_heif(p):
                images.register_heif()
            img = images.decode(p, draft_size=self.encoder.draft_size).image
        elif isinstance(query, bytes):
            img = images.decode(query, draft_size=self.encoder.draft_size).image
        else:
            img = images.to_rgb(query)
        return self.encoder.embed_images([img])[0]

    def _self_row(self, path) -> int:
        """The row of an indexed, unchanged query file (-1 if it is not one)."""
        p = images.absolute(path)
        r = self._snap.find_path(p)
        if r is None:
            return -1
        try:
            st = os.stat(p)
        except OSError:
            return -1
        cols = self._snap.cols
        return r if st.st_size == cols["size"][r] and st.st_mtime_ns == cols["mtime_ns"][r] else -1

    def search_many(self, paths, k: int = 10, *, method: str = "auto", batch_size: int = 32,
                    expand: int | None = None, exclude_self: bool = False):
        """Search with many query files (decoded in worker threads, embedded in batches).

        ``exclude_self``: an indexed query file is left out of its own results; ``method`` and
        ``expand`` as in :meth:`search`.

        Returns
        -------
        list of (path, list of Hit or None, reason or None)
            In input order; unreadable queries have no hits and a reason.
        """
        from ..indexer import embed_files

        paths = list(paths)
        if exclude_self and len(paths) > 20:
            self._snap.row_of_path("")  # many lookups: build the path index once
        out = []
        for batch in embed_files([str(p) for p in paths], self.encoder, batch_size=batch_size):
            good = [r for r in batch if r.vector is not None]
            ex = np.array([self._self_row(r.path) for r in good], np.int64) if exclude_self else None
            hits = iter(self.search_vectors(np.stack([r.vector for r in good]), k, method=method, expand=expand,
                                            exclude_rows=ex) if good else [])
            out += [(r.path, next(hits), None) if r.vector is not None else (r.path, None, r.reason) for r in batch]
        return out

    def search(self, query, k: int = 10, *, method: str = "auto", expand: int | None = None,
               exclude_self: bool = False) -> list[Hit]:
        """The ``k`` most similar images to ``query``, best first.

        By default (``method="auto"``) a collection of 1,000 to 20,000 images is searched with
        re-ranking (method ``"rerank"``, :func:`lookalike.expansion.rerank`): the 100 nearest by
        cosine, re-ranked by database-side augmentation (DBA 10) and query expansion (QE 5),
        blended with the plain cosine: +4.8 points P@10 on the Caltech-101 dev sample (0.826 ->
        0.874). Smaller collections (where it does not help) and larger ones (LSH's) rank by
        plain cosine; ``method="exact"`` (``search --exact``) turns re-ranking off. `dupes`
        never re-ranks.

        Parameters
        ----------
        query : path, PIL image, bytes, or ndarray (dim,)
        k : int, default 10
        method : {"auto", "rerank", "exact", "lsh"}, default "auto"
            ``auto`` re-ranks as above, else uses the LSH index when the collection has one and
            at least ``LSH_MIN_IMAGES`` images (and no stored DBA), else exact search.
            ``rerank`` re-ranks whatever the size. ``exact`` and ``lsh`` rank by cosine (to the
            stored DBA vectors, if ``index --dba`` made them), without re-ranking. LSH results
            are approximate.
        expand : int, optional
            Query-expansion neighbours: with ``rerank``, instead of its 5; with ``exact`` or
            ``lsh``, alpha-query-expansion with the top ``N`` results of the whole collection.
            ``None`` or 0: the method's default (none for ``exact`` and ``lsh``).
        exclude_self : bool, default False
            Leave a query that is an indexed, unchanged file out of its own results.

        Returns
        -------
        list of Hit
            ``score`` is the cosine of the query to the image (with ``exact``/``lsh``, of the
            expanded query to the stored DBA vector when those are used); re-ranked results are
            in ranking order, so their scores need not descend.
        """
        ex = None
        if exclude_self and isinstance(query, (str, os.PathLike)):
            row = self._self_row(query)
            ex = np.array([row], np.int64) if row >= 0 else None
        return self.search_vectors(self.embed(query)[None, :], k, method=method, expand=expand, exclude_rows=ex)[0]

    def resolve_method(self, method: str = "auto") -> str:
        """Which search ``method`` will actually run: "rerank", "exact" or "lsh"."""
        from ..expansion import reranks
        from . import LSH_MIN_IMAGES

        if method not in ("auto", "rerank", "exact", "lsh"):
            raise ValueError(f"Unknown search method {method!r}; expected 'auto', 'rerank', 'exact' or 'lsh'")
        dba_on = bool(self.manifest.get("dba")) and not self.dba_stale
        if method == "auto" and reranks(len(self)):
            return "rerank"
        if method == "auto":
            return "lsh" if len(self) >= LSH_MIN_IMAGES and self.manifest.get("lsh") and not dba_on else "exact"
        if method == "lsh" and not self.manifest.get("lsh"):
            raise CollectionError(f"{self.path} has no LSH index; build it with: "
                                  f"lookalike index FOLDER --db {self.path} --lsh")
        if method == "lsh" and dba_on:
            raise CollectionError(f"{self.path} searches DBA-augmented vectors, exactly; use --exact (or turn DBA "
                                  "off with --dba 0).")
        return method

    def reranks(self, method: str = "auto") -> bool:
        """Whether a search with ``method`` re-ranks (see :meth:`search`)."""
        return self.resolve_method(method) == "rerank"

    def _rerank_state(self):
        """The raw matrix and DBA-vector cache of the current generation, for re-ranking (built on first use)."""
        state = getattr(self, "_rerank_cache", None)
        if state is None or state[0] is not self._snap:
            state = (self._snap, np.asarray(self._snap.rows, np.float32), {})
            self._rerank_cache = state
        return state

    def _rerank(self, vectors: np.ndarray, k: int, exclude_rows, expand: int) -> list[list[Hit]]:
        from ..expansion import DEFAULT_DBA, augment_rows, rerank

        _, matrix, cache = self._rerank_state()

        def augment(rows: np.ndarray) -> np.ndarray:
            missing = np.array([r for r in rows.tolist() if r not in cache], np.int64)
            if len(missing):
                for r, v in zip(missing.tolist(), augment_rows(matrix, missing, DEFAULT_DBA)):
                    cache[r] = v
            return np.stack([cache[r] for r in rows.tolist()])

        stored = bool(self.manifest.get("dba")) and not self.dba_stale
        rows, scores = rerank(matrix, vectors, k, exclude=exclude_rows, expand=expand,
                              augmented=self.search_matrix if stored else None, augment=augment)
        return [self._hits(s, r) for s, r in zip(scores, rows)]

    def search_vectors(self, vectors: np.ndarray, k: int = 10, *, method: str = "auto",
                       exclude_rows: np.ndarray | None = None, expand: int | None = None) -> list[list[Hit]]:
        """Top-``k`` for each row of ``vectors`` ``(q, dim)``; see :meth:`search`.

        ``exclude_rows``: a row to leave out per query (the query itself); LSH then asks
        for one more result and drops it.
        """
        if k < 1:
            raise ValueError(f"k must be at least 1, got {k}")
        vectors = np.atleast_2d(np.asarray(vectors, np.float32))
        how = self.resolve_method(method)
        if how == "rerank":
            from ..expansion import DEFAULT_EXPAND

            return self._rerank(vectors, k, exclude_rows, expand or DEFAULT_EXPAND)
        if expand:
            from ..expansion import expand_queries

            vectors = expand_queries(vectors, self.search_matrix, min(expand, len(self)), exclude=exclude_rows)
        if how == "lsh":
            extra = 1 if exclude_rows is not None else 0
            scores, ids = self.lsh.kneighbors(vectors, k + extra)
            out = []
            for q, (s, i) in enumerate(zip(scores, ids)):
                ok = i >= 0
                rows = self._snap.rows_of_ids(i[ok]) if ok.any() else np.zeros(0, np.int64)
                s = s[ok]
                if extra:
                    keep = rows != exclude_rows[q]
                    rows, s = rows[keep], s[keep]
                out.append(self._hits(s[:k], rows[:k]))
            return out
        scores, rows = exact_topk(self.search_matrix, vectors, k, exclude=exclude_rows)
        return [self._hits(s, r) for s, r in zip(scores, rows)]

    def _hits(self, scores: Sequence[float], rows: Sequence[int]) -> list[Hit]:
        c = self._snap.cols
        return [Hit(rank=i + 1, score=float(min(1.0, max(-1.0, s))), id=int(c["id"][r]), path=c["path"][r],
                    label=c["label"][r]) for i, (s, r) in enumerate(zip(scores, rows))]
