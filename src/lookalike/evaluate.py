"""Retrieval quality measures: P@k and mAP (leave-one-out), recall of approximate search."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from .dupes import DEFAULT_THRESHOLD
from .expansion import (  # noqa: F401 (re-exported: they lived here before lookalike.expansion)
    DEFAULT_DBA,
    DEFAULT_EXPAND,
    KEEP_FIRST,
    RAW_WEIGHT,
    database_augment,
    expand_queries,
    rerank,
    reranks,
)
from .search import exact_topk


def class_retrieval(embeddings: np.ndarray, labels: Sequence[str], k: int = 10, *, expand: int | None = None,
                    dba: int | None = None) -> dict:
    """Leave-one-out class retrieval: every image queries all the others.

    By default it measures what `search` returns by default (:func:`lookalike.expansion.reranks`):
    for 1,000 to 20,000 images the DBA + QE re-ranking of a shortlist, else plain cosine. Giving
    ``expand`` or ``dba`` (0 included) measures that setting instead, on the whole collection.

    Parameters
    ----------
    embeddings : ndarray, shape (n, d)
        Unit vectors.
    labels : sequence of str, length n
    k : int, default 10
    expand : int, optional
        If > 0, alpha-query-expansion with this many neighbours before ranking.
    dba : int, optional
        If > 0, rank against the database after alpha-DBA with this many neighbours (the
        query is the image's own, un-augmented embedding; with ``expand`` its expansion uses
        the augmented database).

    Returns
    -------
    dict
        ``p_at_1``, ``p_at_k`` (mean precision of the top 1 / top k) and ``map`` (mean
        average precision over the full ranking), plus ``n``, ``k``, ``expand``, ``dba`` and
        ``reranked`` (whether it is `search`'s default shortlist re-ranking: P@1 and P@k are
        then exactly what `search` returns; mAP ranks every image as the re-ranking would if
        its shortlist held them all).
    """
    emb = np.asarray(embeddings, dtype=np.float32)
    lab = np.asarray(labels)
    n = len(lab)
    _, codes = np.unique(lab, return_inverse=True)
    auto = expand is None and dba is None
    reranked = auto and reranks(n)
    expand, dba = (DEFAULT_EXPAND, DEFAULT_DBA) if reranked else (expand or 0, dba or 0)
    base = emb
    if dba:
        emb = database_augment(base, dba)
    queries = expand_queries(base, emb, expand, exclude=np.arange(n)) if expand else base
    if reranked:
        idx, _ = rerank(base, base, k, exclude=np.arange(n), augmented=emb)
    else:
        _, idx = exact_topk(emb, queries, k, exclude=np.arange(n))
    same = codes[idx] == codes[:, None]
    aps = []
    for q0 in range(0, n, 512):  # full ranking per block of queries for mAP
        s = queries[q0 : q0 + 512] @ emb.T
        rows = np.arange(s.shape[0])
        if reranked:  # the re-ranking's blend of the plain cosine (expansion.RAW_WEIGHT), its best match first
            plain = base[q0 : q0 + 512] @ base.T
            plain[rows, q0 + rows] = -np.inf
            s = RAW_WEIGHT * plain + (1 - RAW_WEIGHT) * s
            if KEEP_FIRST:
                s[rows, np.argmax(plain, axis=1)] = np.inf
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
        "reranked": reranked,
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


# ---------------------------------------------------------------- near-duplicate suite
# Default `dupes` threshold the suite reports against (the CLI's --threshold default).
DUPES_THRESHOLD = DEFAULT_THRESHOLD
# Thresholds at which the suite reports pair precision, the share found and group purity.
SCALE_THRESHOLDS = (0.80, 0.82, 0.84, 0.86, 0.88, 0.90, 0.92, 0.94, 0.95)
# Unrelated images scored against every edit: n_edits x 20,000 x 1280 ~ 50 GFLOP for 100 originals (~10 s).
NEGATIVE_SAMPLE = 20_000
# Edits that change the orientation: `dupes` is not expected to match them without a rotations option.
ORIENTATION_EDITS = ("rotate_90", "rotate_180")


def _font(size: int):
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1: a fixed small bitmap font
        return ImageFont.load_default()


def _edits():
    """Edits for the near-duplicate suite: name -> function(RGB PIL image, rng) -> RGB PIL image.

    Seeded by ``rng`` only (no clock, no randomness of their own), so a seed gives the same copies.
    """
    from PIL import Image, ImageDraw, ImageEnhance, ImageFilter

    def jpeg(im, q):
        import io

        buf = io.BytesIO()
        im.save(buf, format="JPEG", quality=q)
        return Image.open(io.BytesIO(buf.getvalue())).convert("RGB")

    def crop_area(im, rng, lo, hi):
        """A random crop keeping a share in [lo, hi] of the side (same share on both axes)."""
        w, h = im.size
        f = rng.uniform(lo, hi)
        cw, ch = max(1, int(w * f)), max(1, int(h * f))
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

    def rotate(im, rng, lo, hi, fill):
        angle = float(rng.uniform(lo, hi)) * (1 if rng.random() < 0.5 else -1)
        return im.rotate(angle, resample=Image.BICUBIC, expand=True, fillcolor=fill)

    def squash(im, rng):
        """Aspect ratio changed: a landscape photo squashed to a square, a square one stretched 1.5x."""
        w, h = im.size
        if max(w, h) / min(w, h) > 1.15:
            s = min(w, h)
            return im.resize((s, s), Image.BICUBIC)
        return im.resize((int(w * 1.5), h), Image.BICUBIC)

    def stretch(im, rng):
        w, h = im.size
        f = rng.uniform(0.6, 0.75)
        return im.resize((w, max(1, int(h * f))), Image.BICUBIC) if rng.random() < 0.5 else \
            im.resize((max(1, int(w * f)), h), Image.BICUBIC)

    def screenshot(im, rng):
        """The photo inside an app window: title bar, toolbar, side panel, status bar, on a 16:10 screen."""
        w, h = im.size
        W = int(max(w, h * 1.6) / rng.uniform(0.7, 0.85))
        H = int(W / 1.6)
        bg = tuple(int(v) for v in rng.integers(200, 250, 3))
        canvas = Image.new("RGB", (W, H), bg)
        d = ImageDraw.Draw(canvas)
        bar = max(12, H // 18)
        d.rectangle((0, 0, W, bar), fill=(60, 60, 66))
        for i, c in enumerate([(237, 94, 88), (245, 190, 79), (98, 197, 84)]):
            d.ellipse((bar // 3 + i * bar, bar // 4, bar // 3 + i * bar + bar // 2, bar // 4 + bar // 2), fill=c)
        d.text((W // 3, bar // 4), "IMG_2041.jpg — Photos", fill=(230, 230, 230), font=_font(max(8, bar // 2)))
        d.rectangle((0, bar, W, 2 * bar), fill=(235, 235, 238))
        for i in range(6):
            d.rectangle((8 + i * bar * 2, bar + 4, 8 + i * bar * 2 + bar, 2 * bar - 4), fill=(150, 150, 160))
        side = int(W * rng.uniform(0.12, 0.2))
        d.rectangle((0, 2 * bar, side, H), fill=(245, 245, 247))
        for i in range(2 * bar + 8, H - bar, bar):
            d.text((8, i), "Album", fill=(90, 90, 90), font=_font(max(8, bar // 2)))
        d.rectangle((0, H - bar, W, H), fill=(220, 220, 224))
        aw, ah = W - side - 16, H - 3 * bar - 16
        s = min(aw / w, ah / h)
        pic = im.resize((max(1, int(w * s)), max(1, int(h * s))), Image.BICUBIC)
        canvas.paste(pic, (side + 8 + (aw - pic.width) // 2, 2 * bar + 8 + (ah - pic.height) // 2))
        return canvas

    def watermark(im, rng):
        """Heavy overlay: a tiled, half-transparent diagonal text watermark plus a caption band."""
        w, h = im.size
        layer = Image.new("RGBA", (2 * w, 2 * h), (0, 0, 0, 0))
        d = ImageDraw.Draw(layer)
        size = max(10, min(w, h) // 8)
        font = _font(size)
        colour = (255, 255, 255, 120) if rng.random() < 0.5 else (0, 0, 0, 110)
        for y in range(0, 2 * h, int(size * 2.2)):
            d.text(((y // 3) % (4 * size) - 2 * size, y), "© STOCKPHOTO  " * 8, fill=colour, font=font)
        layer = layer.rotate(float(rng.uniform(20, 40)), resample=Image.BICUBIC).crop((w // 2, h // 2, w // 2 + w,
                                                                                          h // 2 + h))
        out = Image.alpha_composite(im.convert("RGBA"), layer).convert("RGB")
        d = ImageDraw.Draw(out)
        d.rectangle((0, int(h * 0.8), w, h), fill=(20, 20, 20))
        d.text((8, int(h * 0.82)), "Buy this photo at example.com", fill=(255, 255, 0), font=_font(max(8, h // 14)))
        return out

    def gamma(im, rng):
        g = rng.uniform(0.45, 0.65) if rng.random() < 0.5 else rng.uniform(1.6, 2.2)
        lut = [int(round(255 * (i / 255) ** g)) for i in range(256)] * 3
        return im.point(lut)

    def colour_cast(im, rng):
        gains = 1 + rng.uniform(-0.3, 0.3, 3)
        a = np.asarray(im, np.float32) * gains + rng.uniform(-20, 20, 3)
        return Image.fromarray(np.clip(a, 0, 255).astype(np.uint8))

    def thumbnail(im, rng):
        side = int(rng.integers(64, 161))
        t = im.copy()
        t.thumbnail((side, side), Image.LANCZOS)
        return jpeg(t, 80)

    return {
        "crop": lambda im, rng: crop_area(im, rng, 0.75, 0.9),
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
        # the harder, wider set (issue 15)
        "squash": squash,
        "stretch": stretch,
        "rotate_20": lambda im, rng: rotate(im, rng, 15, 25, (0, 0, 0)),
        "rotate_90": lambda im, rng: im.transpose(Image.ROTATE_90 if rng.random() < 0.5 else Image.ROTATE_270),
        "rotate_180": lambda im, rng: im.transpose(Image.ROTATE_180),
        "screenshot": screenshot,
        "watermark": watermark,
        "crop_50": lambda im, rng: crop_area(im, rng, np.sqrt(0.4), np.sqrt(0.6)),  # 40-60 % of the area
        "gamma": gamma,
        "colour_cast": colour_cast,
        "thumbnail": thumbnail,
    }


EDIT_NAMES = tuple(_edits())


def edit_image(image, rng, names: Sequence[str] | None = None) -> dict:
    """Seeded edited copies of one RGB PIL image: ``{edit name: PIL image}`` (all edits by default)."""
    edits = _edits()
    return {name: edits[name](image, rng) for name in (names or edits)}


def _group_map(P: np.ndarray, group: np.ndarray) -> float:
    """Mean AP of retrieving each vector's group (the other members) from the pool ``P``."""
    s = P @ P.T
    np.fill_diagonal(s, -np.inf)
    order = np.argsort(-s, axis=1)[:, :-1]
    rel = group[order] == group[:, None]
    hits = np.cumsum(rel, axis=1)
    ap = ((hits / np.arange(1, rel.shape[1] + 1)) * rel).sum(1) / np.maximum(rel.sum(1), 1)
    return float(ap.mean())


