"""The million-image storage (issue 12): segments, tombstones, merges, migration, streaming import."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import synthetic_image

from lookalike import Collection
from lookalike.collection import merge
from lookalike.datasets import clustered_vectors, write_spark_output
from lookalike.search import exact_topk

FIXTURE = Path(__file__).parent / "fixtures"


def _manifest(db: Path) -> dict:
    return json.loads((db / "manifest.json").read_text())


def test_a_format1_collection_opens_and_migrates_at_its_first_write(tmp_path, image_folder):
    db = tmp_path / "old"
    shutil.copytree(FIXTURE / "format1-collection", db)
    vectors = np.load(FIXTURE / "format1-vectors.npy")
    paths = (FIXTURE / "format1-paths.txt").read_text().splitlines()
    col = Collection.open(db)
    assert col.manifest["format_version"] == 1 and len(col) == 6 and len(col.errors) == 1
    assert col.paths == paths and np.array_equal(np.asarray(col.embeddings), vectors)
    assert col.search(vectors[2], k=1)[0].path == paths[2]
    ids = dict(zip(col.paths, col.ids.tolist()))
    r = col.index(image_folder)  # the first write migrates
    assert r.added == 12
    m = _manifest(db)
    assert m["format_version"] == 2 and m["dtype"] == "float32" and m["count"] == 18
    assert not any(n.startswith(("meta-", "embeddings-")) for n in os.listdir(db)), "format-1 files left"
    again = Collection.open(db)
    assert len(again) == 18 and len(again.errors) == 1
    for p, v in zip(paths, vectors):
        row = again.paths.index(p)
        assert again.ids[row] == ids[p] and np.array_equal(again.embeddings[row], v)
    assert again.verify()


def test_each_small_update_writes_only_its_rows_and_merges_keep_segments_few(tmp_path):
    db = tmp_path / "db"
    col = Collection.create(db)
    folder = tmp_path / "p"
    folder.mkdir()
    sizes = []
    for i in range(14):
        synthetic_image(i).save(folder / f"{i:02d}.jpg")
        before = {f.name for f in db.iterdir()}
        col.index(folder)
        new = [f for f in db.iterdir() if f.name not in before and f.name != "manifest.json"]
        sizes.append(sum(f.stat().st_size for f in new))
        assert len(col.segments) <= merge.MAX_SMALL + 1, col.segments
    assert len(col) == 14
    # an update of one image writes one small segment (a merge rewrites only small segments)
    emb_bytes = 1280 * 2
    assert min(sizes) < 3 * emb_bytes + 20_000, sizes
    ref = np.asarray(col.embeddings)
    Q = ref[[0, 5, 13]]
    before = [[h.path for h in hits] for hits in col.search_vectors(Q, 5)]
    ids = dict(zip(col.paths, col.ids.tolist()))
    col.maintain(max_segments=1)
    assert len(col.segments) == 1
    after = Collection.open(db)
    assert [[h.path for h in hits] for hits in after.search_vectors(Q, 5)] == before
    assert dict(zip(after.paths, after.ids.tolist())) == ids, "merges keep ids"


def test_tiered_policy_plans_merges_by_tier():
    class S:
        def __init__(self, rows, live=None):
            self.rows, self.live = rows, rows if live is None else live

    small = [S(10) for _ in range(merge.MAX_SMALL + 1)]
    assert merge.plan(small) == [list(range(merge.MAX_SMALL + 1))]
    tier1 = [S(merge.FLOOR_ROWS * 2) for _ in range(merge.SEGMENTS_PER_TIER)]
    assert merge.plan(tier1) == [list(range(merge.SEGMENTS_PER_TIER))]
    assert merge.plan(tier1[:-1]) == []
    assert merge.plan([S(100_000, live=50_000), S(100_000)]) == [[0]]  # too many deletes: rewritten
    huge = [S(merge.MAX_SEGMENT_ROWS) for _ in range(3)]
    assert merge.plan(huge) == []


def test_streaming_import_into_segments_then_reimport_keeps_ids(tmp_path, monkeypatch):
    monkeypatch.setattr(merge, "MAX_SEGMENT_ROWS", 1_000)
    X = clustered_vectors(2_500, seed=3)
    src = write_spark_output(tmp_path / "spark", 2_500, vectors=X, paths=lambda i: f"/data/d{i % 7}/{i:05d}.jpg")
    col = Collection.create(tmp_path / "db")
    r = col.import_parquet(src)
    assert (r.added, r.updated) == (2_500, 0)
    assert [s["rows"] for s in col.segments] == [1_000, 1_000, 500]
    got = dict(zip(col.paths, np.asarray(col.embeddings)))
    assert np.abs(got["/data/d3/00003.jpg"] - X[3]).max() < 1e-3  # float16 storage
    assert set(col.labels) == {f"d{i}" for i in range(7)}
    ids = dict(zip(col.paths, col.ids.tolist()))
    # exact search over segments == exact search over the input matrix
    truth = exact_topk(X, X[:5], 10)[1]
    hits = col.search_vectors(X[:5], 10, method="exact")
    assert [[int(Path(h.path).stem) for h in hs] for hs in hits] == truth.tolist()
    r = Collection.open(tmp_path / "db").import_parquet(src)
    assert (r.added, r.updated) == (0, 2_500)
    again = Collection.open(tmp_path / "db")
    assert len(again) == 2_500 and dict(zip(again.paths, again.ids.tolist())) == ids


def test_lsh_over_segments_matches_exact_search(tmp_path, monkeypatch):
    from lookalike.collection import artifacts

    monkeypatch.setattr(merge, "MAX_SEGMENT_ROWS", 3_000)
    monkeypatch.setattr(artifacts, "LSH_MIN_SEGMENT", 1_000)
    X = clustered_vectors(7_000, seed=5)
    src = write_spark_output(tmp_path / "spark", 7_000, vectors=X)
    col = Collection.create(tmp_path / "db", dtype="float32")
    col.import_parquet(src)
    assert col.manifest["lsh"] and col.resolve_method("lsh") == "lsh"  # kept by the policy (auto: re-ranks at 7,000)
    summary = col.lsh_summary()
    assert summary["indexed_segments"] == 3 and summary["recall"] >= 0.9
    rng = np.random.default_rng(0)
    q = X[rng.choice(7_000, 100, replace=False)]
    truth = exact_topk(X, q, 10)[1]
    found = col.lsh.kneighbors(q, 10)[1]
    rows = {int(i): r for r, i in enumerate(col.ids)}  # one import keeps the input's order: row r is X[r]
    recall = np.mean([len({rows[i] for i in f if i >= 0} & set(t.tolist())) / 10 for f, t in zip(found, truth)])
    assert recall >= 0.9, recall
    rec, _ = col.lsh.measure(k=10)
    assert rec >= 0.9


@pytest.mark.slow
def test_sigkill_during_a_merge_leaves_the_collection_loadable(tmp_path):
    X = clustered_vectors(3_000, seed=1)
    db = tmp_path / "db"
    col = Collection.create(db, dtype="float32")
    for b in range(6):  # 6 small segments, no merge yet (import does not hit the small-tier limit per call)
        src = write_spark_output(tmp_path / f"s{b}", 500, vectors=X[b * 500 : (b + 1) * 500],
                                 paths=lambda i, b=b: f"/data/{b}/{i}.jpg")
        Collection.open(db).import_parquet(src, lsh=False)
    ref = {p: v for p, v in zip(Collection.open(db).paths, np.asarray(Collection.open(db).embeddings))}
    assert len(ref) == 3_000
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[1] / "src"))
    rng = np.random.default_rng(0)
    for _ in range(3):
        proc = subprocess.Popen([sys.executable, "-m", "lookalike", "compact", "--db", str(db), "--max-segments",
                                 "1"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(float(rng.uniform(0.3, 2.0)))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        col = Collection.open(db)
        assert col.verify()
        assert len(col) == 3_000 and len(set(col.paths)) == 3_000
        got = dict(zip(col.paths, np.asarray(col.embeddings)))
        assert all(np.array_equal(got[p], v) for p, v in ref.items())


def test_rename_keeps_ids_and_embeddings_without_embedding_again(tmp_path, image_folder):
    db = tmp_path / "db"
    col = Collection.create(db)
    col.index(image_folder)
    src = image_folder / "cats" / "img_01.jpg"
    dst = image_folder / "moved" / "renamed.jpg"
    dst.parent.mkdir()
    before = col.embeddings[col.paths.index(str(src))]
    image_id = int(col.ids[col.paths.index(str(src))])
    src.rename(dst)
    assert col.rename({src: dst, image_folder / "never.jpg": tmp_path / "x.jpg"}) == 1
    again = Collection.open(db)
    row = again.paths.index(str(dst))
    assert str(src) not in again.paths and len(again) == 12
    assert int(again.ids[row]) == image_id and np.array_equal(again.embeddings[row], before)
    assert again.labels[row] == "moved"
    r = again.index(image_folder)
    assert (r.added, r.updated, r.removed) == (0, 0, 0), "the re-pointed file is seen as unchanged"


def test_near_duplicate_pairs_over_segments_match_exact_search(tmp_path, monkeypatch):
    from lookalike.collection import artifacts
    from lookalike.dupes import find_pairs

    monkeypatch.setattr(merge, "MAX_SEGMENT_ROWS", 2_000)
    monkeypatch.setattr(artifacts, "LSH_MIN_SEGMENT", 1_000)
    rng = np.random.default_rng(4)
    X = clustered_vectors(5_000, seed=9)
    # 150 planted near copies (cosine ~0.95-0.99) of random images, spread over all segments
    src = rng.choice(5_000, 150, replace=False)
    noise = rng.standard_normal((150, X.shape[1])).astype(np.float32)
    copies = X[src] + rng.uniform(0.004, 0.01, (150, 1)).astype(np.float32) * noise
    copies /= np.linalg.norm(copies, axis=1, keepdims=True)
    data = np.vstack([X, copies])
    order = rng.permutation(len(data))
    spark = write_spark_output(tmp_path / "spark", len(data), vectors=data[order])
    col = Collection.create(tmp_path / "db", dtype="float32")
    col.import_parquet(spark)  # 3 segments of <= 2,000 rows, 2 with LSH tables, 1 scanned exactly
    assert len(col.segments) == 3 and col.lsh_summary()["indexed_segments"] >= 2
    exact = {(p.id_a, p.id_b) for p in find_pairs(col, 0.9, method="exact")}
    lsh = find_pairs(col, 0.9, method="lsh")
    found = [(p.id_a, p.id_b) for p in lsh]
    assert len(found) == len(set(found)), "each pair once"
    assert set(found) <= exact, "no pair below the threshold"
    assert len(exact) >= 150 and len(set(found) & exact) / len(exact) >= 0.95


def test_lsh_rebuilt_with_other_settings_is_read_afresh_in_the_same_process(tmp_path, monkeypatch):
    """The rebuilt tables keep the segment's file name: the writer's segment must not read the old file."""
    from lookalike.collection import artifacts

    monkeypatch.setattr(artifacts, "LSH_MIN_SEGMENT", 500)
    X = clustered_vectors(1_200, seed=8)
    col = Collection.create(tmp_path / "db", dtype="float32")
    col.import_parquet(write_spark_output(tmp_path / "spark", 1_200, vectors=X))
    col.build_lsh(target_recall=0.9)
    assert col.lsh.kneighbors(X[:3], 5)[1][:, 0].tolist() == col.ids[:3].tolist()
    col.build_lsh(target_recall=0.95)  # new tables under the same name
    assert col.lsh.kneighbors(X[:3], 5)[1][:, 0].tolist() == col.ids[:3].tolist()
    assert Collection.open(col.path).verify()
