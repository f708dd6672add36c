"""Banding plan for the Spark similarity join (numpy only: no Spark needed)."""

import numpy as np

from lookalike.datasets import clustered_vectors
from lookalike.dupes import exact_pairs
from lookalike.spark.banding import found_probability, pairs_in_sorted, plan_bands


def banded(X, plan, threshold):
    n = len(X)
    K = plan.keys(X)
    band = np.repeat(np.arange(plan.n_bands), n)
    key = K.T.ravel()
    rid = np.tile(np.arange(n), plan.n_bands)
    o = np.lexsort((key, band))
    return pairs_in_sorted(band[o], key[o], rid[o], X[rid[o]], K[rid[o]], threshold)


def test_plan_reaches_target_and_pairs_are_exact():
    X = clustered_vectors(3000, 256, seed=1, spread=0.25)
    rng = np.random.default_rng(0)
    plan = plan_bands(X[rng.choice(3000, 1000, replace=False)], len(X), 0.9, target_recall=0.95)
    assert plan.est_recall >= 0.95
    assert found_probability(plan.p_bit, plan.n_bits, plan.n_bands) == plan.est_recall
    ta, tb, ts = exact_pairs(X, 0.9)
    assert len(ta) > 100
    a, b, s, compared = banded(X, plan, 0.9)
    truth = set(zip(ta.tolist(), tb.tolist()))
    got = list(zip(a.tolist(), b.tolist()))
    assert len(got) == len(set(got))  # each pair from its first colliding band only
    assert set(got) <= truth
    assert len(set(got) & truth) / len(truth) >= 0.95
    assert compared < len(X) * (len(X) - 1) / 2  # fewer checks than all pairs
    ref = dict(zip(zip(ta.tolist(), tb.tolist()), ts.tolist()))
    assert max(abs(ref[p] - v) for p, v in zip(got, s.tolist())) < 1e-5


def test_fixed_plan_is_used_as_given():
    X = clustered_vectors(500, 64, seed=2)
    plan = plan_bands(X, 500, 0.8, n_bands=5, n_bits=7)
    assert (plan.n_bands, plan.n_bits) == (5, 7) and plan.planes.shape == (64, 35)
    keys = plan.keys(X)
    assert keys.shape == (500, 5) and keys.max() < 2**7


def test_higher_threshold_needs_fewer_comparisons():
    X = clustered_vectors(2000, 128, seed=5)
    lo = plan_bands(X[:800], 2000, 0.8)
    hi = plan_bands(X[:800], 2000, 0.97)
    assert hi.est_candidates < lo.est_candidates
