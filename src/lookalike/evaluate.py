"""Retrieval quality measures: P@k and mAP (leave-one-out), recall of approximate search."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from .search import exact_topk


def expand_queries(queries: np.ndarray, database: np.ndarray, n: int, *, alpha: float = 3.0,
                   exclude: np.ndarray | None = None) -> np.ndarray:
    """Alpha-weighted query expansion (Radenovic et al.); returns unit vectors.

    Adds the top-``n`` neighbours, weighted by their similarity to the power ``alpha``, to each query.
    """
    scores, rows = exact_topk(database, queries, n, exclude=exclude)
    w = np.maximum(scores, 0) ** alpha
    gathered = np.asarray(database[rows.reshape(-1)], np.float32).reshape(*rows.shape, -1)  # only these rows
    Q = queries + np.einsum("qn,qnd->qd", w, gathered)
    return Q / np.maximum(np.linalg.norm(Q, axis=1, keepdims=True), 1e-12)


def database_augment(database: np.ndarray, n: int, *, alpha: float = 3.0) -> np.ndarray:
    """alpha-weighted database-side augmentation (alpha-DBA, Radenovic et al.).

    Each vector is replaced by itself plus its ``n`` nearest other vectors weighted by
    similarity to the power ``alpha``, re-normalised: images move towards the dense part of
    their neighbourhood, so a query close to some of them reaches the others too. Exact
    (blockwise) neighbours: O(n^2 d) once per collection.
    """
    X = np.asarray(database, np.float32)
    rows_all = np.arange(len(X))
    scores, rows = exact_topk(X, X, n, exclude=rows_all)
    w = np.maximum(scores, 0) ** alpha
    out = np.empty_like(X)
    for i in range(0, len(X), 4096):  # bounded temporary (block, n, d)
        sl = slice(i, i + 4096)
        out[sl] = X[sl] + np.einsum("qn,qnd->qd", w[sl], X[rows[sl]])
    return out / np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-12)


def class_retrieval(embeddings: np.ndarray, labels: Sequence[str], k: int = 10, *, expand: int = 0,
                    dba: int = 0) -> dict:
    """Leave-one-out class retrieval: every image queries all the others.

    Parameters
    ----------
    embeddings : ndarray, shape (n, d)
        Unit vectors.
    labels : sequence of str, length n
    k : int, default 10
    expand : int, default 0
        If > 0, alpha-query-expansion with this many neighbours before ranking.
    dba : int, default 0
        If > 0, rank against the database after alpha-DBA with this many neighbours (the
        query is the image's own, un-augmented embedding; with ``expand`` its expansion uses
        the augmented database).

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
    base = emb
    if dba:
        emb = database_augment(base, dba)
    queries = expand_queries(base, emb, expand, exclude=np.arange(n)) if expand else base
    _, idx = exact_topk(emb, queries, k, exclude=np.arange(n))
    same = codes[idx] == codes[:, None]
    aps = []
    for q0 in range(0, n, 512):  # full ranking per block of queries for mAP
        s = queries[q0 : q0 + 512] @ emb.T
        rows = np.arange(s.shape[0])
        s[rows, q0 + rows] = -np.inf
        order = np.argsort(-s, axis=1)[:, :-1]
        rel = codes[order] == codes[q0 : q0 + 512, None]
        hits = np.cumsum(rel, axis=1)
        ranks = np.arange(1, rel.shape[1] + 1)
        n_rel = np.maximum(rel.sum(axis=1), 1)
        aps.append(((hits / ranks) * rel).sum(axis=1) / n_rel)
    return {
        "n": n,
        "k": k,
        "expand": expand,
        "dba": dba,
        "p_at_1": float(same[:, 0].mean()),
        "p_at_k": float(same.mean()),
        "map": float(np.concatenate(aps).mean()),
    }


def recall_at_k(approx_ids: np.ndarray, exact_ids: np.ndarray) -> float:
    """Fraction of the exact top-k found by the approximate top-k (row-wise, averaged)."""
    approx_ids, exact_ids = np.atleast_2d(approx_ids), np.atleast_2d(exact_ids)
    k = exact_ids.shape[1]
    if k == 0:
        return 1.0
    found = sum(len(set(a[a >= 0].tolist()) & set(e.tolist())) for a, e in zip(approx_ids, exact_ids))
    return found / (k * len(exact_ids))


