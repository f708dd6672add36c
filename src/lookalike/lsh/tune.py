"""Choose LSH parameters from the collection's own vectors to reach a recall target.

For a sample of the indexed vectors used as queries (each excluding itself), compute
the exact top-k, then measure recall@k and the number of candidates for a grid of
settings, and keep the cheapest setting that reaches ``target_recall``. The expensive
part (projections/signatures) is computed once for the largest setting; smaller
settings use prefixes of it, so tuning costs a few builds, not one per setting.
"""

from __future__ import annotations

import logging
import time

import numpy as np

from ..search import exact_topk
from . import families, tables

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
# Give up on a setting once it returns more than this share of the collection.
MAX_CANDIDATE_SHARE = 0.3


def _sample(n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.sort(rng.choice(n, size=min(TUNE_QUERIES, n), replace=False))


def _recall(qi: np.ndarray, rows: np.ndarray, qrows: np.ndarray, truth: np.ndarray, n: int) -> tuple[float, float]:
    """Recall@k and mean candidates per query for unique candidate pairs."""
    notself = rows != qrows[qi]
    qi, rows = qi[notself], rows[notself]
    pair = qi * np.int64(n) + rows  # sorted: unique_pairs returns pairs in order
    want = (np.arange(len(truth))[:, None] * np.int64(n) + truth).ravel()
    pos = np.minimum(np.searchsorted(pair, want), max(len(pair) - 1, 0))
    found = int((pair[pos] == want).sum()) if len(pair) else 0
    return float(found / want.size), float(len(rows) / len(truth))


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


def tune(index, X: np.ndarray) -> dict:
    """Grid-search the unset parameters of ``index`` (an unfitted LSHIndex) on ``X``.

    Returns
    -------
    dict
        ``best`` (the chosen parameters with their recall, candidates and cost),
        ``trials`` (every setting measured) and ``seconds``.
    """
    t0 = time.perf_counter()
    n, dim = X.shape  # X may be a float16 memmap: read in blocks, never copied whole
    qrows = _sample(n, index.seed)
    k = min(index.k, n - 1)
    truth = exact_topk(X, X[qrows], k, exclude=qrows)[1]
    fn = {"hyperplane": _tune_hyperplane, "brp": _tune_brp, "minhash": _tune_minhash}[index.family]
    trials = fn(index, X, qrows, truth)
    best = _pick(trials, index.target_recall)
    log.info("LSH tuned in %.1f s: %s", time.perf_counter() - t0, best)
    return {"best": best, "trials": trials, "seconds": time.perf_counter() - t0, "queries": len(qrows)}


def _evaluate(keys, rows, pk, qrows, truth, n, bits):
    found = tables.lookup(keys, rows, pk, bits, max_pairs=TUNE_MAX_ENTRIES)
    if found is None:  # far too many candidates: as good as a full scan
        return 1.0, float(n)
    qi, r = found
    qi, r = tables.unique_pairs(qi, r, n)
    return _recall(qi, r, qrows, truth, n)


def _grid(values, fixed):
    return [v for v in values if fixed is None or v == fixed] or [fixed]


def _first_probe_per_pair(keys, rows, pk, n, bits):
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
    return pair[start], (combined[start] & ((1 << shift) - 1)).astype(np.int16)


def _tune_hyperplane(index, X, qrows, truth):
    n, dim = X.shape
    bits_grid = _grid(HYPERPLANE_BITS, index.n_bits)
    tables_grid = _grid(HYPERPLANE_TABLES, index.n_tables)
    probes_grid = _grid(HYPERPLANE_PROBES, index.n_probes)
    fam = families.Hyperplane(max(tables_grid), max(bits_grid), seed=index.seed).fit(X)
    proj_q = fam._project(np.asarray(X[qrows], np.float32))
    # Codes of the most bits; the K-bit codes are their low K bits (bit j = sign of plane j).
    codes_max = fam.keys(X)
    nq = len(qrows)
    want = (np.arange(nq)[:, None] * np.int64(n) + truth).ravel()
    self_pairs = np.arange(nq) * np.int64(n) + qrows
    trials = []
    best_cost = np.inf  # cheapest setting found so far that reaches the target
    for K in reversed(bits_grid):  # many bits first: few candidates, cheap to measure
        bits = tables.bucket_bits(K, n)
        codes_k = codes_max & np.uint64((1 << K) - 1)
        # Hamming bits of all tables, packed once per K; the first L tables are a bit prefix.
        packed_k = families.hamming_codes(codes_k, K) if index.rerank and max(tables_grid) * K >= \
            index._MIN_HAMMING_BITS else None
        keys, rows = tables.build(codes_k, bits)
        probes = [P for P in probes_grid if P <= 1 << min(K, families.PROBE_BITS)]
        pk_all = families.probe_from_projection(proj_q[:, :, :K], max(probes))
        for L in tables_grid:
            if _cost(0, L, 1, dim) >= best_cost:
                break
            p_cap = max([P for P in probes if _cost(0, L, P, dim) < best_cost] or [1])
            # Bound memory: expected (query, table, probe, row) entries of the lookup.
            per_probe = len(qrows) * L * n / 2.0**K
            p_cap = max([P for P in probes if P <= p_cap and P * per_probe <= TUNE_MAX_ENTRIES] or [1])
            pair, first = _first_probe_per_pair(keys, rows, pk_all[:, :L, :p_cap], n, bits)
            notself = ~np.isin(pair, self_pairs)
            pair, first = pair[notself], first[notself]
            pos = np.minimum(np.searchsorted(pair, want), max(len(pair) - 1, 0))
            truth_first = np.where(pair[pos] == want, first[pos], np.iinfo(np.int16).max) if len(pair) else \
                np.full(len(want), np.iinfo(np.int16).max)
            counts = np.bincount(first, minlength=max(probes) + 1).cumsum()
            hamming = index.rerank and L * K >= index._MIN_HAMMING_BITS
            ham = _pair_hamming(packed_k, _prefix_mask(codes_k.shape[1], L, K), pair, qrows, n) if hamming else None
            for P in [P for P in probes if P <= p_cap]:
                cand = float(counts[P - 1] / nq)
                rec = float((truth_first < P).mean())
                trial = {"n_bits": K, "n_tables": L, "n_probes": P, "recall": rec, "candidates": cand,
                         "cost": _cost(cand, L, P, dim, index.rerank if hamming else None)}
                if hamming and rec >= index.target_recall:
                    # the index keeps only the `rerank` candidates nearest in Hamming distance
                    trial = _with_hamming_cut(trial, index, pair, first < P, ham, want, nq, n, dim)
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


def _pair_hamming(packed, mask, pair, qrows, n):
    """Hamming distance over the masked hash bits between each (query, row) pair's query and row."""
    out = np.empty(len(pair), np.int32)
    for i in range(0, len(pair), 1 << 20):  # blocks bound the (pairs, words) temporaries
        p = pair[i : i + (1 << 20)]
        qi, r = p // n, p % n
        out[i : i + len(p)] = np.bitwise_count(
            (np.take(packed, r, axis=0) ^ np.take(packed, qrows[qi], axis=0)) & mask).sum(axis=1, dtype=np.int32)
    return out


def _with_hamming_cut(trial, index, pair, mask, ham, want, nq, n, dim):
    """Recall after keeping the ``rerank`` Hamming-nearest candidates per query; doubles
    ``rerank`` until the target is met (or nothing is cut).
    """
    p, h = pair[mask], ham[mask]
    qi = p // n
    order = np.lexsort((h, qi))
    p, qi = p[order], qi[order]
    rank = np.arange(len(p)) - np.searchsorted(qi, qi)
    rerank = index.rerank
    while True:
        kept = np.sort(p[rank < rerank])
        pos = np.minimum(np.searchsorted(kept, want), max(len(kept) - 1, 0))
        rec = float((kept[pos] == want).mean()) if len(kept) else 0.0
        if rec >= index.target_recall or rerank >= trial["candidates"]:
            break
        rerank *= 2
    cost = _cost(trial["candidates"], trial["n_tables"], trial["n_probes"], dim, rerank)
    return {**trial, "recall": rec, "recall_before_cut": trial["recall"], "rerank": rerank, "cost": cost}


def _tune_brp(index, X, qrows, truth):
    n, dim = X.shape
    proj_grid = _grid(BRP_PROJECTIONS, index.n_bits)
    tables_grid = _grid(BRP_TABLES, index.n_tables)
    base = families.BucketedRandomProjection(max(tables_grid), max(proj_grid), seed=index.seed, bucket_length=1.0)
    base.fit(X)
    proj = (X - base.mean_) @ base.units_
    std = float(proj.std()) or 1.0
    widths = [index.bucket_length] if index.bucket_length else [w * std for w in BRP_WIDTHS]
    proj = proj.reshape(n, max(tables_grid), max(proj_grid))
    unit_offsets = base.offsets_.reshape(max(tables_grid), max(proj_grid))  # uniform in [0, 1)
    trials = []
    for r in widths:
        for K in proj_grid:
            h = np.floor((proj[:, :, :K] + unit_offsets[:, :K] * r) / r).astype(np.int64)
            codes = families._mix(h)
            bits = tables.bucket_bits(None, n)
            keys, rows = tables.build(codes, bits)
            for L in tables_grid:
                pk = codes[qrows, :L, None]
                rec, cand = _evaluate(keys, rows, pk, qrows, truth, n, bits)
                trials.append({"n_bits": K, "n_tables": L, "bucket_length": r, "recall": rec, "candidates": cand,
                               "cost": _cost(cand, L, 1, dim)})
                if rec >= index.target_recall or cand > MAX_CANDIDATE_SHARE * n:
                    break
    return trials


def _tune_minhash(index, X, qrows, truth):
    n, dim = X.shape
    rows_grid = _grid(MINHASH_ROWS, index.n_bits)
    tables_grid = _grid(MINHASH_TABLES, index.n_tables)
    fam = families.MinHash(max(tables_grid), max(rows_grid), seed=index.seed, top_dims=index.top_dims).fit(X)
    sig = np.concatenate([fam.signature(np.asarray(X[i : i + 8192], np.float32)) for i in range(0, n, 8192)])
    sig = sig.reshape(n, max(tables_grid), max(rows_grid))
    trials = []
    for K in rows_grid:
        codes = families._mix(sig[:, :, :K])
        bits = tables.bucket_bits(None, n)
        keys, rows = tables.build(codes, bits)
        for L in tables_grid:
            rec, cand = _evaluate(keys, rows, codes[qrows, :L, None], qrows, truth, n, bits)
            trials.append({"n_bits": K, "n_tables": L, "recall": rec, "candidates": cand, "cost": _cost(cand, L, 1, dim)})
            if rec >= index.target_recall or cand > MAX_CANDIDATE_SHARE * n:
                break
    return trials


def measure(index, X: np.ndarray, *, k: int, seed: int) -> tuple[float, float]:
    """Recall@k against exact search and mean candidates, for a fitted index (sampled self-queries)."""
    qrows = _sample(len(X), seed + 1)  # other queries than tuning used
    k = min(k, len(X) - 1)
    Q = np.asarray(X[qrows], np.float32)
    truth = exact_topk(X, Q, k, exclude=qrows)[1]
    qi, rows = index.candidates(Q, filtered=False)
    cand = float(np.sum(rows != qrows[qi]) / len(qrows))
    found = index.kneighbors(Q, k + 1)[1]  # the query itself is among the results
    ids = index._ids
    rec = np.mean([len(set(f.tolist()) & set(ids[t].tolist())) / k for f, t in zip(found, truth)])
    return float(rec), cand
