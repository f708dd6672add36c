"""Locality Sensitive Hashing: hash families, bucket tables, the index and its tuner."""

from .families import FAMILIES, make_family
from .index import LSHIndex

__all__ = ["FAMILIES", "LSHIndex", "make_family"]
