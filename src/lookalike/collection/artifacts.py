"""Side files kept current with the segments: per-segment LSH tables and DBA search vectors.

LSH, Lucene-style: every segment of at least ``LSH_MIN_SEGMENT`` rows gets its own LSH
index, tuned on that segment's vectors once, when the segment is written (segments never
change, so neither do their tables; deleted rows are skipped at query time). Smaller
segments are scanned exactly. A query asks every segment for its top-k and merges them,
so an update hashes only the new rows, and a merge re-hashes only the merged rows.

DBA (database-side augmentation) needs every image's neighbours in the whole collection,
so it is one file for the whole collection, recomputed (O(n^2 d), opt-in) after changes.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np

from .. import storage
from ..search import exact_topk
from ..storage import CorruptCollectionError
from .segment import NPY_HEADER, Segment, npy_header
from .view import Snapshot

log = logging.getLogger(__name__)

# Segments smaller than this are scanned exactly (4,096 x 1,280 float16 rows: ~1 ms).
LSH_MIN_SEGMENT = 4_096
# Radius queries (near-duplicate pairs): at most this many neighbours per image and segment,
# found with this many probes per table; near pairs have the fewest differing hash bits, so the
# RADIUS_K candidates closest in Hamming distance are the only ones ranked exactly. Measured
# pair recall at 0.92 on 100k clustered vectors (a 16-table segment): 24 and 2 probes 0.90,
# 48 and 2 0.94, 48 and 3 0.98, 64 and 4 0.99 (time 13.5 s for 48/3, 23 s for 64/4).
RADIUS_K = 48
RADIUS_PROBES = 3


def build_segment_lsh(folder: Path, seg: Segment, settings: dict, reuse: dict | None = None):
    """Fit and store the LSH index of one segment; returns (file entry, recall info, index).

    ``reuse``: settings tuned on another segment of similar size (``n_tables``, ``n_bits``,
    ``n_probes``, ``rerank``). They are tried first, and the grid search runs only when the
    recall measured on this segment's held-out rows falls below the target.
    """
    from ..lsh import LSHIndex
    from ..lsh.tune import measure

    t0 = time.perf_counter()
    vectors = seg.vectors()
    common = {"family": settings["family"], "target_recall": settings["target_recall"], "k": settings["k"],
              "dtype": str(np.dtype(seg.dtype))}
    index, tuned = None, True
    if reuse:
        index = LSHIndex(**common, **{k: reuse[k] for k in ("n_tables", "n_bits", "n_probes", "rerank")})
        index.fit(vectors, seg.cols["id"])
        index.recall_, index.candidates_ = measure(index, vectors, k=settings["k"], seed=index.seed)
        tuned = False
        for _ in range(4):  # a wider Hamming cut is cheap (no new tables): try it before a grid search
            if index.recall_ >= settings["target_recall"] or index.rerank_ >= index.candidates_:
                break
            before = index.recall_
            index.rerank_ *= 2
            index.recall_, index.candidates_ = measure(index, vectors, k=settings["k"], seed=index.seed)
            if index.recall_ <= before:  # the misses are not cut candidates: a wider cut cannot help
                index.rerank_ //= 2
                index.recall_ = before
                break
        if index.recall_ < settings["target_recall"]:
            log.info("LSH settings of a similar segment reach recall %.3f on %s: tuning", index.recall_, seg.name)
            index = None
    if index is None:
        index = LSHIndex(**common).fit(vectors, seg.cols["id"])
        tuned = True
        if index.recall_ is None:
            index.recall_, index.candidates_ = measure(index, vectors, k=settings["k"], seed=index.seed)
    path = folder / f"{seg.name}.lsh.npz"
    blob = index.to_bytes()
    storage.atomic_write(path, lambda f: f.write(blob))
    info = {"rows": seg.rows, "recall": float(index.recall_), "candidates": float(index.candidates_ or 0),
            "seconds": round(time.perf_counter() - t0, 3), "tuned": tuned,
            **{k: index.params()[k] for k in ("n_tables", "n_bits", "n_probes", "rerank")}}
    return storage.describe(path), info, index


def load_segment_lsh(folder: Path, seg: Segment, hint: str):
    """The stored LSH index of a segment with its deleted rows removed (checksummed)."""
    from ..lsh import LSHIndex

    path = folder / seg.entry["lsh"]["name"]
    try:
        index = LSHIndex.load(seg.lsh_bytes(), vectors=seg.vectors())
    except (ValueError, KeyError, OSError) as err:
        raise CorruptCollectionError(f"Collection file is damaged: {path}: {err}. {hint}") from None
    if not np.array_equal(index._ids, seg.cols["id"]):
        raise CorruptCollectionError(f"LSH index {path} does not match its segment's ids. {hint}")
    if seg.dead.any():
        index.remove(seg.cols["id"][seg.dead])
    return index


class SegmentedLSH:
    """The collection's LSH index: one LSH index per large segment, exact scans for small ones.

    Mirrors :class:`lookalike.lsh.LSHIndex`'s query API (``kneighbors``, ``radius_neighbors``,
    ``ids_``) over the collection's live rows.
    """

    def __init__(self, snap: Snapshot, parts: list, info: dict):
        self.snap, self.parts, self.info = snap, parts, info
        self.recall_ = info.get("recall")
        self._exact: dict[int, tuple[np.ndarray, np.ndarray]] = {}  # small segments, float32, read once

    def _small(self, s: int) -> tuple[np.ndarray, np.ndarray]:
        """(live vectors as float32, their ids) of a segment without LSH tables (small: cached)."""
        if s not in self._exact:
            seg = self.snap.segments[s]
            self._exact[s] = (np.asarray(seg.vectors()[seg.alive_rows], np.float32), seg.cols["id"][seg.alive_rows])
        return self._exact[s]

    def __len__(self) -> int:
        return len(self.snap)

    @property
    def ids_(self) -> np.ndarray:
        """Ids of the indexed images, in collection row order."""
        return self.snap.cols["id"]

    @property
    def _ids(self) -> np.ndarray:
        return self.snap.cols["id"]

    def params(self) -> dict:
        """Settings and measured quality (JSON-ready)."""
        return dict(self.info)

    def _segment_topk(self, s: int, Q: np.ndarray, k: int):
        seg, index = self.snap.segments[s], self.parts[s]
        if index is not None:
            return index.kneighbors(Q, k)
        if seg.live == 0:
            return np.full((len(Q), 0), -np.inf, np.float32), np.full((len(Q), 0), -1, np.int64)
        vec, ids = self._small(s)
        if len(Q) == 1:  # compiled dot products: a BLAS call per query wakes BLAS threads (~8 ms when busy)
            from ..lsh import _kernels

            scores = _kernels.dot(vec, Q, np.arange(len(vec), dtype=np.int64)[None])[0]
            top = np.argsort(-scores, kind="stable")[:k]
            return scores[top][None], ids[top][None]
        sc, r = exact_topk(vec, Q, k)
        return sc, ids[r]

    def kneighbors(self, X: np.ndarray, k: int = 10):
        """Top-``k`` ``(scores, ids)`` of each query over all segments, ``-inf``/``-1`` padded."""
        Q = np.atleast_2d(np.asarray(X, np.float32))
        ss, ii = [], []
        for s in range(len(self.snap.segments)):
            sc, ids = self._segment_topk(s, Q, k)
            ss.append(sc)
            ii.append(ids)
        S = np.hstack(ss) if ss else np.zeros((len(Q), 0), np.float32)
        ID = np.hstack(ii) if ii else np.zeros((len(Q), 0), np.int64)
        out_s = np.full((len(Q), k), -np.inf, np.float32)
        out_i = np.full((len(Q), k), -1, np.int64)
        for q in range(len(Q)):
            ok = np.isfinite(S[q]) & (ID[q] >= 0)
            s, ids = S[q][ok], ID[q][ok]
            order = np.lexsort((ids, -s))[:k]
            out_s[q, : len(order)], out_i[q, : len(order)] = s[order], ids[order]
        return out_s, out_i

    def radius_neighbors(self, X: np.ndarray | None = None, threshold: float = 0.9, *, block: int = 4_096):
        """Live images with cosine >= ``threshold`` per query; ``X=None``: every image vs the others.

        Approximate, like all LSH answers: at most ``RADIUS_K`` per query from each hashed segment.
        """
        queries = [(None, np.atleast_2d(np.asarray(X, np.float32)))] if X is not None else (
            (r0, b) for r0, b in self.snap.rows.blocks(block))
        result = []
        for r0, Q in queries:
            self_ids = None if r0 is None else self.snap.cols["id"][r0 : r0 + len(Q)]
            per_q = [([], []) for _ in range(len(Q))]
            for s, seg in enumerate(self.snap.segments):
                index = self.parts[s]
                if index is not None:  # the compiled batch path, few probes: near pairs collide easily
                    sc_all, ids_all = index.kneighbors(Q, min(RADIUS_K, len(index)), n_probes=RADIUS_PROBES,
                                                       rerank=RADIUS_K)
                    for q in range(len(Q)):
                        keep = (sc_all[q] >= threshold) & (ids_all[q] >= 0)
                        per_q[q][0].append(sc_all[q][keep])
                        per_q[q][1].append(ids_all[q][keep])
                elif seg.live:
                    vec, ids = self._small(s)
                    sim = Q @ vec.T
                    qi, ri = np.nonzero(sim >= threshold)
                    for q in np.unique(qi):
                        m = qi == q
                        per_q[q][0].append(sim[q, ri[m]])
                        per_q[q][1].append(ids[ri[m]])
            for q, (sc, ids) in enumerate(per_q):
                sc = np.concatenate(sc) if sc else np.zeros(0, np.float32)
                ids = np.concatenate(ids) if ids else np.zeros(0, np.int64)
                if self_ids is not None:
                    keep = ids != self_ids[q]
                    sc, ids = sc[keep], ids[keep]
                order = np.lexsort((ids, -sc))
                result.append((sc[order].astype(np.float32), ids[order]))
        return result

    def pairs(self, threshold: float, *, block: int = 4_096, progress=None):
        """Near-duplicate pairs ``(rows_a, rows_b, scores)`` of the collection, each pair once, in blocks.

        Segment s's images query only segments t >= s (pairs across segments are found from
        the earlier one), so 4 equal segments cost 10 segment queries instead of 16.
        Approximate: at most ``RADIUS_K`` neighbours per image from each hashed segment.
        """
        snap, starts = self.snap, self.snap.rows.starts
        total = max(len(snap), 1)
        done = 0
        for s, seg in enumerate(snap.segments):
            rows_s = seg.alive_rows
            vec_s = seg.vectors()
            for b0 in range(0, len(rows_s), block):
                Q = np.asarray(vec_s[rows_s[b0 : b0 + block]], np.float32)
                qrows = starts[s] + b0 + np.arange(len(Q))
                for t in range(s, len(snap.segments)):
                    index = self.parts[t]
                    if index is not None:
                        sc, ids = index.kneighbors(Q, min(RADIUS_K, len(index)), n_probes=RADIUS_PROBES,
                                                   rerank=RADIUS_K)
                        qi, j = np.nonzero((sc >= threshold) & (ids >= 0))
                        a, b, score = qrows[qi], snap.rows_of_ids(ids[qi, j]), sc[qi, j]
                    elif snap.segments[t].live:
                        vec, _ = self._small(t)
                        sim = Q @ vec.T
                        qi, j = np.nonzero(sim >= threshold)
                        a, b, score = qrows[qi], starts[t] + j, sim[qi, j]
                    else:
                        continue
                    keep = b > a if t == s else np.ones(len(a), bool)
                    if keep.any():
                        yield a[keep], b[keep], score[keep].astype(np.float32)
                done += len(Q)
                if progress is not None:
                    progress(min(1.0, done / total))

    def measure(self, k: int = 10, seed: int = 0, queries: int = 200) -> tuple[float, float]:
        """Recall@k against exact search on sampled images (each excluding itself), and candidates/query."""
        n = len(self.snap)
        rng = np.random.default_rng(seed)
        qrows = np.sort(rng.choice(n, size=min(queries, n), replace=False))
        kk = min(k, n - 1)
        Q = self.snap.rows.take(qrows)
        truth = exact_topk(self.snap.rows, Q, kk, exclude=qrows)[1]
        found = self.kneighbors(Q, kk + 1)[1]
        ids = self.snap.cols["id"]
        rec = np.mean([len(set(f.tolist()) & set(ids[t].tolist())) / kk for f, t in zip(found, truth)])
        cand = sum(float(self.info["segments"].get(seg.name, {}).get("candidates", seg.live))
                   for seg in self.snap.segments)
        return float(rec), cand


def rows_weighted(per_segment: dict, snap: Snapshot) -> tuple[float | None, float]:
    """Collection recall estimate (rows-weighted mean of the segments'; exact scans count 1.0) and candidates."""
    if not len(snap):
        return None, 0.0
    rec, cand = 0.0, 0.0
    for seg in snap.segments:
        info = per_segment.get(seg.name)
        rec += seg.live * (info["recall"] if info else 1.0)
        cand += info["candidates"] if info else seg.live
    return rec / len(snap), cand


def database_augment_rows(folder: Path, snap: Snapshot, n: int, alpha: float, generation: int) -> dict:
    """Write alpha-DBA vectors of every live row (in row order) to ``dba-GEN.npy``, blockwise."""
    rows = snap.rows
    path = folder / f"dba-{generation:06d}.npy"
    tmp = storage.tmp_name(path)
    nn = min(n, max(len(rows) - 1, 0))
    with open(tmp, "wb") as f:
        f.write(npy_header(len(rows), rows.shape[1], np.float32))
        for r0, X in rows.blocks(2_048):
            if nn:
                excl = np.arange(r0, r0 + len(X))
                scores, nb = exact_topk(rows, X, nn, exclude=excl)
                w = np.maximum(scores, 0) ** alpha
                X = X + np.einsum("qn,qnd->qd", w, rows.take(nb.reshape(-1)).reshape(len(X), nn, -1))
                X /= np.maximum(np.linalg.norm(X, axis=1, keepdims=True), 1e-12)
            f.write(np.ascontiguousarray(X, np.float32).tobytes())
        f.flush()
        import os

        os.fsync(f.fileno())
    tmp.replace(path)
    storage.fsync_dir(folder)
    return storage.describe(path)


def load_dba(folder: Path, info: dict, shape: tuple[int, int], hint: str, fh=None) -> np.ndarray:
    """The stored DBA vectors, memory-mapped after a checksum check (from ``fh`` when given)."""
    path = storage.check_digest(folder, info["file"], hint, fd=None if fh is None else fh.fileno())
    arr = np.memmap(fh if fh is not None else path, dtype=np.float32, mode="r", offset=NPY_HEADER)
    if arr.size != shape[0] * shape[1]:
        raise CorruptCollectionError(f"{path} holds {arr.size} values, expected {shape}. {hint}")
    return arr.reshape(shape)
