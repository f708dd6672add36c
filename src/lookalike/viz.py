"""Pictures of results: a query beside its hits, with scores. Computes no similarity."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

from . import images

THUMB = 200  # thumbnail side in pixels
_PAD = 8
_CAPTION = 34  # caption band height: two text lines


def _font(size: int = 13):
    for name in ("DejaVuSans.ttf", "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf"):
        try:
            return ImageFont.truetype(name, size)
        except OSError:
            continue
    return ImageFont.load_default()


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
    if font.getlength(text) <= width:
        return text
    while text and font.getlength("…" + text) > width:
        text = text[1:]
    return "…" + text


def tile_row(items: Sequence[tuple[object, str, str]], *, side: int = THUMB, columns: int | None = None,
             highlight_first: bool = False) -> Image.Image:
    """Lay out ``(image_source, line1, line2)`` items as captioned tiles in a grid."""
    font = _font()
    columns = columns or len(items) or 1
    rows = max(1, -(-len(items) // columns))
    cell_w, cell_h = side + _PAD, side + _CAPTION + _PAD
    sheet = Image.new("RGB", (columns * cell_w + _PAD, rows * cell_h + _PAD), "white")
    draw = ImageDraw.Draw(sheet)
    for i, (src, line1, line2) in enumerate(items):
        x, y = _PAD + (i % columns) * cell_w, _PAD + (i // columns) * cell_h
        sheet.paste(thumbnail(src, side), (x, y))
        if highlight_first and i == 0:
            draw.rectangle((x - 3, y - 3, x + side + 2, y + side + 2), outline=(30, 100, 220), width=3)
        draw.text((x, y + side + 2), _shorten(line1, font, side), fill=(20, 20, 20), font=font)
        draw.text((x, y + side + 17), _shorten(line2, font, side), fill=(90, 90, 90), font=font)
    return sheet


def result_grid(query, hits: Sequence, out: str | os.PathLike, *, columns: int = 6, side: int = THUMB) -> Path:
    """Write a PNG: the query (outlined in blue) then each hit with rank, score and file name.

    Parameters
    ----------
    query : path or bytes
        The query image.
    hits : sequence of lookalike.search.Hit
    out : path
        Where to write the PNG.
    """
    qname = Path(query).name if isinstance(query, (str, os.PathLike)) else "uploaded image"
    items = [(query, "QUERY", qname)]
    items += [(h.path, f"#{h.rank}  score {h.score:.3f}", Path(h.path).name) for h in hits]
    sheet = tile_row(items, side=side, columns=min(columns, len(items)), highlight_first=True)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(out)
    return out


def duplicate_sheet(groups: Sequence, out: str | os.PathLike, *, max_groups: int = 20, max_members: int = 8,
                    side: int = 160) -> Path:
    """Write a PNG with one row of thumbnails per duplicate group; the keeper comes first, outlined.

    Each tile shows ``KEEP`` or the member's similarity to the keeper, and the file name.
    """
    font = _font()
    rows = []
    for g in groups[:max_groups]:
        score_to_keeper = {(y if x == g.keeper else x): s for x, y, s in g.pairs if g.keeper in (x, y)}
        order = [g.keeper] + [i for i in g.ids if i != g.keeper]
        items = []
        for i in order[:max_members]:
            path = g.paths[g.ids.index(i)]
            label = "KEEP" if i == g.keeper else (f"{score_to_keeper[i]:.3f} to keeper" if i in score_to_keeper
                                                  else "linked via others")
            items.append((path, label, Path(path).name))
        rows.append(tile_row(items, side=side, columns=max_members, highlight_first=True))
    if not rows:
        sheet = Image.new("RGB", (600, 80), "white")
        ImageDraw.Draw(sheet).text((20, 30), "No duplicate groups at this threshold.", fill=(20, 20, 20), font=font)
    else:
        header = 24
        sheet = Image.new("RGB", (max(r.width for r in rows), sum(r.height + header for r in rows)), "white")
        draw = ImageDraw.Draw(sheet)
        y = 0
        for n, (g, r) in enumerate(zip(groups, rows), 1):
            draw.text((8, y + 4), f"group {n}: {len(g.ids)} images, weakest link {g.min_score:.3f}",
                      fill=(30, 60, 160), font=font)
            sheet.paste(r, (0, y + header))
            y += r.height + header
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(out)
    return out


def embedding_map(embeddings, paths: Sequence[str], labels: Sequence[str], out: str | os.PathLike, *,
                  max_points: int = 1500, size: int = 2400, thumb: int = 40, seed: int = 0) -> Path:
    """Write a 2-D map of the collection: PCA to 50-d, then t-SNE, with a thumbnail at each point.

    Thumbnails get a coloured frame per label (when there is more than one label) and a legend
    lists the most common labels. At most ``max_points`` images are drawn (a seeded sample).
    """
    import numpy as np

    from .extras import require

    PCA = require("map", "sklearn.decomposition").PCA
    TSNE = require("map", "sklearn.manifold").TSNE

    n = len(paths)
    rng = np.random.default_rng(seed)
    pick = np.sort(rng.choice(n, size=min(max_points, n), replace=False))
    X = np.asarray(embeddings[pick] if hasattr(embeddings, "__getitem__") else embeddings, np.float32)
    if len(pick) < 3:
        raise ValueError(f"A map needs at least 3 images; the collection has {n}.")
    Z = PCA(n_components=min(50, X.shape[1], len(pick) - 1), random_state=seed).fit_transform(X)
    Y = TSNE(n_components=2, perplexity=min(30, max(2, (len(pick) - 1) // 3)), init="pca",
             random_state=seed).fit_transform(Z)
    Y = (Y - Y.min(0)) / np.maximum(Y.max(0) - Y.min(0), 1e-9)
    labs = [labels[i] for i in pick]
    distinct = sorted(set(labs), key=lambda lab: -labs.count(lab))
    coloured = len(distinct) > 1
    palette = [(230, 25, 75), (60, 180, 75), (0, 130, 200), (245, 130, 48), (145, 30, 180), (70, 240, 240),
               (240, 50, 230), (210, 245, 60), (250, 190, 212), (0, 128, 128), (170, 110, 40), (128, 0, 0),
               (128, 128, 0), (0, 0, 128), (128, 128, 128), (255, 215, 0)]
    colour = {lab: palette[i % len(palette)] for i, lab in enumerate(distinct)}
    legend_w = 260 if coloured else 0
    sheet = Image.new("RGB", (size + legend_w, size), "white")
    draw = ImageDraw.Draw(sheet)
    margin = thumb
    for (x, y), i, lab in zip(Y, pick, labs):
        px, py = int(margin + x * (size - 2 * margin)), int(margin + y * (size - 2 * margin))
        tile = thumbnail(paths[i], thumb)
        if coloured:
            draw.rectangle((px - 3, py - 3, px + thumb + 2, py + thumb + 2), fill=colour[lab])
        sheet.paste(tile, (px, py))
    if coloured:
        font = _font(16)
        draw.text((size + 10, 10), f"{len(pick)} of {n} images", fill=(20, 20, 20), font=font)
        for j, lab in enumerate(distinct[:40]):
            y = 40 + j * 24
            draw.rectangle((size + 10, y, size + 28, y + 18), fill=colour[lab])
            draw.text((size + 36, y), f"{lab} ({labs.count(lab)})"[:28], fill=(20, 20, 20), font=font)
        if len(distinct) > 40:
            draw.text((size + 10, 40 + 40 * 24), f"... {len(distinct) - 40} more labels", fill=(90, 90, 90), font=font)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(out)
    return out
