"""Geometric verification of candidate near-duplicate pairs: local features + RANSAC.

The embedding's cosine cannot tell a hard edit of a photo (a 40-60 % crop, a thumbnail, a
20-degree turn, a tiled watermark, a screenshot of it) from another photo of the same kind: both
score 0.6-0.88. Local features can: a copy shares many keypoints with its original at positions
that one affine map explains; a different photo of the same object does not. This module checks
pairs that way: SIFT keypoints (OpenCV) on each image resized so its longer side is
:data:`LONG_SIDE`, Lowe's ratio test, one-to-one matches, then a RANSAC affine fit
(``cv2.estimateAffine2D``); a pair is verified when at least :data:`MIN_INLIERS` matches agree
with the fit, the fit is a plausible edit (no mirror, no extreme squash), the inliers span at least
:data:`MIN_COVERAGE` of one image, and the two images aligned by the fit look alike
(:data:`MIN_CORRELATION`: two different photos under the same watermark share keypoints on it,
not their pixels).

Needs ``opencv-python-headless`` (SIFT is in OpenCV >= 4.4). Measured by ``benchmarks/verify.py``.
"""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import Sequence

import numpy as np

# Longer side of the image the keypoints are found on: thumbnails are upscaled to it (more keypoints
# on a 64 px copy), large photos downscaled (bounded cost).
LONG_SIDE = 400
# Keypoints kept per image (strongest first).
N_FEATURES = 600
# Lowe's ratio test: best match distance < RATIO x second best.
RATIO = 0.8
# RANSAC reprojection error, pixels in the LONG_SIDE frame.
RANSAC_PX = 6.0
# The rule, chosen on a seeded half of the near-duplicate suite's originals (benchmarks/verify.py,
# benchmarks/results/verify.json): matches that must agree with one affine map for the pair to count
# as one photo ...
MIN_INLIERS = 28
# ... spanning at least this share of one of the two images (the convex hull of the inliers) ...
MIN_COVERAGE = 0.1
# ... and the two images, aligned by that map, must correlate this much where they overlap (grey,
# THUMB_SIDE px): two different photos that share an overlay (the same tiled watermark, the same
# app window) match keypoints on it but not in their pixels.
MIN_CORRELATION = 0.5
# Which pairs to verify (for `dupes`): cosine in [BAND_LOW, threshold), and one image among the other's
# TOP_K nearest collection images (keeps the checks near 2 per image instead of growing with n).
BAND_LOW = 0.55
TOP_K = 3
THUMB_SIDE = 96
TILES = 4  # the correlation is the median over a TILES x TILES grid of the overlap
TILE_STD = 4.0  # grey levels: a flatter tile (sky, a caption band) has no say
# verify_pairs keeps the features of this many images in memory (~80 kB each).
CACHE_IMAGES = 2048
# verify_pairs works through the pairs in chunks of this many: the chunk's missing features are computed
# in a thread pool (OpenCV releases the GIL), then its pairs are matched in the pool.
CHUNK_PAIRS = 256
# Threads of verify_pairs (None: one per core, at most 8).
MAX_WORKERS = 8
# Screening: most candidate pairs are two different photos. verify_pairs first matches cheap features
# (longer side SCREEN_LONG_SIDE, SCREEN_FEATURES keypoints, ~40 % of the cost of the full ones) and checks
# with the full features only the pairs with at least SCREEN_MIN_INLIERS inliers there (~5 % of the pairs
# of different photos; the gate was set on a separate 2,500-image Caltech collection, where every pair the
# full check verified had >= 9; benchmarks/verify.py measures the suite with it).
SCREEN_LONG_SIDE = 240
SCREEN_FEATURES = 300
SCREEN_MIN_INLIERS = 8
# `dupes` verifies by default ("auto") up to this many images. Measured end to end (benchmarks/verify.py
# --collection, 2,500 Caltech photos, 2-core VM with the other core busy elsewhere): ~23 ms per image
# (screening the ~2 candidate pairs per image, full features for the few that pass), so 20,000 images add
# ~7.5 minutes to the few seconds of the threshold alone (~2x the time to index them; less with free
# cores): about the most a run nobody asked to be slow should take. It is also search's re-ranking limit
# (lookalike.expansion). --verify checks any size. The CLI keeps a copy (cli/options.VERIFY_MAX_IMAGES;
# tests/test_verify.py compares).
AUTO_MAX_IMAGES = 20_000
# The fitted map's two scale factors may differ by at most this (a squash to a square is ~1.5).
MAX_ANISOTROPY = 3.0


