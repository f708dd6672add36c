"""The on-disk collection of image embeddings: segmented, crash-safe, one writer at a time.

Modules, one job each:

* ``store``: the folder layout, the manifest (validated on every open), the writer's lock;
* ``segment``: immutable segments (metadata Parquet + embeddings ``.npy``, and the rotation
  variants' ``.var.npy`` when rotations are on: :mod:`lookalike.rotations`), written streaming;
* ``view``: one committed generation as rows (``Rows`` reads vectors by row, never all at once);
* ``sync``: a folder scan and the indexing flow in checkpoints; the streaming Spark import; the
  backfill of rotation variants for images indexed before rotations were turned on;
* ``merge``: the tiered merge policy and the merge itself;
* ``artifacts``: per-segment LSH tables and the DBA vectors, kept current;
* ``loading``: reading a committed generation (manifest, segments, errors file; format 1 as 2);
* ``commit``: the write transaction (lock, re-read, commit), which every write goes through;
* ``writing``: index, add, remove, rename, the Spark import, and the maintenance after each;
* ``query``: embedding a query and searching;
* ``describe``: the collection as one dict (``lookalike info``, ``/api/stats``);
* ``facade``: :class:`Collection`, the API over all of them (its methods from the mixins of
  ``query``, ``writing`` and ``commit``).
"""

from __future__ import annotations

from ..storage import CollectionError, CorruptCollectionError
from .facade import DEFAULT_DTYPE, Collection
from .segment import display
from .store import DEFAULT_DB, FORMAT_VERSION, MANIFEST, manifest_stamp
from .writing import IndexReport

# Commit at least every this many new images (each commit writes only the new rows).
CHECKPOINT_MIN_ROWS = 2_000
# Collections at least this big are searched through the LSH index by default (below
# it, exact search takes under ~2 ms on one core and is never wrong).
LSH_MIN_IMAGES = 5_000

__all__ = [
    "CHECKPOINT_MIN_ROWS", "DEFAULT_DB", "DEFAULT_DTYPE", "FORMAT_VERSION", "LSH_MIN_IMAGES", "MANIFEST", "Collection",
    "CollectionError", "CorruptCollectionError", "IndexReport", "display",
    "manifest_stamp",
]
