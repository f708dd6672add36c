"""Near-duplicate pairs and groups. Reports only: nothing here deletes or moves files.

The work is in three modules, re-exported here (``lookalike.dupes`` is the API):
:mod:`lookalike.pairs` finds pairs (blocked exact scan, LSH radius search, rotations),
:mod:`lookalike.grouping` makes groups of them (components, strict groups, the keeper), and
:mod:`lookalike.review` makes groups ready to act on (tiers, keep rules, roles), used by
:func:`review_groups` below.
"""

from __future__ import annotations

import logging

from .grouping import Group, components, connected_groups, group_pairs, keeper_rank, strict_split
from .pairs import (
    LSH_QUERY_ROWS,
    PAIR_BLOCK_ROWS,
    PAIR_OTHER_ROWS,
    Pair,
    PairScan,
    Progress,
    exact_pairs,
    find_pairs,
    lsh_pairs,
    scan_pairs,
    verified_pairs,
)
from .review import (
    KEEP_RULES,
    ROLES,
    TIERS,
    Member,
    MemberFacts,
    ReviewGroup,
    _against_groups,
    _distinct_files,
    _ids_by_hash,
    _under,
    ignored_pairs,
    keep_key,
    make_group,
)

# The `dupes` threshold of the CLI, the library, the server and the Spark job (one definition):
# calibrated on the near-duplicate suite (benchmarks/quality_default.py) as the lowest cosine where
# pairs of different photos (same-class ones included) stay under 1 % of the pairs reported.
DEFAULT_THRESHOLD = 0.88

log = logging.getLogger(__name__)

__all__ = [
    "DEFAULT_THRESHOLD", "KEEP_RULES", "LSH_QUERY_ROWS", "PAIR_BLOCK_ROWS", "PAIR_OTHER_ROWS", "ROLES", "TIERS",
    "Group", "Member", "MemberFacts", "Pair", "PairScan", "Progress", "ReviewGroup", "components", "connected_groups",
    "exact_pairs", "find_pairs", "group_pairs", "keep_key", "keeper_rank", "lsh_pairs", "make_group", "review_groups",
    "scan_pairs", "strict_split", "verification", "verified_pairs", "verify_chained",
]


def verification(col, verify="auto", *, against=None):
    """Whether :func:`review_groups` verifies pairs of ``col`` for this ``verify`` setting (one rule for all callers).

    Returns a :class:`lookalike.verify.Plan`: ``on``, and for ``"auto"`` when it does not verify,
    the one-line ``note`` saying why (OpenCV missing: the ``pip install``; a collection above
    :data:`lookalike.verify.AUTO_MAX_IMAGES`). See :func:`lookalike.verify.plan`.
    """
    from . import verify as vf

    return vf.plan(verify, len(col), against=against is not None)


