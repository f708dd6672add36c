"""Which segments to merge (a tiered policy, as Lucene's TieredMergePolicy) and the merge itself.

Segments are grouped in tiers by live size (below ``FLOOR_ROWS``; then each factor of
``TIER_FACTOR`` above it). A tier holding ``SEGMENTS_PER_TIER`` segments is merged into
one, so a collection of n images keeps O(log n) segments and each image is rewritten
O(log n) times over its life. Small segments (one per ``index`` checkpoint) are merged
sooner: more than ``MAX_SMALL`` of them are merged together. A segment with more than
``MAX_DELETED_SHARE`` deleted rows is rewritten on its own. No merge produces a segment
above ``MAX_SEGMENT_ROWS`` live rows (queries stay parallel-friendly, merges bounded).
"""

from __future__ import annotations

import math

import numpy as np

from .segment import Segment, SegmentWriter

FLOOR_ROWS = 4_096
TIER_FACTOR = 8
SEGMENTS_PER_TIER = 8
MAX_SMALL = 4
MAX_DELETED_SHARE = 0.3
MAX_SEGMENT_ROWS = 262_144
MERGE_BLOCK_ROWS = 16_384


def _tier(live: int) -> int:
    return 0 if live < FLOOR_ROWS else 1 + int(math.log(live / FLOOR_ROWS, TIER_FACTOR))


def plan(segments: list[Segment], *, max_segments: int | None = None) -> list[list[int]]:
    """Groups of segment indices to merge, each group into one new segment.

    ``max_segments``: merge further (smallest first) until at most that many remain.
    """
    groups: list[list[int]] = []
    taken: set[int] = set()
    for i, s in enumerate(segments):
        if s.rows and (s.rows - s.live) / s.rows > MAX_DELETED_SHARE:
            groups.append([i])
            taken.add(i)
    tiers: dict[int, list[int]] = {}
    for i, s in enumerate(segments):
        if i not in taken:
            tiers.setdefault(_tier(s.live), []).append(i)
    for tier, members in sorted(tiers.items()):
        limit = MAX_SMALL if tier == 0 else SEGMENTS_PER_TIER - 1
        if len(members) > limit:
            members = sorted(members, key=lambda i: segments[i].live)
            group, size = [], 0
            for i in members:
                if size + segments[i].live > MAX_SEGMENT_ROWS and len(group) > 1:
                    groups.append(group)
                    group, size = [], 0
                group.append(i)
                size += segments[i].live
            if len(group) > 1:
                groups.append(group)
            taken.update(i for g in groups for i in g)
    if max_segments is not None:
        # what would remain after these merges, then merge the smallest remaining until few enough
        remaining = len(segments) - sum(len(g) - 1 for g in groups)
        rest = sorted((i for i in range(len(segments)) if i not in taken), key=lambda i: segments[i].live)
        extra: list[int] = []
        while remaining > max_segments and rest:
            extra.append(rest.pop(0))
            if len(extra) > 1:
                remaining -= 1
        if len(extra) > 1:
            groups.append(sorted(extra))
    return [sorted(g) for g in groups if len(g) > 1 or segments[g[0]].live < segments[g[0]].rows]


def write_merged(folder, name: str, segments: list[Segment], dim: int, dtype: str, variants: int = 0) -> dict:
    """Stream the live rows of ``segments`` into a new segment; returns its manifest entry.

    ``variants``: the collection's variants per row (rotations), carried along; a segment
    without a variants file gives its plain vectors as variants (they add nothing to a score).
    """
    writer = SegmentWriter(folder, name, dim, dtype, variants)
    try:
        for seg in segments:
            vec = seg.vectors()
            var = seg.variants() if variants and seg.has_variants else None
            rows = seg.alive_rows
            for b0 in range(0, len(rows), MERGE_BLOCK_ROWS):
                r = rows[b0 : b0 + MERGE_BLOCK_ROWS]
                block = np.asarray(vec[r])
                extra = None
                if variants:
                    extra = np.asarray(var[r]) if var is not None else np.repeat(block[:, None], variants, axis=1)
                writer.append({k: v[r] for k, v in seg.cols.items()}, block, extra)
        return writer.finish()
    except BaseException:
        writer.abort()
        raise
