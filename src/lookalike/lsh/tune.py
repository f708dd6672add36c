"""Choose LSH parameters from the collection's own vectors to reach a recall target.

For a sample of the indexed vectors used as queries (each excluding itself), compute
the exact top-k in one pass over the collection, then for a grid of settings measure

* recall@k **exactly**: a true neighbour is found when its bucket key equals one the
  query probes in some table, so only the queries and their true neighbours are hashed;
* the candidates per query **on a row sample** (``TUNE_SAMPLE_ROWS``), scaled to the
  collection: candidates are a sum over rows, so the scaled count is unbiased;

and keep the cheapest setting that reaches ``target_recall``. Projections/signatures are
computed once for the largest setting; smaller settings use prefixes of them. Tuning thus
costs one exact pass plus work on ~20k rows, whatever the collection size; the fitted
index then measures its real recall on other held-out queries (:func:`measure`).
"""

from __future__ import annotations

import logging
import time

import numpy as np

from ..search import exact_topk
from . import families, query, tables

log = logging.getLogger(__name__)

# Sampled queries for tuning: 200 x k=10 neighbours gives recall within about +-0.015.
TUNE_QUERIES = 200
HYPERPLANE_BITS = (10, 12, 14, 16, 18)
HYPERPLANE_TABLES = (4, 8, 12, 16, 24, 32)
HYPERPLANE_PROBES = (1, 2, 4, 8, 16, 32, 64)
BRP_PROJECTIONS = (2, 4, 6, 8)
BRP_TABLES = (4, 8, 16, 32)
BRP_WIDTHS = (0.5, 1.0, 2.0, 4.0)  # x the projections' standard deviation
MINHASH_ROWS = (1, 2, 3, 4, 6)
MINHASH_TABLES = (8, 16, 32, 64)
# Estimated cost in microseconds: re-ranking a candidate (gather + dot at d=1280) vs one
# bucket lookup vs per-table overhead; measured on the benchmark machine, rough but it
# only has to rank settings.
COST_PER_CANDIDATE = 0.3
COST_PER_PROBE = 0.2
COST_PER_TABLE = 1.0
COST_PER_HAMMING = 0.03  # Hamming distance of one candidate's hash bits (hyperplane filter)
# Most (query, table, probe, row) entries one tuning lookup may produce: ~8M entries is
# ~300 MB of temporary int64 arrays (settings needing more are near-full scans anyway).
TUNE_MAX_ENTRIES = 8_000_000
RERANK_MARGIN = 0.005
# Queries whose candidates are ranked together when the Hamming cut is set (bounds memory).
RANK_CHUNK = 32
# Rows candidate counts are measured on (all rows below this size).
TUNE_SAMPLE_ROWS = 10_000
# Give up on a setting once it returns more than this share of the collection.
MAX_CANDIDATE_SHARE = 0.3


def _sample(n: int, seed: int, size: int = TUNE_QUERIES) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.sort(rng.choice(n, size=min(size, n), replace=False))


def _cost(cand: float, n_tables: int, n_probes: int, dim: int, rerank: int | None = None) -> float:
    """Estimated query time; with a Hamming filter only ``rerank`` candidates get the exact cosine."""
    exact = cand if not rerank else min(cand, rerank) + COST_PER_HAMMING / COST_PER_CANDIDATE * cand
    return COST_PER_CANDIDATE * exact * dim / 1280 + COST_PER_PROBE * n_tables * n_probes + COST_PER_TABLE * n_tables


def _pick(trials: list[dict], target: float) -> dict:
    ok = [t for t in trials if t["recall"] >= target]
    if ok:
        return min(ok, key=lambda t: t["cost"])
    log.warning("no LSH setting reached recall %.2f; using the most accurate one tried", target)
    return max(trials, key=lambda t: (t["recall"], -t["cost"]))


