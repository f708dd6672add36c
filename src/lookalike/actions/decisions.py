"""Decisions a person made: "not duplicates" (kept by content hash), and the groups chosen on the page."""

from __future__ import annotations

import json
import os
from pathlib import Path

from .. import storage
from .errors import ActionError

DECISIONS_FILE = "decisions.json"


def load_decisions(db: str | os.PathLike) -> list[set[str]]:
    """The "not duplicates" decisions stored in collection ``db``: sets of content hashes."""
    p = Path(db) / DECISIONS_FILE
    try:
        data = json.loads(p.read_text())
    except FileNotFoundError:
        return []
    except (OSError, ValueError) as err:
        raise ActionError(f"Cannot read the decisions file {p}: {err}. Fix or delete it (its decisions are "
                          "then forgotten).") from None
    return [set(s) for s in data.get("not_duplicates", [])]


def remember_not_duplicates(col, ids) -> set[str]:
    """Store that the images ``ids`` of ``col`` are not duplicates of each other; returns their hashes.

    Decisions are keyed by content hash, so they survive a re-index (and follow a moved file).
    Two ids of byte-identical files mean "these copies are meant to be there".
    """
    from ..collection import store

    ids = [int(i) for i in ids]
    if len(ids) < 2:
        raise ValueError(f"--ignore needs at least 2 image ids (the images that are not duplicates), got {ids}")
    hashes = set()
    for i in ids:
        try:
            h = col.record(i)["content_hash"]
        except KeyError:
            raise ValueError(f"No image with id {i} in {col.path}; ids are those shown by lookalike dupes") from None
        if not h:
            raise ValueError(f"Image {i} has no content hash (imported without one); it cannot be remembered")
        hashes.add(h)
    with store.Lock(col.path):  # the collection's own commits clean temp files up: write under its lock
        decisions = load_decisions(col.path)
        if hashes not in decisions:
            decisions.append(hashes)
        storage.atomic_write_json(col.path / DECISIONS_FILE, {"version": 1, "not_duplicates": [
            sorted(s) for s in decisions]})
    return hashes


def chosen_groups(col, choices, threshold: float, *, verified=frozenset(), check: bool | None = None) -> list:
    """Review groups from a person's choices: ``[(keeper_id, [ids to act on]), ...]``.

    Each chosen member is scored against its keeper again. One below ``threshold`` gets a role
    other than ``act`` (and :func:`~.planning.make_plan` leaves it alone, whatever the request
    said) unless a geometric check shows it the same photo as its keeper: then it acts and is
    ``verified``, the rule of ``lookalike dupes`` (:func:`lookalike.review.make_group`). One marked
    "not duplicates" with its keeper never acts. Only ids of ``col`` are accepted.

    Parameters
    ----------
    col : Collection
    choices : sequence of (int, sequence of int)
    threshold : float
        The score to the keeper a member needs to be acted on (without verification).
    verified : set of (int, int), optional
        ``(low id, high id)`` pairs already shown to be the same photo (a duplicate search's).
    check : bool, optional
        Check each member below ``threshold`` and not in ``verified`` against its keeper now
        (:func:`lookalike.verify.verify_pairs`). Default: when :func:`lookalike.dupes.verification`
        is on for ``col`` ("auto": OpenCV installed, at most
        :data:`lookalike.verify.AUTO_MAX_IMAGES` images).

    Raises
    ------
    ValueError
        An id that is not in ``col``, a keeper among its own members, or a group without members.
    """
    from ..dupes import verification, verify_chained
    from ..review import MemberFacts, ignored_pairs, make_group

    ignored_pair = ignored_pairs(load_decisions(col.path))
    verified = frozenset(verified)

    facts, groups = MemberFacts(col), []
    for keeper, members in choices:
        ids = [int(keeper), *(int(i) for i in members)]
        if not members:
            raise ValueError(f"The group of keeper {keeper} names no image to act on.")
        if len(set(ids)) != len(ids):
            raise ValueError(f"The group of keeper {keeper} names an image twice (or the keeper as a member).")
        for i in ids:
            try:
                col.row_of_id(i)
            except (KeyError, OverflowError):
                raise ValueError(f"No image with id {i} in {col.path}.") from None
        groups.append(make_group(col, facts, sorted(ids), int(keeper), [], "near", threshold, (), ignored_pair,
                                 verified=verified))
    if check is None:
        check = verification(col).on
    if check:
        groups = verify_chained(col, facts, groups, threshold, (), ignored_pair, verified)
    return groups
