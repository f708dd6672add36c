"""Every approximate result is compared with exact search on seeded synthetic vectors."""

import numpy as np
import pytest

from lookalike.datasets import clustered_vectors
from lookalike.evaluate import recall_at_k
from lookalike.lsh import LSHIndex
from lookalike.search import exact_topk

N, D = 4000, 128


@pytest.fixture(scope="module")
def data():
    A = clustered_vectors(N + 100, D, n_clusters=40, intrinsic_dim=16, seed=0)
    return A[:N], A[N:]


@pytest.fixture(scope="module")
def fitted(data):
    X, _ = data
    return {fam: LSHIndex(family=fam, target_recall=0.95).fit(X) for fam in ("hyperplane", "brp", "minhash")}


@pytest.mark.parametrize("family", ["hyperplane", "brp", "minhash"])
def test_tuned_recall_at_10_vs_exact(data, fitted, family):
    X, Q = data
    index = fitted[family]
    _, truth = exact_topk(X, Q, 10)
    scores, ids = index.kneighbors(Q, k=10)
    rec = recall_at_k(ids, truth)
    assert rec >= 0.93, f"{family}: recall@10 {rec:.3f} with {index.params()}"
    assert index.recall_ >= 0.93
    # candidates are re-ranked exactly: returned scores are the true cosines, sorted
    ok = ids >= 0
    true_scores = np.einsum("qkd,qd->qk", X[np.where(ok, ids, 0)], Q)
    assert np.allclose(scores[ok], true_scores[ok], atol=1e-5)
    assert (np.diff(np.where(ok, scores, -9), axis=1) <= 1e-6).all()
    # and it must do less work than a full scan
    assert index.candidates_ < 0.5 * N


def test_self_query_excludes_itself(data, fitted):
    X, _ = data
    index = fitted["hyperplane"]
    scores, ids = index.kneighbors(None, k=5)
    assert ids.shape == (N, 5)
    assert not (ids == np.arange(N)[:, None]).any()
    _, truth = exact_topk(X, X, 5, exclude=np.arange(N))
    assert recall_at_k(ids, truth) >= 0.93


def test_fixed_parameters_are_used_as_given(data):
    X, Q = data
    index = LSHIndex(n_tables=6, n_bits=10, n_probes=8).fit(X)
    assert (index.n_tables_, index.n_bits_, index.n_probes_) == (6, 10, 8)
    assert index.tuning_ is None
    _, truth = exact_topk(X, Q, 10)
    fewer = recall_at_k(index.kneighbors(Q, 10, n_probes=1)[1], truth)
    more = recall_at_k(index.kneighbors(Q, 10, n_probes=32)[1], truth)
    assert more > fewer, "multi-probe must raise recall"


