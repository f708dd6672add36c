"""Real Spark (local[2]): distributed embedding matches the local indexer."""

import os
import sys

import numpy as np
import pytest

from conftest import synthetic_image
from lookalike import Collection

pyspark = pytest.importorskip("pyspark")
pytestmark = pytest.mark.spark


@pytest.fixture(scope="module")
def spark():
    os.environ["PYSPARK_PYTHON"] = sys.executable
    os.environ["PYSPARK_DRIVER_PYTHON"] = sys.executable
    from lookalike.spark.embed import spark_session

    s = spark_session("local[2]", "lookalike-tests", **{"spark.driver.memory": "2g"})
    yield s
    s.stop()


def test_spark_index_matches_local_embeddings(spark, tmp_path):
    from lookalike.spark.embed import spark_index

    root = tmp_path / "photos"
    for i in range(10):
        (root / f"d{i % 2}").mkdir(parents=True, exist_ok=True)
        synthetic_image(i).save(root / f"d{i % 2}" / f"{i}.jpg")
    (root / "d0" / "bad.jpg").write_bytes(b"not an image at all")
    counts = spark_index(spark, str(root), str(tmp_path / "out"), partitions=2)
    assert counts == {"files": 11, "embedded": 10, "errors": 1}
    import pyarrow.parquet as pq

    table = pq.read_table(tmp_path / "out").to_pandas()
    bad = table[table["path"].str.endswith("bad.jpg")]
    assert "not an image" in bad["error"].iloc[0]
    local = Collection.create(tmp_path / "db")
    local.index(root)
    ref = dict(zip(local.paths, np.asarray(local.embeddings)))
    good = table[table["error"].isna()]
    assert len(good) == 10
    for path, emb in zip(good["path"], good["embedding"]):
        p = path.removeprefix("file:")
        assert np.abs(np.asarray(emb, np.float32) - ref[p]).max() < 1e-5


def test_spark_cli(tmp_path):
    import subprocess

    root = tmp_path / "p"
    root.mkdir()
    for i in range(3):
        synthetic_image(i).save(root / f"{i}.png")
    env = dict(os.environ, PYSPARK_PYTHON=sys.executable)
    res = subprocess.run([sys.executable, "-m", "lookalike", "spark", "index", str(root), "--out", str(tmp_path / "o")],
                         capture_output=True, text=True, env=env, timeout=240)
    assert res.returncode == 0, res.stderr[-2000:]
    assert "3 files: 3 embedded, 0 with errors" in res.stdout