@dataclass(frozen=True)
class Features:
    """One image's keypoints and what the checks need of it.

    Keypoint positions (n, 2) in the LONG_SIDE frame, their SIFT descriptors (n, 128; uint8, the
    exact values OpenCV computes: about 77 kB per image), the frame's (w, h), and a small grey copy
    of the image (longer side THUMB_SIDE) for the photometric check.
    """

    points: np.ndarray
    descriptors: np.ndarray
    size: tuple[int, int] = (1, 1)
    thumb: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.points)


EMPTY = Features(np.zeros((0, 2), np.float32), np.zeros((0, 128), np.uint8))


def _cv2():
    from .extras import require

    return require("verify", "cv2")


def available() -> bool:
    """Whether OpenCV (the ``verify`` extra) can be imported, i.e. whether pairs can be verified."""
    from .extras import MissingExtraError

    try:
        _cv2()
    except MissingExtraError:
        return False
    return True


MODES = ("auto", "on", "off")


@dataclass(frozen=True)
class Plan:
    """Whether ``dupes`` verifies pairs, and when a default could not, the one-line note saying why.

    ``mode``: what was asked (``"auto"``, ``"on"``, ``"off"``); ``on``: whether pairs are verified.
    """

    mode: str
    on: bool
    note: str | None = None


def mode_of(verify) -> str:
    """``True``/``False``/``None`` or ``"auto"``/``"on"``/``"off"`` -> one of :data:`MODES` (None: auto)."""
    if verify is None or verify == "auto":
        return "auto"
    if verify is True or verify == "on":
        return "on"
    if verify is False or verify == "off":
        return "off"
    raise ValueError(f"verify must be True, False or 'auto', got {verify!r}")


def plan(verify, n_images: int, *, against: bool = False, max_images: int | None = None) -> Plan:
    """Resolve ``dupes``' ``verify`` setting for a collection of ``n_images`` images.

    ``"auto"`` (the default) verifies when OpenCV is installed, the collection has at most
    ``max_images`` images (default :data:`AUTO_MAX_IMAGES`) and there is no ``against`` collection;
    otherwise it does not, with a note
    (no note for ``against``: verification checks pairs inside one collection). ``True`` always
    verifies (:class:`~lookalike.extras.MissingExtraError` without OpenCV; ValueError with
    ``against``); ``False`` never does.
    """
    mode = mode_of(verify)
    max_images = AUTO_MAX_IMAGES if max_images is None else max_images
    if mode == "off":
        return Plan(mode, False)
    if against:
        if mode == "on":
            raise ValueError("verification checks pairs inside one collection; it does not go with against")
        return Plan(mode, False)
    if mode == "on":
        _cv2()  # a missing OpenCV is an error when asked for
        return Plan(mode, True)
    if not available():
        from .extras import install_command

        return Plan(mode, False, "hard copies (turns, watermarks, thumbnails, deep crops) were not verified: that "
                                 f"needs OpenCV; {install_command('verify')}")
    if n_images > max_images:
        return Plan(mode, False, f"hard copies (turns, watermarks, thumbnails, deep crops) were not verified: "
                                 f"{n_images:,} images is above the {max_images:,} verified by default; "
                                 "--verify checks them anyway (about 2-3 s per 100 images)")
    return Plan(mode, True)


_SIFT = threading.local()  # one detector per thread (verify_pairs' pool) and keypoint count


def _sift(n_features: int):
    cv2 = _cv2()
    made = _SIFT.__dict__.setdefault("made", {})
    key = (os.getpid(), n_features)
    if key not in made:
        made[key] = cv2.SIFT_create(nfeatures=n_features)
    return made[key]