def test_add_and_remove_match_a_fresh_build(data):
    X, Q = data
    ids = np.arange(N) + 1000
    full = LSHIndex(n_tables=8, n_bits=10, n_probes=8, seed=3).fit(X, ids)
    part = LSHIndex(n_tables=8, n_bits=10, n_probes=8, seed=3).fit(X[: N // 2], ids[: N // 2])
    part.family_ = full.family_  # same hash functions, so results must agree exactly
    from lookalike.lsh import tables

    part._keys, part._rows = tables.build(full.family_.keys(X[: N // 2]), part.bucket_bits_)
    part.add(X[N // 2 :], ids[N // 2 :])
    s1, i1 = full.kneighbors(Q, 10)
    s2, i2 = part.kneighbors(Q, 10)
    assert np.array_equal(i1, i2) and np.allclose(s1, s2)
    # remove: the removed ids never come back
    gone = ids[:500]
    assert part.remove(gone) == 500
    assert len(part) == N - 500
    _, i3 = part.kneighbors(Q, 10)
    assert not np.isin(i3, gone).any()
    # re-adding an existing id needs allow_existing
    with pytest.raises(ValueError, match="allow_existing"):
        part.add(X[600:601], ids[600:601])
    part.add(X[600:601], ids[600:601], allow_existing=True)
    assert len(part) == N - 500


def test_radius_neighbors_vs_exact(data, fitted):
    X, Q = data
    index = fitted["hyperplane"]
    threshold = 0.8
    res = index.radius_neighbors(Q, threshold)
    exact = Q @ X.T
    found = total = 0
    for (scores, ids), row in zip(res, exact):
        want = set(np.nonzero(row >= threshold)[0].tolist())
        assert (scores >= threshold).all() and set(ids.tolist()) <= want
        found += len(want & set(ids.tolist()))
        total += len(want)
    assert total > 0 and found / total >= 0.9


def test_save_load_round_trip(tmp_path, data, fitted):
    X, Q = data
    index = fitted["hyperplane"]
    index.save(tmp_path / "i.npz")
    back = LSHIndex.load(tmp_path / "i.npz")
    s1, i1 = index.kneighbors(Q, 10)
    s2, i2 = back.kneighbors(Q, 10)
    assert np.array_equal(i1, i2) and np.allclose(s1, s2)
    assert back.params() == index.params()
    blob = index.to_bytes()
    back2 = LSHIndex.load(blob, vectors=X)
    assert np.array_equal(back2.kneighbors(Q, 10)[1], i1)
    with pytest.raises(ValueError, match="no vectors"):
        LSHIndex.load(blob)


@pytest.mark.parametrize("family", ["brp", "minhash"])
def test_other_families_round_trip(tmp_path, data, fitted, family):
    X, Q = data
    blob = fitted[family].to_bytes()
    back = LSHIndex.load(blob, vectors=X)
    assert np.array_equal(back.kneighbors(Q, 10)[1], fitted[family].kneighbors(Q, 10)[1])


def test_errors_say_what_was_expected(data):
    X, _ = data
    with pytest.raises(ValueError, match="expected one of"):
        LSHIndex(family="simhash").fit(X)
    with pytest.raises(ValueError, match="2-D"):
        LSHIndex().fit(X[0])
    with pytest.raises(RuntimeError, match="fit"):
        LSHIndex().kneighbors(X[:1])
    with pytest.raises(ValueError, match="unique"):
        LSHIndex(n_tables=2, n_bits=4, n_probes=1).fit(X[:3], ids=[1, 1, 2])
    index = LSHIndex(n_tables=2, n_bits=4, n_probes=1).fit(X)
    with pytest.raises(ValueError, match="dimensions"):
        index.kneighbors(np.ones((1, 3)))


@pytest.mark.parametrize("family", ["hyperplane", "brp", "minhash"])
def test_compiled_single_query_path_matches_numpy_batch_path(data, fitted, family):
    """One query runs compiled, a batch in numpy: the same candidates, the same quality."""
    X, Q = data
    index = fitted[family]
    fast_sets = [set(index.candidates(q[None], filtered=False)[1].tolist()) for q in Q[:30]]
    qi, rows = index.candidates(Q[:30], filtered=False)  # the numpy path
    assert fast_sets == [set(rows[qi == j].tolist()) for j in range(30)]  # identical before the Hamming cut
    fast = np.vstack([index.kneighbors(q[None], 10)[1] for q in Q[:30]])
    qi, rows = index.candidates(Q[:30])  # numpy path with the Hamming cut (hyperplane)
    slow = np.full((30, 10), -1)
    for j in range(30):
        r = rows[qi == j]
        top = r[np.argsort(-(X[r] @ Q[j]), kind="stable")[:10]]
        slow[j, : len(top)] = top
    _, truth = exact_topk(X, Q[:30], 10)
    # ties in Hamming distance at the cut may keep different rows: compare quality, not identity
    assert abs(recall_at_k(fast, truth) - recall_at_k(slow, truth)) <= 0.02


def test_query_path_is_chosen_at_fit_and_load(data, fitted):
    from lookalike.lsh import query

    X, _ = data
    cut = LSHIndex(n_tables=16, n_bits=10, n_probes=4, rerank=32).fit(X)  # 160 bits: Hamming cut on
    plain = LSHIndex(n_tables=4, n_bits=10, n_probes=4).fit(X)  # 40 bits: no cut
    assert isinstance(cut._query, query.HammingPath) and cut._codes is not None
    assert type(plain._query) is query.HyperplanePath and plain._codes is None
    assert type(fitted["brp"]._query) is query.KeyPath
    for index in (cut, plain, fitted["minhash"]):
        back = LSHIndex.load(index.to_bytes(include_vectors=True))
        assert type(back._query) is type(index._query)
    with pytest.raises(ValueError, match="no Hamming codes"):
        plain.hamming_distances(X[:1], np.zeros(1, np.int64), np.zeros(1, np.int64))


def test_compiled_probes_match_numpy_probes():
    from lookalike.lsh import _kernels, families, tables

    rng = np.random.default_rng(3)
    for K, P in [(14, 8), (10, 64), (4, 32), (16, 1)]:
        proj = rng.standard_normal((1, 6, K)).astype(np.float32)
        want = tables.bucket_of(families.probe_from_projection(proj, P)[0], 12)
        got, own = _kernels._probe_buckets(proj[0], P, families.PROBE_BITS, 12)
        assert [sorted(r) for r in got.tolist()] == [sorted(r) for r in want.tolist()]
        assert own.tolist() == families.pack_bits(proj[0] > 0).tolist()
        packed = families.hamming_codes(own[None], K)[0]
        assert _kernels._pack_query(own, K, len(packed)).tolist() == packed.tolist()


def test_bit_packing_layouts():
    from lookalike.lsh import families

    bits = np.random.default_rng(5).random((7, 3, 13)) > 0.5
    keys = families.pack_bits(bits)
    want = (bits * (1 << np.arange(13))).sum(axis=-1)
    assert keys.tolist() == want.tolist()
    assert families.pack_hamming(bits).tolist() == families.hamming_codes(keys, 13).tolist()


def test_batch_queries_match_single_queries(data):
    X, Q = data
    index = LSHIndex(n_tables=16, n_bits=10, n_probes=4, rerank=32).fit(X)  # 160 bits: Hamming cut on
    assert index._codes is not None
    bs, bi = index.kneighbors(Q, 10)
    singles = [index.kneighbors(q[None], 10) for q in Q]
    ss, si = np.vstack([s for s, _ in singles]), np.vstack([i for _, i in singles])
    assert np.allclose(bs, ss, atol=1e-5)
    assert (bi == si).mean() >= 0.99  # equal up to the order of equal scores


def test_format_1_files_still_load(data):
    """Version 1 stored the Hamming codes word-major; loading transposes them."""
    import io
    import json

    X, Q = data
    index = LSHIndex(n_tables=16, n_bits=10, n_probes=4, rerank=32).fit(X)
    arrays = dict(np.load(io.BytesIO(index.to_bytes(include_vectors=True))))
    meta = json.loads(bytes(arrays["meta"]).decode())
    meta["format_version"] = 1
    arrays["meta"] = np.frombuffer(json.dumps(meta).encode(), np.uint8)
    arrays["codes"] = np.ascontiguousarray(arrays["codes"].T)
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    old = LSHIndex.load(buf.getvalue())
    assert (old.kneighbors(Q, 10)[1] == index.kneighbors(Q, 10)[1]).all()