def _purity(vectors: np.ndarray, group: np.ndarray, thresholds: Sequence[float]) -> dict:
    """Connected components of pairs >= t (as `dupes` groups them) among ``vectors``, per threshold.

    ``group`` is the true photo of each vector (>= 0: a suite photo and its copies; -1: another
    collection image, a photo of its own). Returns per threshold: ``purity`` (share of the
    components holding suite copies that hold one photo only), ``chained`` (components that join
    different photos) and ``together`` (share of copies in their original's component).
    """
    from .dupes import components, exact_pairs

    group = np.asarray(group).copy()
    other = group < 0
    group[other] = group.max(initial=0) + 1 + np.arange(other.sum())  # each other image: a photo of its own
    a, b, s = exact_pairs(np.asarray(vectors, np.float32), min(thresholds))
    out = {}
    for t in thresholds:
        keep = s >= t
        comp = components(len(vectors), a[keep], b[keep])
        pure = chained = 0
        for c in np.unique(comp[~other]):
            members = group[comp == c]
            if len(members) < 2:
                continue
            if len(np.unique(members)) == 1:
                pure += 1
            else:
                chained += 1
        suite = ~other
        first = {}
        for i in np.flatnonzero(suite):  # the original is the first vector of its group
            first.setdefault(group[i], comp[i])
        together = np.mean([comp[i] == first[group[i]] for i in np.flatnonzero(suite)])
        out[f"{t:.2f}"] = {"purity": pure / max(pure + chained, 1), "chained": chained,
                           "together": float(together)}
    return out