def grey_image(image, long_side: int = LONG_SIDE) -> np.ndarray | None:
    """The grey image :func:`features` works on: longer side ``long_side`` (None when a side is under 8 px).

    :func:`features` of the result with the same ``long_side`` equals :func:`features` of ``image``
    (the resize to the size it already has is a copy).
    """
    cv2 = _cv2()
    if hasattr(image, "convert"):
        grey = np.asarray(image.convert("L"))
    else:
        a = np.asarray(image)
        grey = a if a.ndim == 2 else cv2.cvtColor(np.ascontiguousarray(a[..., :3]), cv2.COLOR_RGB2GRAY)
    h, w = grey.shape[:2]
    if min(h, w) < 8:
        return None
    s = long_side / max(h, w)
    size = (max(1, round(w * s)), max(1, round(h * s)))
    return cv2.resize(np.ascontiguousarray(grey), size, interpolation=cv2.INTER_AREA if s < 1 else cv2.INTER_CUBIC)


def features(image, *, long_side: int = LONG_SIDE, n_features: int = N_FEATURES) -> Features:
    """SIFT keypoints of a PIL image (any mode) or an (h, w[, 3]) uint8 array, resized to ``long_side``."""
    cv2 = _cv2()
    grey = grey_image(image, long_side)
    if grey is None:
        return EMPTY
    size = (grey.shape[1], grey.shape[0])
    kps, desc = _sift(n_features).detectAndCompute(grey, None)
    if desc is None or not len(kps):
        return EMPTY
    t = THUMB_SIDE / long_side
    thumb = cv2.resize(grey, (max(1, round(size[0] * t)), max(1, round(size[1] * t))), interpolation=cv2.INTER_AREA)
    desc = np.clip(np.rint(desc), 0, 255).astype(np.uint8)  # OpenCV's SIFT values are integers in 0..255
    return Features(np.array([k.pt for k in kps], np.float32), desc, size, thumb)


def screen_features(image, *, long_side: int = LONG_SIDE) -> Features:
    """The cheap features of the screening step (:data:`SCREEN_LONG_SIDE`, :data:`SCREEN_FEATURES`).

    Made from :func:`grey_image` at ``long_side``, as :func:`verify_pairs` makes them.
    """
    grey = grey_image(image, long_side)
    return EMPTY if grey is None else features(grey, long_side=SCREEN_LONG_SIDE, n_features=SCREEN_FEATURES)


def match(a: Features, b: Features, *, ratio: float = RATIO, ransac_px: float = RANSAC_PX,
          max_anisotropy: float = MAX_ANISOTROPY) -> int:
    """Inliers of the best affine map from ``a``'s keypoints to ``b``'s (0 when none is plausible)."""
    fit = _fit(a, b, ratio, ransac_px, max_anisotropy)
    return 0 if fit is None else int(fit[1].sum())


@dataclass(frozen=True)
class Match:
    """What :func:`match_details` found: inliers, the share of an image they span, the aligned correlation."""

    inliers: int = 0
    coverage: float = 0.0
    correlation: float = -1.0
    transform: np.ndarray | None = None  # the 2 x 3 affine map, LONG_SIDE frame of a -> of b

    def ok(self, min_inliers: int = MIN_INLIERS, min_coverage: float = MIN_COVERAGE,
           min_correlation: float = MIN_CORRELATION) -> bool:
        """The pair passes all three checks."""
        return self.inliers >= min_inliers and self.coverage >= min_coverage and self.correlation >= min_correlation


NO_MATCH = Match()


def _pearson(x: np.ndarray, y: np.ndarray) -> float | None:
    x, y = x - x.mean(), y - y.mean()
    d = float(np.sqrt((x * x).sum() * (y * y).sum()))
    return float((x * y).sum() / d) if d > 1e-6 else None


