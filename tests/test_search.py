import numpy as np

from lookalike import search
from lookalike.search import exact_topk


def _unit(x):
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def test_exact_topk_matches_brute_force_across_chunks(monkeypatch):
    rng = np.random.default_rng(0)
    db = _unit(rng.normal(size=(1000, 16)).astype(np.float32))
    q = _unit(rng.normal(size=(37, 16)).astype(np.float32))
    monkeypatch.setattr(search, "EXACT_CHUNK_ROWS", 128)
    monkeypatch.setattr(search, "QUERY_CHUNK", 10)
    s, i = exact_topk(db, q, 7)
    full = q @ db.T
    expected = np.argsort(-full, axis=1)[:, :7]
    assert (i == expected).all()
    assert np.allclose(s, np.take_along_axis(full, expected, axis=1), atol=1e-6)
    assert (np.diff(s, axis=1) <= 0).all()


def test_exact_topk_excludes_self_and_handles_small_n():
    rng = np.random.default_rng(1)
    db = _unit(rng.normal(size=(5, 8)).astype(np.float32))
    s, i = exact_topk(db, db, 10, exclude=np.arange(5))
    assert i.shape == (5, 4)
    assert not (i == np.arange(5)[:, None]).any()
    s, i = exact_topk(db[:0], db, 3)
    assert i.shape == (5, 0)