class _Sample:
    """The rows tuning works on: queries, their true neighbours, and rows to count candidates on."""

    def __init__(self, X, qrows, truth, seed):
        self.n, self.dim = X.shape
        self.qrows, self.truth = qrows, truth
        self.nq = len(qrows)
        self.srows = np.arange(self.n) if self.n <= TUNE_SAMPLE_ROWS else _sample(self.n, seed + 2, TUNE_SAMPLE_ROWS)
        self.scale = self.n / len(self.srows)
        self.pair_q = np.repeat(np.arange(self.nq), truth.shape[1])  # query of each true-neighbour pair
        pos = np.searchsorted(self.srows, qrows)
        inside = (pos < len(self.srows)) & (self.srows[np.minimum(pos, len(self.srows) - 1)] == qrows)
        # (query, sample row) pairs that are a query and itself
        self.self_pairs = np.flatnonzero(inside) * np.int64(len(self.srows)) + pos[inside]

    def rows(self, X, which):
        r = {"q": self.qrows, "s": self.srows, "nb": self.truth.ravel()}[which]
        return np.concatenate([np.asarray(X[r[i : i + 8192]], np.float32) for i in range(0, len(r), 8192)]) \
            if len(r) else np.zeros((0, self.dim), np.float32)

    def candidates(self, keys, rows, pk, bits):
        """Unique (query, sample row) pairs in the probed buckets, self pairs removed, sorted."""
        found = tables.lookup(keys, rows, pk, bits, max_pairs=TUNE_MAX_ENTRIES)
        if found is None:
            return None
        pair = np.unique(found[0] * np.int64(len(self.srows)) + found[1])
        return pair[~np.isin(pair, self.self_pairs)]


def tune(index, X: np.ndarray) -> dict:
    """Grid-search the unset parameters of ``index`` (an unfitted LSHIndex) on ``X``.

    Returns
    -------
    dict
        ``best`` (the chosen parameters with their recall, candidates and cost),
        ``trials`` (every setting measured), ``seconds``, and ``holdout``: other sampled
        queries with their exact top-k (from the same pass), for :func:`measure`.
    """
    t0 = time.perf_counter()
    n, dim = X.shape  # X may be a float16 memmap: read in blocks, never copied whole
    qrows = _sample(n, index.seed)
    mrows = _sample(n, index.seed + 1)
    k = min(index.k, n - 1)
    both = np.concatenate([qrows, mrows])
    truth_both = exact_topk(X, np.asarray(X[both], np.float32), k, exclude=both)[1]  # one pass for both
    truth = truth_both[: len(qrows)]
    sample = _Sample(X, qrows, truth, index.seed)
    fn = {"hyperplane": _tune_hyperplane, "brp": _tune_brp, "minhash": _tune_minhash}[index.family]
    trials = fn(index, X, sample)
    best = _pick(trials, index.target_recall)
    log.info("LSH tuned in %.1f s: %s", time.perf_counter() - t0, best)
    return {
        "best": best,
        "trials": trials,
        "seconds": time.perf_counter() - t0,
        "queries": len(qrows),
        "sample_rows": len(sample.srows),
        "holdout": (mrows, truth_both[len(qrows) :]),
        "tuning_queries": (qrows, truth),
    }


def _grid(values, fixed):
    return [v for v in values if fixed is None or v == fixed] or [fixed]


def _first_probe_per_pair(keys, rows, pk, n, bits, self_pairs):
    """For every (query, row) candidate pair: the smallest probe index that reaches it.

    One lookup with all probes replaces one lookup per probe count: the probe lists are
    nested (the first P probes of a longer list are the P-probe list).
    """
    qi, r, probe = tables.lookup(keys, rows, pk, bits, with_probe=True)
    shift = np.int64(max(int(pk.shape[2] - 1).bit_length(), 1))
    combined = (qi * np.int64(n) + r) << shift | probe.astype(np.int64)
    combined.sort()  # one int64 sort: by pair, then by probe
    pair = combined >> shift
    start = np.flatnonzero(np.r_[True, pair[1:] != pair[:-1]])
    pair, first = pair[start], (combined[start] & ((1 << shift) - 1)).astype(np.int16)
    keep = ~np.isin(pair, self_pairs)
    return pair[keep], first[keep]


def _first_probe_of_truth(pk_b, nb_b, pair_q):
    """Per true-neighbour pair, the first probe reaching it with the first L tables (column L-1).

    From the probed buckets ``pk_b`` ``(q, L, P)`` and the neighbours' ``nb_b`` ``(pairs, L)``.
    """
    match = pk_b[pair_q] == nb_b[:, :, None]  # (pairs, L, P)
    first = np.where(match.any(axis=2), match.argmax(axis=2), np.iinfo(np.int16).max)
    return np.minimum.accumulate(first, axis=1)


