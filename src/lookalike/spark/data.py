"""Reading and describing ``spark index`` output: DataFrames, vectors, the ``_lookalike`` description.

Shared by the Spark jobs (:mod:`.embed` writes what this module reads; it imports no job module).
"""

from __future__ import annotations

import json
from contextlib import contextmanager

import numpy as np

# Sub-folder of the output holding the encoder description (skipped by Parquet readers).
META_DIR = "_lookalike"


class SparkInputError(ValueError):
    """The input is not what a Spark job expected."""


def check_method(method: str, methods) -> None:
    """Raise a ValueError naming the choices when ``method`` is not one of ``methods``."""
    if method not in methods:
        raise ValueError(f"method must be one of {', '.join(methods)}, got {method!r}")


def write_meta(spark, output_path: str, info: dict) -> None:
    """Write ``info`` as one JSON row under ``OUTPUT/_lookalike`` (any Hadoop file system)."""
    spark.createDataFrame([(json.dumps(info),)], "value string").coalesce(1).write.mode("overwrite").text(
        output_path.rstrip("/") + "/" + META_DIR)


def read_meta(spark, output_path: str) -> dict:
    """The ``_lookalike`` description of a ``spark index`` output (empty dict if absent)."""
    try:
        rows = spark.read.text(output_path.rstrip("/") + "/" + META_DIR).collect()
    except Exception:  # noqa: BLE001 - AnalysisException when the folder is missing
        return {}
    return json.loads(rows[0][0]) if rows else {}


def load_embeddings(spark, source: str, *, need_meta: bool = True):
    """Good rows of a ``spark index`` output with a numeric ``id`` column added.

    Not cached: each job re-reads the columns it needs from Parquet, which is cheaper than
    materialising the embedding arrays in Spark's cache. The ids are stable across reads
    (they derive from the file splits and row positions).

    Columns: ``id, path, width, height, modificationTime, embedding``. Returns
    ``(df, info)`` where ``info`` is the ``_lookalike`` encoder description.
    """
    from pyspark.sql import functions as F

    info = read_meta(spark, source)
    if need_meta and not info:
        raise SparkInputError(f"{source} is not the output of `lookalike spark index` (no _lookalike/ description). "
                              f"Create it with: lookalike spark index IMAGES --out {source}")
    df = (spark.read.parquet(source).filter(F.col("error").isNull())
          .select("path", "width", "height", "modificationTime", "embedding")
          .withColumn("id", F.monotonically_increasing_id()))
    return df, info


def sample_vectors(df, size: int, seed: int = 0, n: int | None = None) -> tuple[np.ndarray, int]:
    """About ``size`` embeddings drawn uniformly (seeded) to the driver, and the row count."""
    n = df.count() if n is None else n
    if n == 0:
        return np.zeros((0, 0), np.float32), 0
    frac = min(1.0, size / n * 1.1)
    pdf = df.sample(fraction=frac, seed=seed).select("embedding").limit(size).toPandas()
    return as_matrix(pdf["embedding"]), n


def as_matrix(column) -> np.ndarray:
    """A pandas column of float arrays (Arrow lists) -> ``(n, d)`` float32."""
    if len(column) == 0:
        return np.zeros((0, 0), np.float32)
    return np.stack(column.to_numpy()).astype(np.float32, copy=False)


@contextmanager
def arrow_batch_rows(spark, rows: int):
    """Temporarily set the rows per Arrow batch exchanged with Python workers."""
    key = "spark.sql.execution.arrow.maxRecordsPerBatch"
    old = spark.conf.get(key, None)
    spark.conf.set(key, str(rows))
    try:
        yield
    finally:
        if old is None:
            spark.conf.unset(key)
        else:
            spark.conf.set(key, old)