def _correlation(a: Features, b: Features, M: np.ndarray, quantile: float | None = None) -> float:
    """How alike ``a``'s thumbnail warped by ``M`` (LONG_SIDE frames) and ``b``'s are where they overlap.

    The median of the Pearson correlations of a TILES x TILES grid over the overlap (tiles with
    texture in both images), so an opaque caption band or a logo over part of a copy does not sink it
    (``quantile``, 0-100: that percentile instead of the median); the whole overlap's correlation
    when fewer than 4 tiles have texture. -1 when they hardly overlap.
    """
    cv2 = _cv2()
    if a.thumb is None or b.thumb is None:
        return -1.0
    sa, sb = a.thumb.shape[1] / a.size[0], b.thumb.shape[1] / b.size[0]
    A = M[:, :2] * (sb / sa)
    # pixel centres: thumbnail u = (x + 0.5) s - 0.5 on both sides
    t = A @ np.full(2, 0.5) - sb * (M[:, :2] @ np.full(2, 0.5)) + sb * M[:, 2] + 0.5 * sb - 0.5
    Mt = np.hstack([A, t[:, None]]).astype(np.float64)
    h, w = b.thumb.shape
    warped = cv2.warpAffine(cv2.GaussianBlur(a.thumb.astype(np.float32), (3, 3), 0), Mt, (w, h),
                            flags=cv2.INTER_LINEAR)
    inside = cv2.warpAffine(np.ones(a.thumb.shape, np.float32), Mt, (w, h), flags=cv2.INTER_LINEAR) > 0.999
    if inside.sum() < 64:
        return -1.0
    ref = cv2.GaussianBlur(b.thumb.astype(np.float32), (3, 3), 0)
    ys, xs = np.nonzero(inside)
    y_edges = np.linspace(ys.min(), ys.max() + 1, TILES + 1).astype(int)
    x_edges = np.linspace(xs.min(), xs.max() + 1, TILES + 1).astype(int)
    tiles = []
    for y0, y1 in zip(y_edges[:-1], y_edges[1:]):
        for x0, x1 in zip(x_edges[:-1], x_edges[1:]):
            m = inside[y0:y1, x0:x1]
            if m.sum() < 16:
                continue
            p, q = warped[y0:y1, x0:x1][m], ref[y0:y1, x0:x1][m]
            if p.std() < TILE_STD or q.std() < TILE_STD:
                continue
            r = _pearson(p, q)
            if r is not None:
                tiles.append(r)
    if len(tiles) >= 4:
        return float(np.median(tiles) if quantile is None else np.percentile(tiles, quantile))
    r = _pearson(warped[inside], ref[inside])
    return -1.0 if r is None else r


def _coverage(points: np.ndarray, size) -> float:
    cv2 = _cv2()
    if len(points) < 3:
        return 0.0
    return float(cv2.contourArea(cv2.convexHull(points.astype(np.float32)))) / max(size[0] * size[1], 1)


def match_details(a: Features, b: Features, *, ratio: float = RATIO, ransac_px: float = RANSAC_PX,
                  max_anisotropy: float = MAX_ANISOTROPY) -> Match:
    """:func:`match`'s inliers, how much of an image they span, and how alike the aligned pixels are.

    ``coverage`` is the larger share of either image that the inliers' convex hull covers (a copy's
    inliers span the shared picture; a same-pose face in two photos, one region). ``correlation``
    compares the grey thumbnails after aligning ``a`` onto ``b`` by the fitted map.
    """
    fit = _fit(a, b, ratio, ransac_px, max_anisotropy)
    if fit is None:
        return NO_MATCH
    M, keep, src, dst = fit
    return Match(int(keep.sum()), max(_coverage(src[keep], a.size), _coverage(dst[keep], b.size)),
                 _correlation(a, b, M), M)


