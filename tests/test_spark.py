"""Spark jobs: real Spark (local[2]) where marked ``spark``; the rest needs only pandas/pyarrow."""

import os
import sys

import numpy as np
import pytest
from conftest import synthetic_image

from lookalike import Collection


@pytest.fixture(scope="module")
def spark():
    pytest.importorskip("pyspark")
    os.environ["PYSPARK_PYTHON"] = sys.executable
    os.environ["PYSPARK_DRIVER_PYTHON"] = sys.executable
    from lookalike.spark.embed import spark_session

    s = spark_session("local[2]", "lookalike-tests", **{"spark.driver.memory": "2g"})
    yield s
    s.stop()


@pytest.fixture
def spark_env():
    """Environment for a `lookalike spark ...` child process."""
    pytest.importorskip("pyspark")
    return dict(os.environ, PYSPARK_PYTHON=sys.executable)


def _save_heic(im, path):
    from lookalike.images import register_heif

    assert register_heif()
    im.save(path, format="HEIF", quality=90)


def _messy_folder(root):
    """Files that decode, and files that do not, each for its own reason."""
    root.mkdir(parents=True, exist_ok=True)
    synthetic_image(1).save(root / "good.jpg")
    _save_heic(synthetic_image(2), root / "photo.heic")
    (root / "bad.jpg").write_bytes(b"not an image at all")
    (root / "empty.png").write_bytes(b"")
    data = (root / "good.jpg").read_bytes()
    (root / "cut.jpg").write_bytes(data[: len(data) // 3])
    synthetic_image(3, size=(400, 300)).save(root / "huge.png")  # over max_pixels below


def test_spark_decode_gives_the_local_indexer_reasons(tmp_path, encoder):
    """The Spark worker function and the local indexer decode through one function: same reasons, same vectors."""
    import pandas as pd

    from lookalike.indexer import embed_files
    from lookalike.spark.embed import embed_partition

    root = tmp_path / "messy"
    _messy_folder(root)
    paths = sorted(str(p) for p in root.iterdir())
    local = {r.path: r for batch in embed_files(paths, encoder, max_pixels=50_000) for r in batch}
    rows = pd.DataFrame({"path": ["file:" + p for p in paths], "content": [open(p, "rb").read() for p in paths],
                         "length": [os.path.getsize(p) for p in paths], "modificationTime": [None] * len(paths)})
    got = pd.concat(embed_partition(iter([rows]), encoder_name=encoder.name, max_pixels=50_000))
    assert sum(r.reason is None for r in local.values()) == 2  # good.jpg and photo.heic
    for _, row in got.iterrows():
        mine = local[row["path"].removeprefix("file:")]
        assert row["error"] == mine.reason and row["content_hash"] == mine.content_hash
        if mine.reason is None:
            assert (row["width"], row["height"]) == (mine.width, mine.height)
            assert np.abs(np.asarray(row["embedding"], np.float32) - mine.vector).max() < 1e-5
        else:
            assert pd.isna(row["width"]) and row["embedding"] is None
    reasons = dict(zip(got["path"].str.rsplit("/", n=1).str[-1], got["error"]))
    assert reasons["bad.jpg"].startswith("not an image") and reasons["empty.png"].startswith("empty file")
    assert reasons["cut.jpg"].startswith("truncated") and reasons["huge.png"].startswith("too many pixels")


@pytest.mark.spark
def test_spark_index_matches_local_embeddings(spark, tmp_path):
    from lookalike.images import discover
    from lookalike.spark.embed import spark_index

    root = tmp_path / "photos"
    for i in range(10):
        (root / f"d{i % 2}").mkdir(parents=True, exist_ok=True)
        synthetic_image(i).save(root / f"d{i % 2}" / f"{i}.jpg")
    (root / "d0" / "bad.jpg").write_bytes(b"not an image at all")
    # every extension the local indexer takes, in any case, is taken by Spark too
    synthetic_image(10).save(root / "d1" / "10.JPE", format="JPEG")
    synthetic_image(11).save(root / "d1" / "11.Jpeg", format="JPEG")
    _save_heic(synthetic_image(12), root / "d0" / "12.heic")
    (root / "d0" / "notes.txt").write_text("not taken by either")
    counts = spark_index(spark, str(root), str(tmp_path / "out"), partitions=2)
    assert counts == {"files": 14, "embedded": 13, "errors": 1}
    import pyarrow.parquet as pq

    table = pq.read_table(tmp_path / "out").to_pandas()
    assert sorted(p.removeprefix("file:") for p in table["path"]) == sorted(str(p) for p in discover(root))
    bad = table[table["path"].str.endswith("bad.jpg")]
    assert "not an image" in bad["error"].iloc[0]
    local = Collection.create(tmp_path / "db", dtype="float32")  # compare at full precision
    local.index(root)
    ref = dict(zip(local.paths, np.asarray(local.embeddings)))
    good = table[table["error"].isna()]
    assert len(good) == 13
    for path, emb in zip(good["path"], good["embedding"]):
        p = path.removeprefix("file:")
        assert np.abs(np.asarray(emb, np.float32) - ref[p]).max() < 1e-5


@pytest.mark.spark
def test_spark_cli(tmp_path, spark_env):
    import subprocess

    root = tmp_path / "p"
    root.mkdir()
    for i in range(3):
        synthetic_image(i).save(root / f"{i}.png")
    env = spark_env
    res = subprocess.run([sys.executable, "-m", "lookalike", "spark", "index", str(root), "--out", str(tmp_path / "o")],
                         capture_output=True, text=True, env=env, timeout=240)
    assert res.returncode == 0, res.stderr[-2000:]
    assert "3 files: 3 embedded, 0 with errors" in res.stdout


@pytest.mark.spark
def test_spark_cli_dupes_search_import(tmp_path, spark_env):
    """index -> dupes -> search -> import, each a real `lookalike spark ...` process."""
    import shutil
    import subprocess

    root = tmp_path / "my photos"  # a space: Spark hands out URI-encoded paths
    root.mkdir()
    for i in range(6):
        synthetic_image(i).save(root / f"{i}.jpg", quality=95)
    shutil.copy(root / "2.jpg", root / "2 copy.jpg")
    synthetic_image(4).resize((120, 90)).save(root / "4-small.jpg", quality=80)
    env = spark_env

    def run(*args):
        res = subprocess.run([sys.executable, "-m", "lookalike", *map(str, args)], capture_output=True, text=True,
                             env=env, timeout=300)
        assert res.returncode == 0, res.stderr[-3000:]
        return res.stdout

    emb = tmp_path / "emb"
    run("spark", "index", root, "--out", emb)
    out = run("spark", "dupes", emb, "--threshold", "0.9", "--format", "json", "--out", tmp_path / "dupes")
    import json

    found = json.loads(out)
    groups = [sorted(p.rsplit("/", 1)[-1] for p in g["paths"]) for g in found["groups"]]
    assert ["2 copy.jpg", "2.jpg"] in groups
    assert ["4-small.jpg", "4.jpg"] in groups
    small = next(g for g in found["groups"] if any(p.endswith("4-small.jpg") for p in g["paths"]))
    assert small["keeper"].endswith("/4.jpg")  # most pixels
    out = run("spark", "search", root, "--collection", emb, "-k", "2", "--format", "json")
    results = json.loads(out)["results"]
    assert len(results) == 8
    for q, hits in results.items():
        assert hits[0][1] > 0.999 and q in (hits[0][0], hits[1][0])  # every image finds itself (or its copy) first
    run("spark", "import", emb, "--db", tmp_path / "db")
    col = Collection.open(tmp_path / "db")
    assert len(col) == 8 and str(root / "2 copy.jpg") in col.paths
    hits = col.search(root / "2.jpg", k=2)
    assert {h.path for h in hits} == {str(root / "2.jpg"), str(root / "2 copy.jpg")}


# ---------------------------------------------------------------- dupes, search, import


def write_vectors(path, X, names=None, encoder="efficientnet-lite0"):
    """Write vectors the way `spark index` does (Parquet + _lookalike/), without Spark."""
    from lookalike.datasets import write_spark_output

    n = len(X)
    names = names or [f"/data/img{i:04d}.jpg" for i in range(n)]
    write_spark_output(path, n, vectors=np.asarray(X, np.float32), paths=names, encoder=encoder, files=2)
    return names


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    """600 clustered unit vectors + 80 planted near-copies (cosine ~0.90-0.99)."""
    from lookalike.datasets import clustered_vectors

    base = clustered_vectors(600, 1280, seed=3)
    rng = np.random.default_rng(4)
    src = rng.choice(600, 80, replace=False)
    noise = rng.standard_normal((80, 1280)).astype(np.float32)
    noise -= (noise * base[src]).sum(1, keepdims=True) * base[src]
    noise /= np.linalg.norm(noise, axis=1, keepdims=True)
    angle = np.arccos(rng.uniform(0.90, 0.99, 80))[:, None]
    copies = np.cos(angle) * base[src] + np.sin(angle) * noise
    X = np.concatenate([base, copies]).astype(np.float32)
    X /= np.linalg.norm(X, axis=1, keepdims=True)
    root = tmp_path_factory.mktemp("planted") / "emb"
    names = write_vectors(root, X)
    return root, X, names


def exact_pair_set(X, names, threshold):
    from lookalike.dupes import exact_pairs

    a, b, s = exact_pairs(X, threshold)
    return {tuple(sorted((names[i], names[j]))): float(v) for i, j, v in zip(a, b, s)}


@pytest.mark.spark
def test_banded_join_matches_exact(spark, planted, tmp_path):
    from lookalike.spark.dupes import spark_dupes

    root, X, names = planted
    truth = exact_pair_set(X, names, 0.9)
    assert len(truth) >= 60
    res = spark_dupes(spark, str(root), str(tmp_path / "out"), threshold=0.9)
    found = {tuple(sorted((a.removeprefix("file:"), b.removeprefix("file:")))): s for a, b, s in res.pairs}
    assert len(found) == len(res.pairs)  # each pair once
    assert set(found) <= set(truth)  # exact check: never a false pair
    assert len(set(found) & set(truth)) / len(truth) >= 0.95
    for p, s in found.items():
        assert abs(s - truth[p]) < 1e-5
    assert res.plan["n_bands"] >= 1 and res.plan["compared_pairs"] > 0
    # many bands of many bits: fewer comparisons, each pair still reported once
    fixed = spark_dupes(spark, str(root), threshold=0.9, n_bands=12, n_bits=8, broadcast_max_bytes=0)  # shuffle path
    pairs = [tuple(sorted(p[:2])) for p in fixed.pairs]
    assert len(pairs) == len(set(pairs)) and fixed.plan["compared_pairs"] < len(X) * (len(X) - 1) / 2 / 3
    assert {(a.removeprefix("file:"), b.removeprefix("file:")) for a, b in pairs} <= set(truth)
    import pyarrow.parquet as pq

    assert pq.read_table(tmp_path / "out" / "pairs").num_rows == len(res.pairs)
    groups = pq.read_table(tmp_path / "out" / "groups").to_pandas()
    assert groups.groupby("group")["keeper"].sum().eq(1).all()  # one keeper per group
    # keeper = most pixels: widths grow with the index in write_vectors
    g0 = res.groups[0]
    assert g0["keeper"] == max(g0["paths"], key=lambda p: int(p[-8:-4]))


@pytest.mark.spark
@pytest.mark.parametrize("method", ["mllib-brp", "mllib-minhash"])
def test_mllib_methods_report_only_true_pairs(spark, planted, method):
    from lookalike.spark.dupes import spark_dupes

    root, X, names = planted
    truth = exact_pair_set(X, names, 0.9)
    kwargs = {"n_tables": 20} if method == "mllib-brp" else {}
    res = spark_dupes(spark, str(root), threshold=0.9, method=method, **kwargs)
    found = {tuple(sorted((a.removeprefix("file:"), b.removeprefix("file:")))) for a, b, _ in res.pairs}
    assert found <= set(truth)
    assert len(found) > 0


@pytest.mark.spark
def test_spark_search_equals_exact(spark, planted, tmp_path):
    from lookalike.search import exact_topk
    from lookalike.spark.search import spark_search

    root, X, names = planted
    qroot = tmp_path / "q"
    qnames = write_vectors(qroot, X[[5, 77, 600, 679]], names=[f"/q/{i}.jpg" for i in range(4)])
    res = spark_search(spark, str(qroot), str(root), str(tmp_path / "res"), k=5)
    scores, rows = exact_topk(X, X[[5, 77, 600, 679]], 5)
    for qi, q in enumerate(qnames):
        got = res.results["file:" + q]
        assert [p.removeprefix("file:") for p, _ in got] == [names[r] for r in rows[qi]]
        assert np.allclose([s for _, s in got], scores[qi], atol=1e-5)
    import pyarrow.parquet as pq

    assert pq.read_table(tmp_path / "res").num_rows == 20


def test_import_into_collection(planted, tmp_path):
    root, X, names = planted
    col = Collection.create(tmp_path / "db")
    rep = col.import_parquet(root)
    assert rep.added == len(X) and len(col) == len(X)
    assert col.paths[0] == names[0]  # file: URIs become local paths
    hits = col.search(X[7], k=1)
    assert hits[0].path == names[7] and hits[0].score > 0.999
    again = Collection.open(tmp_path / "db").import_parquet(root)  # idempotent: same paths keep ids
    assert again.updated == len(X) and again.added == 0
    assert len(Collection.open(tmp_path / "db")) == len(X)


def test_import_refuses_other_encoder_and_non_spark_folders(planted, tmp_path):
    from lookalike.collection import CollectionError

    root, _, _ = planted
    col = Collection.create(tmp_path / "db2", encoder="efficientnet-lite2")
    with pytest.raises(CollectionError, match="efficientnet-lite0.*efficientnet-lite2"):
        col.import_parquet(root)
    (tmp_path / "plain").mkdir()
    with pytest.raises(CollectionError, match="not the output of `lookalike spark index`"):
        col.import_parquet(tmp_path / "plain")