# Two images are the same photo when their 32 x 32 grey thumbnails correlate this much (a
# collection's own copies of an original: Caltech-101 holds a few, e.g. a render with and without a logo).
TWIN_CORRELATION = 0.8  # measured: a Caltech render with/without a logo 0.90, different photos <= 0.4


def _thumb(image) -> np.ndarray:
    a = np.asarray(image.convert("L").resize((32, 32)), np.float32).ravel()
    a -= a.mean()
    return a / max(float(np.linalg.norm(a)), 1e-6)


def find_twins(paths: Sequence[str], rows: np.ndarray, database, *, min_cosine: float = 0.8) -> dict:
    """The collection's own copies of each original: ``{row: [rows of the same photo]}``.

    Candidates are the images within ``min_cosine`` of an original; a pixel check (grey 32 x 32
    thumbnails, correlation >= :data:`TWIN_CORRELATION`) decides, so the answer does not depend on
    the embedding being measured. Unreadable candidates are left out.
    """
    from . import images

    db = np.asarray(database, np.float32)
    out = {}
    for r in np.asarray(rows):
        cand = np.flatnonzero(db @ db[r] >= min_cosine)
        cand = cand[cand != r]
        if not len(cand):
            continue
        try:
            ref = _thumb(images.decode(paths[r]).image)
        except images.DecodeError:
            continue
        same = []
        for c in cand:
            try:
                if float(ref @ _thumb(images.decode(paths[c]).image)) >= TWIN_CORRELATION:
                    same.append(int(c))
            except images.DecodeError:
                pass
        if same:
            out[int(r)] = same
    return out


