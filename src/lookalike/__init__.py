"""lookalike: find similar images in large collections.

>>> from lookalike import Collection                       # doctest: +SKIP
>>> col = Collection.create("photos.lookalike")            # doctest: +SKIP
>>> col.index("~/Pictures")                                # doctest: +SKIP
>>> col.search("query.jpg", k=10)                          # doctest: +SKIP
"""

from __future__ import annotations

__version__ = "0.1.0"
__all__ = ["Collection", "CollectionError", "CorruptCollectionError", "Hit", "IndexReport", "__version__"]


def __getattr__(name):  # lazy: `import lookalike` stays fast
    if name in ("Collection", "CollectionError", "CorruptCollectionError", "IndexReport"):
        from . import collection

        return getattr(collection, name)
    if name == "Hit":
        from .search import Hit

        return Hit
    raise AttributeError(f"module 'lookalike' has no attribute {name!r}")