def _fit(a: Features, b: Features, ratio: float, ransac_px: float, max_anisotropy: float):
    """Ratio-test matches and the RANSAC affine map: (map, inlier mask, matched points of a, of b), or None."""
    cv2 = _cv2()
    if len(a) < 3 or len(b) < 3:
        return None
    pairs = cv2.BFMatcher(cv2.NORM_L2).knnMatch(a.descriptors.astype(np.float32), b.descriptors.astype(np.float32),
                                                k=2)
    best = {}
    for m in pairs:
        if len(m) == 2 and m[0].distance < ratio * m[1].distance:
            q, t, d = m[0].queryIdx, m[0].trainIdx, m[0].distance
            if t not in best or d < best[t][1]:
                best[t] = (q, d)  # one-to-one: each keypoint of b keeps its closest match
    if len(best) < 3:
        return None
    src = a.points[[q for q, _ in best.values()]]
    dst = b.points[list(best)]
    M, mask = cv2.estimateAffine2D(src, dst, method=cv2.RANSAC, ransacReprojThreshold=ransac_px, maxIters=2000,
                                   confidence=0.995, refineIters=0)
    if M is None or mask is None or not np.isfinite(M).all():
        return None
    sv = np.linalg.svd(M[:, :2], compute_uv=False)
    if np.linalg.det(M[:, :2]) <= 0 or sv[1] <= 1e-6 or sv[0] / sv[1] > max_anisotropy:
        return None  # a mirror, a collapse to a line or an extreme squash: not an edit of the photo
    return M, mask.ravel().astype(bool), src, dst


def _load(path, long_side: int = LONG_SIDE, n_features: int = N_FEATURES) -> Features | None:
    return _from_grey(_grey_of(path, long_side), long_side, n_features)


def _grey_of(path, long_side: int = LONG_SIDE):
    """The file's :func:`grey_image` (an empty array when a side is under 8 px), None when it cannot be read."""
    from . import images

    try:  # a large JPEG is decoded at a reduced scale that stays above long_side (much faster, same frame)
        grey = grey_image(images.decode(path, draft_size=long_side).image, long_side)
    except Exception:  # noqa: BLE001 - an unreadable file is "not verified", never an error
        return None
    return np.zeros((0, 0), np.uint8) if grey is None else grey


def _from_grey(grey, long_side: int, n_features: int) -> Features | None:
    if grey is None:
        return None
    return EMPTY if not grey.size else features(grey, long_side=long_side, n_features=n_features)


def _workers(workers: int | None) -> int:
    return max(1, min(MAX_WORKERS, os.cpu_count() or 1) if workers is None else int(workers))