def score_near_duplicates(database, rows: np.ndarray, edits: dict, *, k: int = 10, labels=None,
                          threshold: float = DUPES_THRESHOLD, seed: int = 0, twins: dict | None = None,
                          negatives: int = NEGATIVE_SAMPLE, purity_sample: int = 2000,
                          reranked: bool | None = None) -> dict:
    """Score edited copies against the collection they were made from.

    Parameters
    ----------
    database : array-like, shape (n, d)
        The collection's unit vectors.
    rows : ndarray of int, shape (m,)
        The originals' rows in ``database``.
    edits : dict of str to ndarray, shape (m, d)
        Per edit name, the unit vectors of the edited copies, in the order of ``rows``.
    k : int, default 10
        Cut-off of recall@k (the original among the collection's images).
    labels : sequence of str, optional
        Class of each database image: unrelated pairs of the same class are counted apart.
    threshold : float, default DUPES_THRESHOLD (0.88)
        The `dupes` threshold for ``found`` (share of pairs copy-original at or above it).
    seed : int
        Seed of the negative samples.
    twins : dict of int to list of int, optional
        The collection's own copies of an original (:func:`find_twins`): neither unrelated pairs
        nor a chaining of different photos.
    negatives : int, default 20,000
        Collection images (a seeded sample, all if fewer) scored against every copy: the unrelated
        pairs of the pair precision.
    purity_sample : int, default 2000
        Other collection images added to the copies for the group-purity measure.
    reranked : bool, optional
        Rank for recall@1 / recall@k as `search` does by default (DBA + QE re-ranking of a
        shortlist, :func:`lookalike.expansion.rerank`); default: when `search` would
        (:func:`lookalike.expansion.reranks`). Scores, ``found``, precision and purity are raw
        cosines, as `dupes` sees them.

    Returns
    -------
    dict
        ``edits``: per edit ``recall_at_1``, ``recall_at_{k}``, ``found`` (share at or above
        ``threshold``) and ``median_score``; ``group_map`` (each original and copy retrieves
        its group from the pool of all of them); ``scale``: per threshold in
        :data:`SCALE_THRESHOLDS`, ``found`` (all edits but 90/180 degree rotations), ``found_all``,
        ``false_pairs`` (copy vs. an unrelated collection image at or above it), ``same_class``
        (of those, pairs of the same class) and ``precision`` = true / (true + false) pairs;
        ``purity``: see :func:`_purity`. Approximate by nature: a collection's own copies of an
        original count as unrelated unless ``twins`` names them.
    """
    db = np.asarray(database, np.float32)
    rows = np.asarray(rows)
    n, m = len(db), len(rows)
    rng = np.random.default_rng(seed)
    neg = np.arange(n) if n <= negatives else np.sort(rng.choice(n, negatives, replace=False))
    lab = None if labels is None else np.asarray(labels)
    thresholds = sorted(set(SCALE_THRESHOLDS) | {float(threshold)})
    twins = {int(r): list(v) for r, v in (twins or {}).items()}
    reranked = reranks(n) if reranked is None else bool(reranked)
    augmented = database_augment(db, DEFAULT_DBA) if reranked else None
    out = {"originals": m, "k": k, "threshold": threshold, "negatives": len(neg), "reranked": reranked,
           "twins": sum(len(v) for v in twins.values()), "edits": {}}
    related = neg[None, :] == rows[:, None]  # a copy's own original (and its twins) are no negatives
    for i, r in enumerate(rows):
        related[i] |= np.isin(neg, twins.get(int(r), []))
    true_counts = {t: [0, 0] for t in thresholds}  # t -> [all edits, without orientation edits]
    false_counts = {t: [0, 0, 0] for t in thresholds}  # t -> [false pairs, same class, without orientation]
    n_pairs = n_pairs_main = 0
    for name, vecs in edits.items():
        vecs = np.asarray(vecs, np.float32)
        found = rerank(db, vecs, k, augmented=augmented)[0] if reranked else exact_topk(db, vecs, k)[1]
        hit = found == rows[:, None]
        ranks = np.where(hit.any(1), hit.argmax(1) + 1, k + 1)
        pos = np.einsum("ij,ij->i", vecs, db[rows])
        s = vecs @ db[neg].T
        s[related] = -np.inf
        main = name not in ORIENTATION_EDITS
        n_pairs += m
        n_pairs_main += m * main
        for t in thresholds:
            true_counts[t][0] += int((pos >= t).sum())
            true_counts[t][1] += int((pos >= t).sum()) * main
            fp = s >= t
            false_counts[t][0] += int(fp.sum())
            false_counts[t][2] += int(fp.sum()) * main
            if lab is not None:
                false_counts[t][1] += int((fp & (lab[neg][None, :] == lab[rows][:, None])).sum())
        out["edits"][name] = {"recall_at_1": float((ranks == 1).mean()), f"recall_at_{k}": float((ranks <= k).mean()),
                              "found": float((pos >= threshold).mean()), "median_score": float(np.median(pos))}
    out["scale"] = {
        f"{t:.2f}": {"found": true_counts[t][1] / max(n_pairs_main, 1),
                     "found_all": true_counts[t][0] / max(n_pairs, 1),
                     "false_pairs": false_counts[t][0], "same_class": false_counts[t][1] if lab is not None else None,
                     "precision": true_counts[t][1] / max(true_counts[t][1] + false_counts[t][2], 1)}
        for t in thresholds}
    out["pair_precision"] = out["scale"][f"{threshold:.2f}"]["precision"]
    out["found"] = out["scale"][f"{threshold:.2f}"]["found"]
    # group mAP: each original and copy queries the pool of all of them; relevant = its group
    names = list(edits)
    P = np.concatenate([db[rows][:, None]] + [np.asarray(edits[e], np.float32)[:, None] for e in names], axis=1)
    group = np.repeat(np.arange(m), len(names) + 1)
    P = P.reshape(-1, db.shape[1])
    out["group_map"] = _group_map(P, group)
    twin_rows = [t for r in rows for t in twins.get(int(r), [])]
    twin_group = [g for g, r in enumerate(rows) for _ in twins.get(int(r), [])]
    others = np.setdiff1d(np.arange(n), np.concatenate([rows, np.asarray(twin_rows, int)]))
    if len(others) > purity_sample:
        others = np.sort(rng.choice(others, purity_sample, replace=False))
    out["purity"] = _purity(np.vstack([P, db[np.asarray(twin_rows, int)].reshape(-1, db.shape[1]), db[others]]),
                            np.concatenate([group, np.asarray(twin_group, int), -np.ones(len(others), int)]),
                            [t for t in thresholds if t >= 0.8])
    return out