def _tune_hyperplane(index, X, sample):
    n, dim = X.shape
    S, nq = len(sample.srows), sample.nq
    # More bits than ~2n buckets leave almost every bucket empty (recall then needs many probes);
    # far fewer put thousands of rows in each: only bit counts near log2(n) are worth measuring.
    near = [K for K in HYPERPLANE_BITS if np.log2(n) - 7 <= K <= np.log2(n) + 1] or [min(HYPERPLANE_BITS)]
    bits_grid = _grid(near, index.n_bits)
    tables_grid = _grid(HYPERPLANE_TABLES, index.n_tables)
    probes_grid = _grid(HYPERPLANE_PROBES, index.n_probes)
    fam = families.Hyperplane(max(tables_grid), max(bits_grid), seed=index.seed).fit(X)
    proj_q = fam.project(sample.rows(X, "q"))
    # Codes of the most bits; the K-bit codes are their low K bits (bit j = sign of plane j).
    codes_s = fam.keys(sample.rows(X, "s"))
    codes_nb = fam.keys(sample.rows(X, "nb"))
    codes_q = families.pack_bits(proj_q > 0)
    trials = []
    best_cost = np.inf  # cheapest setting found so far that reaches the target
    for K in reversed(bits_grid):  # many bits first: few candidates, cheap to measure
        bits = tables.bucket_bits(K, n)  # the fitted index's bucket width
        low = np.uint64((1 << K) - 1)
        keys, rows = tables.build(codes_s & low, bits)
        probes = [P for P in probes_grid if P <= 1 << min(K, families.PROBE_BITS)]
        pk_all = families.probe_from_projection(proj_q[:, :, :K], max(probes))
        truth_first_all = _first_probe_of_truth(tables.bucket_of(pk_all, bits), tables.bucket_of(codes_nb & low, bits),
                                                sample.pair_q)
        use_ham = query.hamming_filter(index.family, index.rerank, max(tables_grid), K)
        packed = [families.hamming_codes(c & low, K) for c in (codes_s, codes_nb, codes_q)] if use_ham else None
        for L in tables_grid:
            if _cost(0, L, 1, dim) >= best_cost:
                break
            p_cap = max([P for P in probes if _cost(0, L, P, dim) < best_cost] or [1])
            # Bound memory: expected (query, table, probe, row) entries of the lookup.
            per_probe = nq * L * S / 2.0**K
            p_cap = max([P for P in probes if P <= p_cap and P * per_probe <= TUNE_MAX_ENTRIES] or [1])
            pair, first = _first_probe_per_pair(keys, rows, pk_all[:, :L, :p_cap], S, bits, sample.self_pairs)
            truth_first = truth_first_all[:, L - 1]
            counts = np.bincount(first, minlength=max(probes) + 1).cumsum()
            hamming = query.hamming_filter(index.family, index.rerank, L, K)
            if hamming:
                mask = _prefix_mask(max(tables_grid), L, K)
                ham = _pair_hamming(packed[0], packed[2], mask, pair, S)
                ham_truth = np.bitwise_count((packed[1] ^ packed[2][sample.pair_q]) & mask).sum(axis=1)
            for P in [P for P in probes if P <= p_cap]:
                cand = float(counts[P - 1] / nq * sample.scale)
                rec = float((truth_first < P).mean())
                trial = {"n_bits": K, "n_tables": L, "n_probes": P, "recall": rec, "candidates": cand,
                         "cost": _cost(cand, L, P, dim, index.rerank if hamming else None)}
                if hamming and rec >= index.target_recall:
                    # the index keeps only the `rerank` candidates nearest in Hamming distance
                    trial = _with_hamming_cut(
                        trial, index, sample, pair, first < P, ham, truth_first < P, ham_truth, dim
                    )
                trials.append(trial)
                if trial["recall"] >= index.target_recall:
                    best_cost = min(best_cost, trial["cost"])
                    break
                if cand > MAX_CANDIDATE_SHARE * n or trial["cost"] >= best_cost:
                    break
    return trials


def _prefix_mask(n_tables: int, L: int, n_bits: int) -> np.ndarray:
    """Packed-word mask selecting the hash bits of the first ``L`` of ``n_tables`` tables."""
    ones = np.zeros((1, n_tables), np.uint64)
    ones[0, :L] = (1 << n_bits) - 1
    return families.hamming_codes(ones, n_bits)[0]


