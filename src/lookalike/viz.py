"""Pictures of results: a query beside its hits, duplicate groups, a map. Computes no similarity.

Every image is captioned with its short name (:func:`lookalike.names.short_names`: the
shortest unique ``folder/name``), since many folders hold an ``image_0001.jpg``.
"""

from __future__ import annotations

import colorsys
import os
from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple

from PIL import Image, ImageDraw, ImageFont

from . import images
from .names import short_names

THUMB = 200  # result grid thumbnail side in pixels
SHEET_THUMB = 256  # duplicate sheet thumbnail side: large enough to tell a mirror or a crop
_PAD = 8
_CAPTION = 34  # caption band height: two text lines
_INK = (20, 20, 20)  # text colour
_KEEP = (30, 150, 60)  # the keeper's frame and badge
_QUERY = (30, 100, 220)  # the query's frame
# A map legend lists the labels only up to this many; above it the labels stand at their
# cluster centres alone (a list of 100 swatches is not readable at a glance).
LEGEND_MAX = 24


class Tile(NamedTuple):
    """One captioned thumbnail: ``badge`` is drawn on the image, ``frame`` outlines it."""

    source: object  # path or image bytes
    line1: str
    line2: str
    badge: str | None = None
    frame: tuple[int, int, int] | None = None


def _font(size: int = 13):
    for name in ("DejaVuSans.ttf", "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf"):
        try:
            return ImageFont.truetype(name, size)
        except OSError:
            continue
    return ImageFont.load_default(size)