def near_duplicate_robustness(col, n_originals: int = 100, seed: int = 0, k: int = 10, *,
                              threshold: float = DUPES_THRESHOLD, edits: Sequence[str] | None = None) -> dict:
    """Edit ``n_originals`` indexed images (fixed seed) and score the copies against the collection.

    Every copy is embedded with the collection's own encoder and pipeline. See
    :func:`score_near_duplicates` for what is returned (per edit recall@1 / recall@k of the
    original, the share `dupes` finds at ``threshold``, group mAP, pair precision and group purity
    per threshold); the names of the edits are :data:`EDIT_NAMES`.
    """
    from . import images

    rng = np.random.default_rng(seed)
    rows = np.sort(rng.choice(len(col), size=min(n_originals, len(col)), replace=False))
    names = list(edits or EDIT_NAMES)
    vecs = {name: [] for name in names}
    kept = []
    enc = col.encoder
    for r in rows:
        try:
            im = images.decode(col.paths[r]).image
        except images.DecodeError:
            continue
        copies = edit_image(im, rng, names)
        for name, v in zip(names, enc.embed_images(list(copies.values()))):
            vecs[name].append(v)
        kept.append(r)
    if not kept:
        raise ValueError("none of the sampled originals could be decoded")
    labels = col.labels if len(set(col.labels)) > 1 else None
    kept = np.asarray(kept)
    db = np.asarray(col.embeddings, np.float32)
    twins = find_twins(col.paths, kept, db)
    return score_near_duplicates(db, kept, {n: np.stack(v) for n, v in vecs.items()},
                                 k=k, labels=labels, threshold=threshold, seed=seed, twins=twins)


