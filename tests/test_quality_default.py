"""Issue 15: `search` re-ranks by default (DBA + QE over a shortlist), `dupes` never does."""

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from lookalike import expansion
from lookalike.collection import Collection
from lookalike.datasets import clustered_vectors, write_spark_output
from lookalike.evaluate import class_retrieval, database_augment, score_near_duplicates
from lookalike.expansion import DEFAULT_DBA, DEFAULT_EXPAND, RAW_WEIGHT, rerank
from lookalike.search import exact_topk


def _unit(x):
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def reference_rerank(X, q, k, *, exclude=-1, dba=DEFAULT_DBA, expand=DEFAULT_EXPAND, raw_weight=RAW_WEIGHT):
    """Full DBA + QE + blend, written out plainly for one query over every row (no shortlist)."""
    n = len(X)
    A = np.empty_like(X)
    for i in range(n):  # alpha-DBA: each row + its dba nearest other rows, weighted by cosine^3
        s = X @ X[i]
        s[i] = -np.inf
        nb = np.argsort(-s, kind="stable")[:dba]
        A[i] = X[i] + ((np.maximum(s[nb], 0) ** 3)[:, None] * X[nb]).sum(0)
    A = _unit(A)
    s = A @ q
    if exclude >= 0:
        s[exclude] = -np.inf
    top = np.argsort(-s, kind="stable")[:expand]
    Q = _unit(q + ((np.maximum(s[top], 0) ** 3)[:, None] * A[top]).sum(0))
    plain = X @ q
    if exclude >= 0:
        plain[exclude] = -np.inf
    final = raw_weight * plain + (1 - raw_weight) * (A @ Q)
    final[np.lexsort((np.arange(n), -plain))[0]] = np.inf  # the plain best match stays first
    if exclude >= 0:
        final[exclude] = -np.inf
    return np.lexsort((np.arange(n), -final))[:k]


def test_rerank_equals_the_reference_computation_on_seeded_data():
    X = clustered_vectors(300, 32, n_clusters=12, seed=4)
    Q = clustered_vectors(5, 32, n_clusters=12, seed=5)
    rows, scores = rerank(X, Q, 10, shortlist=300)  # a shortlist of everything: exactly full DBA + QE
    for q, r, s in zip(Q, rows, scores):
        assert r.tolist() == reference_rerank(X, q, 10).tolist()
        assert np.allclose(s, X[r] @ q, atol=1e-5), "scores are the plain cosines"
    # leave-one-out, as search(exclude_self=True) and eval do
    rows, _ = rerank(X, X[:3], 5, shortlist=300, exclude=np.arange(3))
    for i in range(3):
        assert rows[i].tolist() == reference_rerank(X, X[i], 5, exclude=i).tolist()
    # the shortlist keeps the best candidates of the full re-ranking (mostly the same top 10)
    short, _ = rerank(X, Q, 10)
    full, _ = rerank(X, Q, 10, shortlist=300)
    assert np.mean([len(set(a) & set(b)) for a, b in zip(short.tolist(), full.tolist())]) >= 9


def test_rerank_with_precomputed_dba_matches_computing_it_per_shortlist():
    X = clustered_vectors(400, 24, n_clusters=10, seed=1)
    Q = clustered_vectors(8, 24, n_clusters=10, seed=2)
    a = rerank(X, Q, 10)
    b = rerank(X, Q, 10, augmented=database_augment(X, DEFAULT_DBA))
    assert (a[0] == b[0]).all() and np.allclose(a[1], b[1], atol=1e-6)
    # expand=0, dba=0, raw_weight=1: plain cosine ranking
    plain = rerank(X, Q, 10, expand=0, dba=0, raw_weight=1.0)[0]
    assert (plain == exact_topk(X, Q, 10)[1]).all()


def test_rerank_on_tiny_collections():
    X = clustered_vectors(3, 8, n_clusters=2, seed=0)
    assert rerank(X[:1], X[:1], 5)[0].tolist() == [[0]]
    assert rerank(X[:1], X[:1], 5, exclude=np.array([0]))[0].shape == (1, 0)
    assert rerank(X, X[:1], 5, exclude=np.array([0]))[0].tolist()[0] in ([1, 2], [2, 1])
    assert database_augment(X[:1], 10).shape == (1, 8)


def test_rerank_only_in_its_size_range():
    assert not expansion.reranks(12) and not expansion.reranks(999)
    assert expansion.reranks(1_000) and expansion.reranks(20_000) and not expansion.reranks(20_001)


@pytest.fixture
def mid_collection(tmp_path):
    """A 1,200-image collection (synthetic vectors imported as a Spark output): in re-ranking range."""
    X = clustered_vectors(1_200, n_clusters=40, seed=7)
    src = write_spark_output(tmp_path / "spark", 1_200, vectors=X,
                             paths=lambda i: f"/data/c{i % 40}/{i:05d}.jpg")
    col = Collection.create(tmp_path / "db")
    col.import_parquet(src)
    return Collection.open(tmp_path / "db"), X