# Edits for the near-duplicate robustness test: name -> function(PIL image, rng) -> PIL image.
def _edits():
    from PIL import Image, ImageDraw, ImageEnhance, ImageFilter

    def jpeg(im, q):
        import io

        buf = io.BytesIO()
        im.save(buf, format="JPEG", quality=q)
        return Image.open(io.BytesIO(buf.getvalue())).convert("RGB")

    def crop(im, rng):
        w, h = im.size
        f = rng.uniform(0.75, 0.9)
        cw, ch = int(w * f), int(h * f)
        x, y = int(rng.integers(0, w - cw + 1)), int(rng.integers(0, h - ch + 1))
        return im.crop((x, y, x + cw, y + ch))

    def overlay(im, rng):
        im = im.copy()
        d = ImageDraw.Draw(im)
        w, h = im.size
        d.rectangle((0, int(h * 0.85), w, h), fill=(0, 0, 0))
        d.text((8, int(h * 0.87)), "© lookalike 2026 — sample caption", fill=(255, 255, 255))
        return im

    def noise(im, rng):
        a = np.asarray(im.filter(ImageFilter.GaussianBlur(1.2)), np.float32)
        a += rng.normal(0, 8, a.shape)
        return Image.fromarray(np.clip(a, 0, 255).astype(np.uint8))

    return {
        "crop": crop,
        "jpeg_q30": lambda im, rng: jpeg(im, 30),
        "downscale_50": lambda im, rng: im.resize((max(1, im.width // 2), max(1, im.height // 2)), Image.BICUBIC),
        "rotate_10": lambda im, rng: im.rotate(float(rng.uniform(-10, 10)), resample=Image.BICUBIC, expand=True,
                                               fillcolor=(255, 255, 255)),
        "colour": lambda im, rng: ImageEnhance.Color(ImageEnhance.Brightness(im).enhance(rng.uniform(0.7, 1.3)))
        .enhance(rng.uniform(0.5, 1.5)),
        "blur_noise": noise,
        "text_overlay": overlay,
        "border": lambda im, rng: Image.fromarray(np.pad(np.asarray(im), ((20, 20), (20, 20), (0, 0)),
                                                         constant_values=255)),
        "flip": lambda im, rng: im.transpose(Image.FLIP_LEFT_RIGHT),
    }


def near_duplicate_robustness(col, n_originals: int = 100, seed: int = 0, k: int = 10) -> dict:
    """Edit ``n_originals`` indexed images (fixed seed) and search the collection with each edit.

    Returns per edit type the recall@1 and recall@k of the original (its rank among the
    collection's images), and ``group_map``: mean average precision of retrieving an
    original's whole group (the original and its other edits) from a pool of all edits.
    """
    from . import images

    rng = np.random.default_rng(seed)
    rows = np.sort(rng.choice(len(col), size=min(n_originals, len(col)), replace=False))
    edits = _edits()
    per_edit = {name: [] for name in edits}
    pool_vecs, pool_group = [], []
    enc = col.encoder
    for g, r in enumerate(rows):
        try:
            im = images.decode(col.paths[r]).image
        except images.DecodeError:
            continue
        edited = {name: fn(im, rng) for name, fn in edits.items()}
        vecs = enc.embed_images(list(edited.values()))
        _, found = exact_topk(col.embeddings, vecs, k)
        for (name, _), f in zip(edited.items(), found):
            rank = np.flatnonzero(f == r)
            per_edit[name].append(int(rank[0]) + 1 if len(rank) else k + 1)
        pool_vecs.append(np.vstack([np.asarray(col.embeddings[r])[None], vecs]))
        pool_group += [g] * (1 + len(vecs))
    P = np.vstack(pool_vecs)
    group = np.asarray(pool_group)
    out = {"originals": len(pool_vecs), "k": k, "edits": {}}
    for name, ranks in per_edit.items():
        ranks = np.asarray(ranks)
        out["edits"][name] = {"recall_at_1": float((ranks == 1).mean()), f"recall_at_{k}": float((ranks <= k).mean())}
    # group mAP: each member of a group queries the pool; relevant = the other members
    s = P @ P.T
    np.fill_diagonal(s, -np.inf)
    order = np.argsort(-s, axis=1)[:, :-1]
    rel = group[order] == group[:, None]
    hits = np.cumsum(rel, axis=1)
    ap = ((hits / np.arange(1, rel.shape[1] + 1)) * rel).sum(1) / np.maximum(rel.sum(1), 1)
    out["group_map"] = float(ap.mean())
    return out