def review_groups(col, threshold: float = DEFAULT_THRESHOLD, *, tier: str = "all", keep: str = "pixels", reference=(),
                  ignored=(), strict: bool = False, method: str = "auto", against=None,
                  verify="auto", progress=None) -> list[ReviewGroup]:
    """Duplicate groups ready to act on: exact tier first, then near tier; a keeper and a role per member.

    Exact groups are byte-identical files (same content hash). Near groups come from the
    pairs at or above ``threshold``; in them each set of byte-identical files is stood for by
    its keeper (its other copies are in the exact group), so no file is in two groups.

    Parameters
    ----------
    col : Collection
    threshold : float, default DEFAULT_THRESHOLD (0.88)
    tier : {"all", "exact", "near"}, default "all"
    keep : str, default "pixels"
        Keep rule (see :func:`keep_key`); files under ``reference`` are preferred as keepers.
    reference : sequence of str
        Absolute folders whose files are always kept, never acted on.
    ignored : sequence of sets of content hashes
        Decisions "not duplicates": two files whose hashes are in one set are never paired
        (a one-hash set: its byte-identical copies are meant to be there).
    strict : bool, default False
        Near groups where every pair passes (default: connected components).
    method : {"auto", "exact", "lsh"}
    against : Collection, optional
        Another collection: one group per image of ``col`` duplicated there, its best match
        there as keeper; only the image of ``col`` may be acted on.
    verify : {"auto", True, False}, default "auto"
        Also check each image's nearest neighbours scoring in ``[verify.BAND_LOW, threshold)``
        with local features + RANSAC (:func:`lookalike.pairs.verified_pairs`; the ``verify``
        extra, OpenCV) and group the pairs that pass: the hard copies (blur + noise, 15-25 degree
        turns, watermarks, thumbnails, screenshots, deep crops) a threshold alone cannot separate
        from similar photos. A member verified against the keeper may be acted on
        (``Member.verified``). ``"auto"``: when OpenCV is installed and the collection has at most
        :data:`lookalike.verify.AUTO_MAX_IMAGES` images, never with ``against`` (otherwise the
        reason is logged; :func:`verification` gives it). True: always (ImportError without
        OpenCV; ValueError with ``against``).
    progress : callable, optional
        Called with the fraction of the verification done (0..1) while it runs.

    Returns
    -------
    list of ReviewGroup
        Exact groups (by size, then smallest id), then near groups (strongest first).
    """
    if tier not in TIERS:
        raise ValueError(f"Unknown tier: {tier!r}; expected one of {', '.join(TIERS)}")
    rank = keep_key(keep)
    reference = tuple(str(r) for r in reference)
    ignore_sets = [frozenset(s) for s in ignored]
    ignored_pair = ignored_pairs(ignore_sets)
    plan = verification(col, verify, against=against)
    if plan.note:
        log.info("dupes: %s", plan.note)

    if against is not None:
        return _against_groups(col, against, threshold, tier, rank, reference, ignored_pair, method)
    facts = MemberFacts(col)

    def order(i: int) -> tuple:
        return (not _under(facts[i]["path"], reference), rank(facts[i]))

    exact_groups, stand_in = [], {}
    for h, ids in _ids_by_hash(col.metadata_columns()).items():
        if any(s == {h} for s in ignore_sets):
            continue
        keeper = min(ids, key=order)
        stand_in.update({i: keeper for i in ids if i != keeper})
        ids = _distinct_files(ids, facts, keeper)  # links to one file take no space: not duplicates
        if len(ids) < 2:
            continue
        exact_groups.append(make_group(col, facts, sorted(ids), keeper, [], "exact", threshold, reference,
                                        ignored_pair))
    exact_groups.sort(key=lambda g: (-len(g.ids), g.ids[0]))
    near_groups = []
    if tier != "exact":
        def kept(p: Pair) -> bool:
            ha, hb = facts[p.id_a]["content_hash"], facts[p.id_b]["content_hash"]
            return (p.id_a not in stand_in and p.id_b not in stand_in and not (ha and ha == hb)
                    and not ignored_pair(ha, hb))

        pairs = [p for p in find_pairs(col, threshold, method=method) if kept(p)]
        checked = frozenset()
        if plan.on:
            extra = [p for p in verified_pairs(col, threshold, method=method, progress=progress) if kept(p)]
            checked = frozenset((min(p.id_a, p.id_b), max(p.id_a, p.id_b)) for p in extra)
            pairs += extra
        for g in group_pairs(col, pairs, strict=strict):
            keeper = min(g.ids, key=order)
            near_groups.append(make_group(col, facts, g.ids, keeper, g.pairs, "near", threshold, reference,
                                           ignored_pair, verified=checked))
        if plan.on:
            near_groups = verify_chained(col, facts, near_groups, threshold, reference, ignored_pair, checked)
        near_groups.sort(key=lambda g: (-g.min_score, -len(g.ids), g.ids[0]))
    return (exact_groups if tier != "near" else []) + near_groups


def verify_chained(col, facts, groups, threshold, reference, ignored_pair, checked) -> list[ReviewGroup]:
    """Verify each chained member against its keeper; remake the groups where some pass (they may be acted on).

    A chained member is below the threshold to the keeper and was grouped through other members.
    """
    from . import verify as vf

    todo = [(m.id, g.keeper) for g in groups for m in g.members if m.role == "chained"]
    if not todo:
        return groups
    ok, _ = vf.verify_pairs([facts[i]["path"] for i, _ in todo], [facts[k]["path"] for _, k in todo])
    more = checked | {(min(i, k), max(i, k)) for (i, k), good in zip(todo, ok) if good}
    if len(more) == len(checked):
        return groups
    return [make_group(col, facts, g.ids, g.keeper, g.pairs, "near", threshold, reference, ignored_pair,
                       verified=more) if any(m.role == "chained" for m in g.members) else g for g in groups]
