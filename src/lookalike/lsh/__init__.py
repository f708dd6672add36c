"""Locality Sensitive Hashing.

``families`` (hash families), ``tables`` (CSR bucket tables), ``index`` (:class:`LSHIndex`, the
estimator), ``query`` (how a fitted index answers: the path chosen at fit/load), ``_kernels``
(the compiled numba kernels), ``fileformat`` (the ``.npz`` layout and its versions), ``tune``
(parameter search and recall measurement).
"""

from .families import FAMILIES, make_family
from .index import LSHIndex

__all__ = ["FAMILIES", "LSHIndex", "make_family"]
