"""Reading ``spark index`` output into DataFrames and vectors (shared by the Spark jobs)."""

from __future__ import annotations

from contextlib import contextmanager

import numpy as np

from .embed import read_meta


class SparkInputError(ValueError):
    """The input is not what a Spark job expected."""


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
