"""Result grids (a query beside its hits) and duplicate sheets (a block per group, keeper first)."""

from __future__ import annotations

import heapq
import os
from collections.abc import Sequence
from pathlib import Path

from PIL import Image, ImageDraw

from ..names import short_names
from .tiles import _KEEP, _PAD, _QUERY, SHEET_THUMB, THUMB, Tile, _font, _save, tile_grid


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


def _chain_to_keeper(group) -> dict[int, float]:
    """For each member, the best chain of pairs to the keeper, scored by its weakest step (widest path)."""
    links: dict[int, list[tuple[int, float]]] = {}
    for a, b, s in group.pairs:
        links.setdefault(a, []).append((b, s))
        links.setdefault(b, []).append((a, s))
    best = {group.keeper: float("inf")}
    heap = [(-best[group.keeper], group.keeper)]
    while heap:
        width, u = heapq.heappop(heap)
        if -width < best[u]:
            continue
        for v, s in links.get(u, ()):
            w = min(-width, s)
            if w > best.get(v, float("-inf")):
                best[v] = w
                heapq.heappush(heap, (-w, v))
    del best[group.keeper]
    return best


def group_tiles(group, names: dict[str, str] | None = None, *, max_members: int | None = None) -> list[Tile]:
    """The tiles of one duplicate group: the keeper first (green ``KEEP``), then each member with its score.

    A member's score is its similarity to the keeper. A member with no pair to the keeper (the
    group is a chain of pairs above the threshold) shows ``via`` and the weakest step of its
    best chain to the keeper: its own similarity to the keeper may be lower.
    """
    names = names or dict(zip(group.paths, short_names(group.paths)))
    to_keeper = {(y if x == group.keeper else x): s for x, y, s in group.pairs if group.keeper in (x, y)}
    chain = _chain_to_keeper(group)
    order = [group.keeper] + [i for i in group.ids if i != group.keeper]
    tiles = []
    for i in order[:max_members]:
        path = group.paths[group.ids.index(i)]
        if i == group.keeper:
            tiles.append(Tile(path, "keep (suggested)", names[path], badge="KEEP", frame=_KEEP))
        elif i in to_keeper:
            tiles.append(Tile(path, f"{to_keeper[i]:.3f} to keeper", names[path], badge=f"{to_keeper[i]:.3f}"))
        elif i in chain:
            tiles.append(Tile(path, f"via others, steps ≥ {chain[i]:.3f}", names[path], badge=f"via {chain[i]:.3f}"))
        else:  # no pairs recorded: only the group's weakest link is known
            tiles.append(Tile(path, f"group's weakest link {group.min_score:.3f}", names[path], badge="via"))
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