def measure(col, *, k: int = 10, near_dup: int = 0, ignore_label: Sequence[str] = (), expand: int = 0,
            dba: int = 0, seed: int = 0, step=None) -> dict:
    """What ``lookalike eval`` measures on a collection, as one dict.

    Keys: db, images, then, when measured, class_retrieval (+ _expanded with ``expand``, _dba with
    ``dba``; leave-one-out over the labelled images less ``ignore_label``, needs two labels or more),
    near_duplicates (``near_dup`` seeded originals edited, see :func:`near_duplicate_robustness`), lsh
    (the collection's LSH index recall@k against exact search). ``step``: a context manager factory
    called with a message around each long step (the CLI's spinner).
    """
    from contextlib import nullcontext

    step = step or (lambda message: nullcontext())
    results: dict = {"db": str(col.path), "images": len(col)}
    labels = col.labels
    keep = [i for i, lab in enumerate(labels) if lab not in set(ignore_label)]
    kept_labels = [labels[i] for i in keep]
    if len(set(kept_labels)) > 1:
        emb = np.asarray(col.embeddings)[keep]
        with step(f"class retrieval: {len(keep)} leave-one-out queries..."):
            results["class_retrieval"] = class_retrieval(emb, kept_labels, k=k)
        if expand:
            results["class_retrieval_expanded"] = class_retrieval(emb, kept_labels, k=k, expand=expand)
        if dba:
            results["class_retrieval_dba"] = class_retrieval(emb, kept_labels, k=k, expand=expand, dba=dba)
    if near_dup:
        with step(f"near-duplicate robustness: editing and embedding {near_dup} originals..."):
            results["near_duplicates"] = near_duplicate_robustness(col, n_originals=near_dup, seed=seed, k=k)
    if col.lsh is not None:
        rec, cand = col.lsh.measure(k=k, seed=seed)
        results["lsh"] = {"recall_at_k": rec, "candidates": cand, "k": k}
    return results
