"""A 2-D map of a collection: t-SNE positions, a thumbnail per point, labels named at their centres."""

from __future__ import annotations

import colorsys
import os
from collections.abc import Sequence
from pathlib import Path

from PIL import Image, ImageDraw

from .tiles import _INK, _PAD, _font, _save, thumbnail

# A map legend lists the labels only up to this many; above it the labels stand at their
# cluster centres alone (a list of 100 swatches is not readable at a glance).
LEGEND_MAX = 24


def _palette(k: int) -> list[tuple[int, int, int]]:
    """``k`` colours: hues a golden-ratio step apart, lightness cycling dark/mid/light."""
    out = []
    for i in range(k):
        h = (0.02 + i * 0.618034) % 1.0
        light = (0.45, 0.30, 0.62)[i % 3]
        r, g, b = colorsys.hls_to_rgb(h, light, 0.85)
        out.append((int(r * 255), int(g * 255), int(b * 255)))
    return out


def _colour_distance(a, b) -> float:
    """Perceptual-ish RGB distance ("redmean"): about 0 to 765."""
    a, b = [int(v) for v in a[:3]], [int(v) for v in b[:3]]
    rm = (a[0] + b[0]) / 2
    dr, dg, db = a[0] - b[0], a[1] - b[1], a[2] - b[2]
    return ((2 + rm / 256) * dr * dr + 4 * dg * dg + (2 + (255 - rm) / 256) * db * db) ** 0.5


def label_colours(centres: dict[str, tuple[float, float]], *, neighbours: int = 6) -> dict[str, tuple[int, int, int]]:
    """A colour per label such that labels whose centres are close get clearly different colours.

    Greedy: labels in the given order (put the biggest first) each take the unused palette
    colour farthest from the colours of their ``neighbours`` nearest already-coloured labels.
    All colours are distinct.
    """
    labels = list(centres)
    free = _palette(len(labels))
    colour: dict[str, tuple[int, int, int]] = {}
    for lab in labels:
        cx, cy = centres[lab]
        near = sorted(colour, key=lambda o: (centres[o][0] - cx) ** 2 + (centres[o][1] - cy) ** 2)[:neighbours]
        best = max(free, key=lambda c: min((_colour_distance(c, colour[o]) for o in near), default=0.0))
        colour[lab] = best
        free.remove(best)
    return colour


