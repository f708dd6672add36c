"""Short, unambiguous names for images: the shortest unique tail of each path, for captions."""

from __future__ import annotations

import os
import re
from collections import defaultdict
from collections.abc import Iterable

from .collection import display

_SEP = re.compile(r"[/\\]" if os.sep == "\\" else "/")


def _parts(path: str) -> list[str]:
    """Path components, printable (undecodable bytes escaped), without empty or ``.`` parts."""
    return [display(p) for p in _SEP.split(os.fspath(path)) if p not in ("", ".")]


def short_names(paths: Iterable[str | os.PathLike], *, min_parts: int = 2) -> list[str]:
    r"""Name each path by the shortest tail of its components that no other path shares.

    Every name has at least ``min_parts`` components (``folder/name``: many folders hold an
    ``image_0001.jpg``), more where two paths share that tail. A path given twice gets the
    same name both times; a path that is a tail of another keeps its full form.

    Parameters
    ----------
    paths : iterable of str or os.PathLike
        File paths, as stored by a collection (``os.fsdecode`` strings: a name that is not
        UTF-8 carries surrogates).
    min_parts : int, default 2
        The fewest components a name shows.

    Returns
    -------
    list of str
        One name per path, in order, components joined by ``/``; undecodable bytes are shown
        escaped (``caf\xe9.jpg``), as :func:`lookalike.collection.display` does.

    Examples
    --------
    >>> short_names(["/p/cars/image_0001.jpg", "/p/ants/image_0001.jpg", "/p/ants/image_0002.jpg"])
    ['cars/image_0001.jpg', 'ants/image_0001.jpg', 'ants/image_0002.jpg']
    >>> short_names(["/a/x/cat/1.jpg", "/b/x/cat/1.jpg", "/b/y/cat/2.jpg"])
    ['a/x/cat/1.jpg', 'b/x/cat/1.jpg', 'cat/2.jpg']
    """
    if min_parts < 1:
        raise ValueError(f"min_parts must be at least 1, got {min_parts}")
    given = [tuple(_parts(p)) for p in paths]
    parts = list(dict.fromkeys(given))  # a path given twice is one file: one name
    depth = [min(min_parts, len(p)) for p in parts]
    while True:
        holders = defaultdict(list)
        for i, (p, d) in enumerate(zip(parts, depth)):
            holders[p[len(p) - d :]].append(i)
        grown = False
        for same in holders.values():
            for i in same if len(same) > 1 else ():
                if depth[i] < len(parts[i]):
                    depth[i] += 1
                    grown = True
        if not grown:
            break
    name = {p: "/".join(p[len(p) - d :]) for p, d in zip(parts, depth)}
    return [name[p] for p in given]