def verify_pairs(paths_a: Sequence, paths_b: Sequence, *, min_inliers: int = MIN_INLIERS,
                 min_coverage: float = MIN_COVERAGE, min_correlation: float = MIN_CORRELATION,
                 ratio: float = RATIO, cache_size: int = CACHE_IMAGES, workers: int | None = None,
                 progress=None, long_side: int = LONG_SIDE, n_features: int = N_FEATURES,
                 screen: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Check candidate pairs ``(paths_a[i], paths_b[i])`` geometrically.

    Parameters
    ----------
    paths_a, paths_b : sequences of paths (or bytes) of equal length
        The pairs; an image in several pairs is decoded once.
    min_inliers : int, default MIN_INLIERS
        Matches that must agree with one affine map.
    min_coverage : float, default MIN_COVERAGE
        Share of one of the two images the inliers' convex hull must cover.
    min_correlation : float, default MIN_CORRELATION
        Correlation of the two grey images, aligned by the fitted map, where they overlap.
    ratio : float, default RATIO
        Lowe's ratio test.
    cache_size : int, default CACHE_IMAGES
        Images whose features are kept in memory (least recently used dropped; ~80 kB each). Pairs
        are checked grouped by their first image, so each image is usually decoded once or twice.
        Features are computed only for the images of the pairs.
    workers : int, optional
        Threads that compute features and match pairs (default: one per core, at most
        :data:`MAX_WORKERS`; OpenCV's own threads are set to 1 meanwhile). The results do not
        depend on it.
    progress : callable, optional
        Called with the fraction of pairs checked (0..1) after each chunk of :data:`CHUNK_PAIRS`.
    long_side, n_features : int
        The feature setting (:func:`features`); the rule's defaults were chosen for the defaults.
    screen : bool, default True
        Match cheap features first (:func:`screen_features`) and check with the full ones only the
        pairs with at least :data:`SCREEN_MIN_INLIERS` inliers there (the others are not verified,
        inliers 0): each image is decoded once per chunk, and most full features are never computed.

    Returns
    -------
    ok : ndarray of bool, shape (n,)
        The pair shows the same photo (all three checks pass). A file that cannot be read or
        decoded is never verified.
    inliers : ndarray of int, shape (n,)
        The inlier count (0 for an unreadable file, or a pair the screening dropped).
    """
    if len(paths_a) != len(paths_b):
        raise ValueError(f"paths_a and paths_b differ in length ({len(paths_a)} vs {len(paths_b)})")
    cv2 = _cv2()  # a missing OpenCV is an ImportError, not "nothing verified"
    n = len(paths_a)
    ok = np.zeros(n, bool)
    inliers = np.zeros(n, np.int64)
    if not n:
        return ok, inliers
    cache: OrderedDict = OrderedDict()
    screened: OrderedDict = OrderedDict()  # the cheap features, by the same rule

    def key(p):
        return p if isinstance(p, bytes) else os.fspath(p)

    def check(i, fa, fb):
        if fa is not None and fb is not None:
            m = match_details(fa, fb, ratio=ratio)
            inliers[i], ok[i] = m.inliers, m.ok(min_inliers, min_coverage, min_correlation)

    order = sorted(range(n), key=lambda i: (str(key(paths_a[i])), str(key(paths_b[i]))))
    n_workers = _workers(workers)
    pool = None
    threads = cv2.getNumThreads()
    if n_workers > 1:
        from concurrent.futures import ThreadPoolExecutor

        pool = ThreadPoolExecutor(n_workers, thread_name_prefix="lookalike-verify")
        cv2.setNumThreads(1)  # parallel over images and pairs, not inside each call
    run = map if pool is None else pool.map
    try:
        for c0 in range(0, n, CHUNK_PAIRS):
            chunk = order[c0 : c0 + CHUNK_PAIRS]
            source = {key(p): p for i in chunk for p in (paths_a[i], paths_b[i])}
            greys = {}
            if screen:  # cheap features of every image, from its grey image (kept for this chunk)
                todo = [k for k in source if k not in screened]
                greys = dict(zip(todo, run(lambda k, src=source: _grey_of(src[k], long_side), todo)))
                cheap = {k: screened[k] for k in source if k in screened}
                cheap.update(zip(todo, run(lambda k, g=greys: _from_grey(g[k], SCREEN_LONG_SIDE, SCREEN_FEATURES),
                                           todo)))
                passed = list(run(lambda i, f=cheap: _passes(f[key(paths_a[i])], f[key(paths_b[i])], ratio), chunk))
                _remember(screened, cheap, cache_size)
                chunk = [i for i, good in zip(chunk, passed) if good]
            need = {key(p): p for i in chunk for p in (paths_a[i], paths_b[i])}
            todo = [k for k in need if k not in cache]
            feats = {k: cache[k] for k in need if k in cache}
            feats.update(zip(todo, run(lambda k, g=greys, src=need: _from_grey(g[k], long_side, n_features) if k in g
                                       else _load(src[k], long_side, n_features), todo)))
            list(run(lambda i, f=feats: check(i, f[key(paths_a[i])], f[key(paths_b[i])]), chunk))
            _remember(cache, feats, cache_size)
            if progress is not None:
                progress(min(n, c0 + CHUNK_PAIRS) / n)
    finally:
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)
            cv2.setNumThreads(threads)
    return ok, inliers


def _passes(a: Features | None, b: Features | None, ratio: float) -> bool:
    """The screening: enough inliers between two images' cheap features to check them fully."""
    return a is not None and b is not None and match(a, b, ratio=ratio) >= SCREEN_MIN_INLIERS


def _remember(cache: OrderedDict, feats: dict, size: int) -> None:
    """Put ``feats`` in the LRU ``cache`` as the most recent; drop the least recently used beyond ``size``."""
    for k, f in feats.items():
        cache[k] = f
        cache.move_to_end(k)
    while len(cache) > max(0, size):
        cache.popitem(last=False)