def _outlined(draw: ImageDraw.ImageDraw, xy, text: str, font, fill=_INK) -> None:
    draw.text(xy, text, fill=fill, font=font, stroke_width=max(2, font.size // 8), stroke_fill="white")


def _overlaps(a, b) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def draw_map(points, paths: Sequence, labels: Sequence[str], *, size: int = 2400, thumb: int | None = None,
             total: int | None = None) -> Image.Image:
    """Draw images at 2-D positions: a thumbnail per point, framed and named by label.

    A point ``(x, y)`` in ``[0, 1]²`` is drawn centred at ``m + (x, y) * (size - 2m)`` with
    ``m = thumb``. With more than one label, each thumbnail gets a frame in its label's colour
    (:func:`label_colours`: nearby clusters differ) and each label is written, outlined, at the
    median position of its points. A legend on the right lists the labels (alphabetically) with
    their counts when there are at most ``LEGEND_MAX`` and they fit the height; with more, the
    names at the cluster centres are the only key and the canvas is ``size`` square.

    Parameters
    ----------
    points : array of shape (n, 2)
        Positions in ``[0, 1]``.
    paths : sequence of n image paths (or bytes)
    labels : sequence of n str
    size : int, default 2400
        Side of the map area in pixels.
    thumb : int, optional
        Thumbnail side; by default about ``0.6 * size / sqrt(n)``, between 24 and 96.
    total : int, optional
        Size of the collection the points were sampled from (for the title).

    Returns
    -------
    PIL.Image.Image
    """
    import numpy as np

    pts = np.asarray(points, np.float64).reshape(-1, 2)
    n = len(pts)
    thumb = thumb or int(min(96, max(24, 0.6 * size / max(1.0, n**0.5))))
    margin = thumb
    centre_px = margin + pts * (size - 2 * margin)
    counts: dict[str, int] = {}
    for lab in labels:
        counts[lab] = counts.get(lab, 0) + 1
    distinct = sorted(counts, key=lambda lab: (-counts[lab], lab))
    labs = np.asarray(labels, dtype=object)
    centres = {lab: tuple(np.median(centre_px[labs == lab], axis=0)) for lab in distinct}
    coloured = len(distinct) > 1
    colour = label_colours(centres) if coloured else {}

    font = _font(max(16, size // 64))
    row_h = int(font.size * 1.4)
    title = f"{n} of {total or n} images, {len(distinct)} labels"
    legend = coloured and len(distinct) <= min(LEGEND_MAX, (size - 3 * row_h) // row_h)
    legend_w = 0
    if legend:
        listed = sorted(distinct, key=str.casefold)  # alphabetical: a name is found at a glance
        entries = [f"{lab} ({counts[lab]})" for lab in listed]
        legend_w = int(max(font.getlength(e) for e in entries + [title]) + row_h + 3 * _PAD)
    sheet = Image.new("RGB", (size + legend_w, size), "white")
    draw = ImageDraw.Draw(sheet)
    frame = max(2, thumb // 12)
    for (cx, cy), src, lab in zip(centre_px, paths, labels):
        x, y = int(cx - thumb / 2), int(cy - thumb / 2)
        if coloured:
            draw.rectangle((x - frame, y - frame, x + thumb + frame - 1, y + thumb + frame - 1), fill=colour[lab])
        sheet.paste(thumbnail(src, thumb), (x, y))
    if coloured:  # names at the cluster centres, biggest first, nudged apart where they would overlap
        placed: list[tuple[int, int, int, int]] = []
        swatch = int(font.size * 0.8)
        for lab in distinct:
            w = int(font.getlength(lab)) + swatch + _PAD
            cx, cy = centres[lab]
            x0 = int(min(max(0, cx - w / 2), size - w))  # inside the map area
            for dy in (0, -1, 1, -2, 2, -3, 3, 0):  # the last: no free place, keep the centre
                y0 = int(min(max(0, cy - row_h / 2 + dy * row_h), size - row_h))
                box = (x0, y0, x0 + w, y0 + row_h)
                if not any(_overlaps(box, b) for b in placed):
                    break
            placed.append(box)
            sy = y0 + (row_h - swatch) // 2
            draw.rectangle((x0, sy, x0 + swatch, sy + swatch), fill=colour[lab], outline="white", width=2)
            _outlined(draw, (x0 + swatch + _PAD, y0 + (row_h - font.size) // 2), lab, font)
    if legend:
        lx = size + _PAD
        draw.text((lx, _PAD), title, fill=_INK, font=font)
        for j, (lab, entry) in enumerate(zip(listed, entries)):
            y = _PAD + (j + 2) * row_h
            draw.rectangle((lx, y, lx + font.size, y + font.size), fill=colour[lab])
            draw.text((lx + row_h, y), entry, fill=_INK, font=font)
    else:
        _outlined(draw, (_PAD, _PAD), title + (", named at their centres" if coloured else ""), font)
    return sheet


def map_layout(embeddings, *, max_points: int = 1500, seed: int = 0):
    """2-D positions for a seeded sample of the rows: PCA to 50-d, then t-SNE, scaled to ``[0, 1]``.

    Returns
    -------
    pick : array of shape (m,)
        The sampled row numbers, sorted (``m = min(max_points, n)``).
    points : array of shape (m, 2)
    """
    import numpy as np

    from ..extras import require

    PCA = require("map", "sklearn.decomposition").PCA
    TSNE = require("map", "sklearn.manifold").TSNE

    n = len(embeddings)
    rng = np.random.default_rng(seed)
    pick = np.sort(rng.choice(n, size=min(max_points, n), replace=False))
    if len(pick) < 3:
        raise ValueError(f"A map needs at least 3 images; the collection has {n}.")
    X = np.asarray(embeddings[pick], np.float32)
    Z = PCA(n_components=min(50, X.shape[1], len(pick) - 1), random_state=seed).fit_transform(X)
    Y = TSNE(n_components=2, perplexity=min(30, max(2, (len(pick) - 1) // 3)), init="pca",
             random_state=seed).fit_transform(Z)
    return pick, (Y - Y.min(0)) / np.maximum(Y.max(0) - Y.min(0), 1e-9)


def embedding_map(embeddings, paths: Sequence[str], labels: Sequence[str], out: str | os.PathLike, *,
                  max_points: int = 1500, size: int = 2400, thumb: int | None = None, seed: int = 0) -> Path:
    """Write a 2-D map of the collection (:func:`map_layout`, drawn by :func:`draw_map`).

    Clusters are named at their centres; the legend is drawn for at most ``LEGEND_MAX``
    labels. The layout is approximate (t-SNE keeps neighbourhoods, not distances).
    """
    pick, points = map_layout(embeddings, max_points=max_points, seed=seed)
    picture = draw_map(points, [paths[i] for i in pick], [labels[i] for i in pick], size=size, thumb=thumb,
                       total=len(paths))
    return _save(picture, out)
