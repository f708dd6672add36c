"""Pictures of results: a query beside its hits, duplicate groups, a map. Computes no similarity.

Every image is captioned with its short name (:func:`lookalike.names.short_names`: the
shortest unique ``folder/name``), since many folders hold an ``image_0001.jpg``.

* :mod:`.tiles`: fonts, thumbnails, captions, a grid of captioned tiles;
* :mod:`.results`: :func:`result_grid` and :func:`duplicate_sheet`;
* :mod:`.map`: :func:`embedding_map` (:func:`map_layout` then :func:`draw_map`).
"""

from .map import LEGEND_MAX, draw_map, embedding_map, label_colours, map_layout
from .results import duplicate_sheet, grid_tiles, group_tiles, result_grid
from .tiles import SHEET_THUMB, THUMB, Tile, cell_origin, draw_caption, thumbnail, tile_grid

__all__ = [
    "LEGEND_MAX", "SHEET_THUMB", "THUMB", "Tile", "cell_origin", "draw_caption", "draw_map", "duplicate_sheet",
    "embedding_map", "grid_tiles", "group_tiles", "label_colours", "map_layout", "result_grid", "thumbnail",
    "tile_grid",
]