def _pair_hamming(packed_rows, packed_q, mask, pair, n_rows):
    """Hamming distance over the masked hash bits of each (query, row) pair (``pair = q * n_rows + row``)."""
    out = np.empty(len(pair), np.int32)
    for i in range(0, len(pair), 1 << 20):  # blocks bound the (pairs, words) temporaries
        p = pair[i : i + (1 << 20)]
        out[i : i + len(p)] = np.bitwise_count(
            (np.take(packed_rows, p % n_rows, axis=0) ^ np.take(packed_q, p // n_rows, axis=0)) & mask
        ).sum(axis=1, dtype=np.int32)
    return out


def _with_hamming_cut(trial, index, sample, pair, cand_mask, ham, found, ham_truth, dim):
    """Recall after keeping only the ``rerank`` Hamming-nearest candidates per query.

    A found true neighbour survives the cut when the candidates closer to the query in
    Hamming distance (counted on the row sample, scaled; ties count half) are fewer than
    ``rerank``. Doubles ``rerank`` until the target is met (or nothing is cut).
    """
    S = len(sample.srows)
    rank = _rank_in_query(pair[cand_mask] // S, ham[cand_mask], sample.pair_q, ham_truth) * sample.scale
    rerank = index.rerank
    while True:
        rec = float((found & (rank < rerank)).mean())
        if rec >= index.target_recall or rerank >= trial["candidates"]:
            break
        rerank *= 2
    cost = _cost(trial["candidates"], trial["n_tables"], trial["n_probes"], dim, rerank)
    return {**trial, "recall": rec, "recall_before_cut": trial["recall"], "rerank": rerank, "cost": cost}


def _plain_trials(index, sample, codes_q, codes_s, codes_nb, tables_grid, extra):
    """Trials over the number of tables for one key function (no probes): brp and minhash."""
    bits = tables.bucket_bits(None, sample.n)
    keys, rows = tables.build(codes_s, bits)
    qb, nb = tables.bucket_of(codes_q, bits), tables.bucket_of(codes_nb, bits)
    trials = []
    for L in tables_grid:
        rec = float((qb[sample.pair_q, :L] == nb[:, :L]).any(axis=1).mean())
        pair = sample.candidates(keys, rows, codes_q[:, :L, None], bits)
        cand = float(sample.n) if pair is None else len(pair) / sample.nq * sample.scale
        trials.append({**extra, "n_tables": L, "recall": rec, "candidates": cand,
                       "cost": _cost(cand, L, 1, sample.dim)})
        if rec >= index.target_recall or cand > MAX_CANDIDATE_SHARE * sample.n:
            break
    return trials


def _tune_brp(index, X, sample):
    proj_grid = _grid(BRP_PROJECTIONS, index.n_bits)
    tables_grid = _grid(BRP_TABLES, index.n_tables)
    Lm, Km = max(tables_grid), max(proj_grid)
    base = families.BucketedRandomProjection(Lm, Km, seed=index.seed, bucket_length=1.0).fit(X)
    proj = {w: ((sample.rows(X, w) - base.mean_) @ base.units_).reshape(-1, Lm, Km) for w in ("q", "s", "nb")}
    std = float(proj["s"].std()) or 1.0
    widths = [index.bucket_length] if index.bucket_length else [w * std for w in BRP_WIDTHS]
    unit_offsets = base.offsets_.reshape(Lm, Km)  # uniform in [0, 1)
    trials = []
    for r in widths:
        for K in proj_grid:
            codes = {w: families._mix(np.floor((p[:, :, :K] + unit_offsets[:, :K] * r) / r).astype(np.int64))
                     for w, p in proj.items()}
            trials += _plain_trials(index, sample, codes["q"], codes["s"], codes["nb"], tables_grid,
                                    {"n_bits": K, "bucket_length": r})
    return trials


def _tune_minhash(index, X, sample):
    rows_grid = _grid(MINHASH_ROWS, index.n_bits)
    tables_grid = _grid(MINHASH_TABLES, index.n_tables)
    Lm, Km = max(tables_grid), max(rows_grid)
    fam = families.MinHash(Lm, Km, seed=index.seed, top_dims=index.top_dims).fit(X)
    sig = {w: fam.signature(sample.rows(X, w)).reshape(-1, Lm, Km) for w in ("q", "s", "nb")}
    trials = []
    for K in rows_grid:
        codes = {w: families._mix(s[:, :, :K]) for w, s in sig.items()}
        trials += _plain_trials(index, sample, codes["q"], codes["s"], codes["nb"], tables_grid, {"n_bits": K})
    return trials


def choose_rerank(index, X: np.ndarray, qrows: np.ndarray, truth: np.ndarray) -> int:
    """Smallest Hamming cut (multiple of 8, >= 16) keeping ``target_recall`` (+ margin).

    Of the tuning queries' true neighbours, from their exact Hamming ranks among all
    their candidates on the fitted index.
    """
    ranks, most = [], 1
    for c in range(0, len(qrows), RANK_CHUNK):  # chunks bound the candidate arrays at 1M rows
        r, m = _hamming_ranks(index, X, qrows[c : c + RANK_CHUNK], truth[c : c + RANK_CHUNK])
        ranks.append(r)
        most = max(most, m)
    rank = np.sort(np.concatenate(ranks))
    # Aim one standard error (~0.005 at 2,000 pairs) above the target where the candidates allow,
    # so that the recall on other queries lands at the target rather than around it.
    needed = int(np.ceil(min(index.target_recall + RERANK_MARGIN, 1.0) * truth.size))
    if needed > len(rank):
        needed = int(np.ceil(index.target_recall * truth.size))
    if needed > len(rank):  # the target is out of reach even without a cut
        return max(16, most)
    r = int(rank[max(needed - 1, 0)]) + 1
    return min(max(16, -(-r // 8) * 8), max(16, most))


def _hamming_ranks(index, X, qrows, truth):
    """Hamming rank of each found true neighbour among its query's candidates (ties count half).

    Also returns the most candidates any query has.
    """
    n = len(X)
    Q = np.asarray(X[qrows], np.float32)
    qi, rows = index.candidates(Q, filtered=False)  # unique pairs, sorted by query then row
    keep = rows != qrows[qi]
    qi, rows = qi[keep], rows[keep]
    ham = index.hamming_distances(Q, qi, rows)
    pair = qi * np.int64(n) + rows
    want_q = np.repeat(np.arange(len(qrows)), truth.shape[1])
    want = want_q * np.int64(n) + truth.ravel()
    if not len(pair):
        return np.zeros(0), 1
    pos = np.minimum(np.searchsorted(pair, want), len(pair) - 1)
    found = pair[pos] == want
    return _rank_in_query(qi, ham, want_q, ham[pos])[found], int(np.bincount(qi).max())


def _rank_in_query(cand_q, cand_ham, q, h):
    """For each (query ``q``, Hamming distance ``h``): how many of its candidates are nearer.

    Candidates are given as (``cand_q``, ``cand_ham``); ties count half.
    """
    width = np.int64(int(max(cand_ham.max(initial=0), np.max(h, initial=0))) + 2)
    key = np.sort(cand_q * width + cand_ham)
    start = np.searchsorted(key, q * width)
    below = np.searchsorted(key, q * width + h) - start
    ties = np.searchsorted(key, q * width + h, side="right") - start - below
    return below + 0.5 * ties


def measure(index, X: np.ndarray, *, k: int, seed: int, holdout=None) -> tuple[float, float]:
    """Recall@k against exact search and mean candidates, for a fitted index (sampled self-queries).

    ``holdout`` = (rows, exact top-k rows) when already computed (:func:`tune` returns one).
    """
    qrows, truth = holdout if holdout is not None else (_sample(len(X), seed + 1), None)
    k = min(k, len(X) - 1)
    Q = np.asarray(X[qrows], np.float32)
    if truth is None:
        truth = exact_topk(X, Q, k, exclude=qrows)[1]
    cand = 0
    for c in range(0, len(qrows), RANK_CHUNK):
        qi, rows = index.candidates(Q[c : c + RANK_CHUNK], filtered=False)
        cand += int(np.sum(rows != qrows[c : c + RANK_CHUNK][qi]))
    cand = float(cand / len(qrows))
    found = index.kneighbors(Q, k + 1)[1]  # the query itself is among the results
    ids = index.ids_  # X is what the index was fitted on: row i holds ids_[i]
    rec = np.mean([len(set(f.tolist()) & set(ids[t].tolist())) / k for f, t in zip(found, truth)])
    return float(rec), cand