def thumbnail(source, side: int = THUMB) -> Image.Image:
    """A square ``side`` thumbnail (letterboxed on grey); a grey tile with an X if undecodable."""
    tile = Image.new("RGB", (side, side), (235, 235, 235))
    try:
        img = images.decode(source, draft_size=side).image
    except images.DecodeError:
        d = ImageDraw.Draw(tile)
        d.line((0, 0, side, side), fill=(200, 80, 80), width=3)
        d.line((0, side, side, 0), fill=(200, 80, 80), width=3)
        return tile
    img.thumbnail((side, side), Image.BICUBIC)
    tile.paste(img, ((side - img.width) // 2, (side - img.height) // 2))
    return tile


def _shorten(text: str, font, width: int) -> str:
    """``text`` cut from the left (``…``) to fit ``width`` pixels: a name's end is its most telling part."""
    if font.getlength(text) <= width:
        return text
    while text and font.getlength("…" + text) > width:
        text = text[1:]
    return "…" + text


def _shorten_name(name: str, font, width: int) -> str:
    """A short name cut to ``width``: its middle folders go first (``edited/…/image_0001.jpg``).

    The first component of a short name is the one that tells it apart, the last is the file.
    """
    parts = name.split("/")
    if font.getlength(name) <= width or len(parts) < 3:
        return _shorten(name, font, width)
    for keep in range(len(parts) - 2, 0, -1):  # keep as many of the folders next to the file as fit
        text = "/".join([parts[0], "…"] + parts[len(parts) - keep :])
        if font.getlength(text) <= width:
            return text
    return _shorten("/".join([parts[0], "…", parts[-1]]), font, width)


def draw_caption(draw: ImageDraw.ImageDraw, x: int, y: int, line1: str, line2: str, width: int) -> None:
    """Draw a tile's two caption lines with their top-left corner at ``(x, y)``, cut to ``width``."""
    font = _font()
    draw.text((x, y + 2), _shorten(line1, font, width), fill=_INK, font=font)
    draw.text((x, y + 17), _shorten_name(line2, font, width), fill=(90, 90, 90), font=font)


def cell_origin(i: int, columns: int, side: int) -> tuple[int, int]:
    """Top-left corner of tile ``i``'s thumbnail in :func:`tile_grid`; its caption starts ``side`` below."""
    return _PAD + (i % columns) * (side + _PAD), _PAD + (i // columns) * (side + _CAPTION + _PAD)


def _badge(draw: ImageDraw.ImageDraw, x: int, y: int, text: str, colour, side: int) -> None:
    font = _font(max(14, side // 12))
    left, top, right, bottom = draw.textbbox((x + 8, y + 6), text, font=font)
    draw.rectangle((x, y, right + 8, bottom + 6), fill=colour)
    draw.text((x + 8, y + 6), text, fill="white", font=font)


def tile_grid(tiles: Sequence[Tile], *, side: int = THUMB, columns: int | None = None) -> Image.Image:
    """Lay out captioned tiles in a grid of ``columns`` (all in one row by default)."""
    columns = max(1, min(columns or len(tiles), len(tiles)))
    rows = max(1, -(-len(tiles) // columns))
    sheet = Image.new("RGB", (columns * (side + _PAD) + _PAD, rows * (side + _CAPTION + _PAD) + _PAD), "white")
    draw = ImageDraw.Draw(sheet)
    for i, t in enumerate(tiles):
        x, y = cell_origin(i, columns, side)
        sheet.paste(thumbnail(t.source, side), (x, y))
        if t.frame is not None:
            draw.rectangle((x, y, x + side - 1, y + side - 1), outline=t.frame, width=max(3, side // 50))
        if t.badge:
            _badge(draw, x, y, t.badge, t.frame or (40, 40, 40), side)
        draw_caption(draw, x, y + side, t.line1, t.line2, side)
    return sheet


def _save(picture: Image.Image, out: str | os.PathLike) -> Path:
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    picture.save(out)
    return out


def grid_tiles(query, hits: Sequence) -> list[Tile]:
    """The tiles of :func:`result_grid`: the query, then each hit with rank, score and short name."""
    is_path = isinstance(query, (str, os.PathLike))
    names = short_names(([os.fspath(query)] if is_path else []) + [h.path for h in hits])
    qname = names.pop(0) if is_path else "uploaded image"
    tiles = [Tile(query, "QUERY", qname, frame=_QUERY)]
    return tiles + [Tile(h.path, f"#{h.rank}  score {h.score:.3f}", name) for h, name in zip(hits, names)]


def result_grid(query, hits: Sequence, out: str | os.PathLike, *, columns: int = 6, side: int = THUMB) -> Path:
    """Write a PNG: the query (outlined in blue) then each hit with rank, score and short name.

    Parameters
    ----------
    query : path or bytes
        The query image.
    hits : sequence of lookalike.search.Hit
    out : path
        Where to write the PNG.
    columns : int, default 6
        Tiles per row.
    side : int, default THUMB
        Thumbnail side in pixels.

    Returns
    -------
    Path
        ``out``.
    """
    return _save(tile_grid(grid_tiles(query, hits), side=side, columns=columns), out)


def group_tiles(group, names: dict[str, str] | None = None, *, max_members: int | None = None) -> list[Tile]:
    """The tiles of one duplicate group: the keeper first (green ``KEEP``), then each member with its score.

    A member's score is its similarity to the keeper; a member linked to the keeper only through
    others shows the group's weakest link instead (``≥`` that, through the chain).
    """
    names = names or dict(zip(group.paths, short_names(group.paths)))
    to_keeper = {(y if x == group.keeper else x): s for x, y, s in group.pairs if group.keeper in (x, y)}
    order = [group.keeper] + [i for i in group.ids if i != group.keeper]
    tiles = []
    for i in order[:max_members]:
        path = group.paths[group.ids.index(i)]
        if i == group.keeper:
            tiles.append(Tile(path, "keep (suggested)", names[path], badge="KEEP", frame=_KEEP))
        elif i in to_keeper:
            tiles.append(Tile(path, f"{to_keeper[i]:.3f} to keeper", names[path], badge=f"{to_keeper[i]:.3f}"))
        else:
            weakest = f"{group.min_score:.3f}"
            tiles.append(Tile(path, f"via others, weakest {weakest}", names[path], badge=f"≥{weakest}"))
    return tiles


def duplicate_sheet(groups: Sequence, out: str | os.PathLike, *, max_groups: int = 20, max_members: int = 12,
                    columns: int = 6, side: int = SHEET_THUMB) -> Path:
    """Write a PNG with a block of thumbnails per duplicate group, the suggested keeper first.

    The sheet is as wide as its largest group (up to ``columns`` tiles a row): two groups of
    two make a sheet about ``2 * side`` wide. Each thumbnail carries a badge: ``KEEP`` (green,
    framed) on the keeper, the similarity to the keeper on the others.

    Parameters
    ----------
    groups : sequence of lookalike.dupes.Group
    out : path
        Where to write the PNG.
    max_groups : int, default 20
        Groups drawn (the rest are counted in a last line).
    max_members : int, default 12
        Images drawn per group (the rest are counted in its header).
    columns : int, default 6
        Tiles per row before a group wraps.
    side : int, default SHEET_THUMB
        Thumbnail side in pixels.

    Returns
    -------
    Path
        ``out``.
    """
    font = _font(16)
    shown = groups[:max_groups]
    paths = [p for g in shown for p in g.paths]
    names = dict(zip(paths, short_names(paths)))
    blocks, headers = [], []
    for n, g in enumerate(shown, 1):
        blocks.append(tile_grid(group_tiles(g, names, max_members=max_members), side=side, columns=columns))
        more = f", {len(g.ids) - max_members} not shown" if len(g.ids) > max_members else ""
        headers.append(f"group {n}: {len(g.ids)} images{more}, weakest link {g.min_score:.3f}")
    hidden = len(groups) - len(shown)
    footer = f"{hidden} more groups not drawn (max_groups={max_groups})" if hidden else ""
    if not blocks:
        headers, footer = [], "No duplicate groups at this threshold."
    head_h = 28
    texts = headers + ([footer] if footer else [])
    width = max([b.width for b in blocks] + [int(font.getlength(t)) + 2 * _PAD for t in texts])
    height = sum(b.height + head_h for b in blocks) + (head_h + _PAD if footer else 0)
    sheet = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(sheet)
    y = 0
    for header, block in zip(headers, blocks):
        draw.text((_PAD, y + 8), header, fill=(30, 60, 160), font=font)
        sheet.paste(block, (0, y + head_h))
        y += block.height + head_h
    if footer:
        draw.text((_PAD, y + 8), footer, fill=(90, 90, 90), font=font)
    return _save(sheet, out)


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

    from .extras import require

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
