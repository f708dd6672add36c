"""Drawing blocks shared by the pictures: fonts, thumbnails, captions, a grid of captioned tiles."""

from __future__ import annotations

import os
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path
from typing import NamedTuple

from PIL import Image, ImageDraw, ImageFont

from .. import images

THUMB = 200  # result grid thumbnail side in pixels
SHEET_THUMB = 256  # duplicate sheet thumbnail side: large enough to tell a mirror or a crop
_PAD = 8
_CAPTION = 34  # caption band height: two text lines
_INK = (20, 20, 20)  # text colour
_KEEP = (30, 150, 60)  # the keeper's frame and badge
_QUERY = (30, 100, 220)  # the query's frame


class Tile(NamedTuple):
    """One captioned thumbnail: ``badge`` is drawn on the image, ``frame`` outlines it."""

    source: object  # path or image bytes
    line1: str
    line2: str
    badge: str | None = None
    frame: tuple[int, int, int] | None = None


@lru_cache(maxsize=16)
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