def test_search_reranks_by_default_and_exact_turns_it_off(mid_collection):
    col, _ = mid_collection
    X = np.asarray(col.embeddings, np.float32)  # as stored (float16)
    Q = clustered_vectors(4, n_clusters=40, seed=8)
    assert col.reranks() and col.resolve_method("auto") == "rerank" and not col.reranks("exact")
    default = col.search_vectors(Q, 10)
    want, _ = rerank(X, Q, 10)
    for hits, rows, q in zip(default, want, Q):
        assert [h.id for h in hits] == [int(col.ids[r]) for r in rows]
        assert np.allclose([h.score for h in hits], X[rows] @ q, atol=1e-5)
    assert [h.id for h in col.search(Q[0], k=10)] == [h.id for h in default[0]]
    plain = exact_topk(X, Q, 10)[1]
    got = col.search_vectors(Q, 10, method="exact")
    assert [[h.id for h in hs] for hs in got] == [[int(col.ids[r]) for r in rows] for rows in plain]
    # what the CLI and the server do: resolve "auto" first, pass the result on (expand 0 = no flag)
    got = col.search_vectors(Q, 10, method=col.resolve_method("auto"), expand=0)
    assert [[h.id for h in hs] for hs in got] == [[h.id for h in hs] for hs in default]
    # search --expand 3: the re-ranking with 3 expansion neighbours
    want3, _ = rerank(X, Q, 10, expand=3)
    got = col.search_vectors(Q, 10, expand=3)
    assert [[h.id for h in hs] for hs in got] == [[int(col.ids[r]) for r in rows] for rows in want3]
    assert [[h.id for h in hs] for hs in default] != [[int(col.ids[r]) for r in rows] for rows in plain]
    # leaving the query out (search exclude_self), as in leave-one-out eval
    got = col.search_vectors(X[:2], 5, exclude_rows=np.array([0, 1]))
    want, _ = rerank(X, X[:2], 5, exclude=np.array([0, 1]))
    assert [[h.id for h in hs] for hs in got] == [[int(col.ids[r]) for r in rows] for rows in want]


def test_default_search_uses_stored_dba_vectors(mid_collection):
    col, _ = mid_collection
    col.build_dba(4)
    X = np.asarray(col.embeddings, np.float32)
    Q = clustered_vectors(3, n_clusters=40, seed=9)
    want, _ = rerank(X, Q, 10, augmented=np.asarray(col.search_matrix))
    assert [[h.id for h in hs] for hs in col.search_vectors(Q, 10)] == \
        [[int(col.ids[r]) for r in rows] for rows in want]


def test_dupes_never_rerank(mid_collection):
    col, _ = mid_collection
    X = np.asarray(col.embeddings, np.float32)
    for g in col.duplicates(0.97)[:20]:
        for a, b, s in g.pairs:
            assert s == pytest.approx(float(X[col.row_of_id(a)] @ X[col.row_of_id(b)]), abs=1e-5)


def test_eval_measures_what_search_returns_by_default():
    X = clustered_vectors(1_100, 32, n_clusters=30, seed=3)
    labels = [f"c{i % 30}" for i in range(1_100)]
    r = class_retrieval(X, labels, 10)
    assert r["reranked"] and (r["expand"], r["dba"]) == (DEFAULT_EXPAND, DEFAULT_DBA)
    rows, _ = rerank(X, X, 10, exclude=np.arange(len(X)))
    lab = np.asarray(labels)
    assert r["p_at_k"] == pytest.approx(float((lab[rows] == lab[:, None]).mean()))
    assert r["p_at_1"] == pytest.approx(float((lab[rows[:, 0]] == lab).mean()))
    plain = class_retrieval(X, labels, 10, expand=0)
    assert not plain["reranked"] and plain["expand"] == 0
    # a small collection: plain cosine, as search does there
    assert not class_retrieval(X[:200], labels[:200], 10)["reranked"]
    # the near-duplicate suite ranks copies as search does (found / precision stay raw cosines)
    rows = np.arange(0, 1_100, 110)
    edits = {"noise": _unit(X[rows] + 0.05 * np.random.default_rng(0).normal(size=(len(rows), 32)))}
    nd = score_near_duplicates(X, rows, edits, k=10)
    raw = score_near_duplicates(X, rows, edits, k=10, reranked=False)
    assert nd["reranked"] and not raw["reranked"]
    assert nd["edits"]["noise"]["found"] == raw["edits"]["noise"]["found"]


def test_collection_does_not_import_evaluate():
    code = ("import sys, lookalike.collection, lookalike.expansion; "
            "assert 'lookalike.evaluate' not in sys.modules, 'collection imports evaluate'")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).parent)
