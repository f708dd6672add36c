"""One committed generation as readers see it: the live rows of all segments, in order.

Row ``r`` of the collection is the ``r``-th live (not deleted) row when the segments are
laid end to end. :class:`Rows` reads vectors by row without ever building the whole
matrix: slices and index arrays gather only the rows asked for, segment by segment.
"""

from __future__ import annotations

import numpy as np

from .segment import Segment, empty_columns


class Rows:
    """A read-only ``(n, dim)`` matrix over the live rows of segments (float32 when read).

    Supports ``len``, ``shape``, ``dtype``, ``x[i]``, ``x[a:b]``, ``x[index_array]`` and
    ``np.asarray(x)`` (which does build the whole matrix: avoid it on large collections).

    ``variant``: read the rows' variant embeddings of that index (rotations) instead; a
    segment without a variants file gives its plain vectors (a variant that adds nothing).
    """

    def __init__(self, segments: list[Segment], verify: bool = True, variant: int | None = None):
        self.segments = segments
        self.verify = verify
        self.variant = variant
        self.counts = np.array([s.live for s in segments], np.int64)
        self.starts = np.concatenate([[0], np.cumsum(self.counts)]).astype(np.int64)
        dim = segments[0].dim if segments else 0
        self.shape = (int(self.starts[-1]), dim)
        self.dtype = np.dtype(np.float32)
        self.ndim = 2

    def __len__(self) -> int:
        return self.shape[0]

    def _seg_rows(self, s: int, local: np.ndarray) -> np.ndarray:
        seg = self.segments[s]
        if self.variant is not None and seg.has_variants:
            v = seg.variants(self.verify)[:, self.variant, :]
        else:
            v = seg.vectors(self.verify)
        phys = seg.alive_rows[local]
        if len(phys) and phys[-1] - phys[0] + 1 == len(phys):  # contiguous: a plain slice of the memmap
            return np.asarray(v[phys[0] : phys[-1] + 1], np.float32)
        return np.asarray(v[phys], np.float32)

    def take(self, rows) -> np.ndarray:
        """Vectors of the given rows, ``(len(rows), dim)`` float32, in that order."""
        rows = np.asarray(rows, np.int64).reshape(-1)
        out = np.empty((len(rows), self.shape[1]), np.float32)
        if not len(rows):
            return out
        if rows.min() < 0 or rows.max() >= len(self):
            raise IndexError(f"row out of range for {len(self)} rows")
        seg = np.searchsorted(self.starts, rows, side="right") - 1
        for s in np.unique(seg):
            m = seg == s
            local = rows[m] - self.starts[s]
            order = np.argsort(local, kind="stable")
            got = self._seg_rows(int(s), local[order])
            dst = np.nonzero(m)[0][order]
            out[dst] = got
        return out

    def __getitem__(self, key):
        if isinstance(key, (int, np.integer)):
            i = int(key) + (len(self) if key < 0 else 0)
            return self.take([i])[0]
        if isinstance(key, slice):
            start, stop, step = key.indices(len(self))
            if step == 1:
                return self.take(np.arange(start, stop))
            return self.take(np.arange(start, stop, step))
        key = np.asarray(key)
        if key.dtype == bool:
            key = np.nonzero(key)[0]
        return self.take(key)

    def __array__(self, dtype=None, copy=None):
        out = self.take(np.arange(len(self)))
        return out if dtype is None else out.astype(dtype)

    def blocks(self, rows: int = 8_192):
        """``(start_row, float32 block)`` pairs covering all rows in order (bounded memory)."""
        for r0 in range(0, len(self), rows):
            yield r0, self[r0 : r0 + rows]


class Snapshot:
    """Segments of one generation + the columns of their live rows + id lookups."""

    def __init__(self, segments: list[Segment], verify: bool = True):
        self.segments = segments
        self.rows = Rows(segments, verify)
        if segments:
            self.cols = {k: np.concatenate([s.cols[k][s.alive_rows] for s in segments]) for k in segments[0].cols}
        else:
            self.cols = empty_columns()
        self._id_order = None
        self._row_of_path = None
        self._variant_rows: dict[int, Rows] = {}

    def __len__(self) -> int:
        return len(self.rows)

    def variant_rows(self, v: int) -> Rows:
        """The ``(n, dim)`` matrix of every live row's ``v``-th variant embedding (see :class:`Rows`)."""
        if v not in self._variant_rows:
            self._variant_rows[v] = Rows(self.segments, self.rows.verify, variant=v)
        return self._variant_rows[v]

    def row_of_id(self, image_id: int) -> int:
        """Row of an image id; KeyError if absent (a sorted-id search: no dict per image)."""
        if self._id_order is None:
            self._id_order = np.argsort(self.cols["id"], kind="stable")
        ids = self.cols["id"]
        i = int(np.searchsorted(ids, image_id, sorter=self._id_order))
        if i < len(ids) and ids[self._id_order[i]] == image_id:
            return int(self._id_order[i])
        raise KeyError(image_id)

    def rows_of_ids(self, image_ids) -> np.ndarray:
        """Rows of many ids (all must be present)."""
        if self._id_order is None:
            self._id_order = np.argsort(self.cols["id"], kind="stable")
        return self._id_order[np.searchsorted(self.cols["id"], np.asarray(image_ids, np.int64),
                                              sorter=self._id_order)]

    def find_path(self, path: str) -> int | None:
        """Row of an indexed path, or None, by one vectorised scan (no index built: for single lookups)."""
        if self._row_of_path is not None:
            return self._row_of_path.get(path)
        hit = np.flatnonzero(self.cols["path"] == path)
        return int(hit[0]) if len(hit) else None

    def row_of_path(self, path: str) -> int | None:
        """Row of an indexed path, or None (builds a path index on first use: for many lookups)."""
        if self._row_of_path is None:
            self._row_of_path = {p: r for r, p in enumerate(self.cols["path"].tolist())}
        return self._row_of_path.get(path)

    def locate(self, row: int) -> tuple[int, int]:
        """(segment index, physical row in it) of a collection row."""
        s = int(np.searchsorted(self.rows.starts, row, side="right") - 1)
        return s, int(self.segments[s].alive_rows[row - self.rows.starts[s]])
