"""Batch k-NN on Spark: many query images against a ``spark index`` collection.

``method="exact"`` (ours): the query embeddings are broadcast; every task scans its
partition of the collection once for all queries (one matrix product per Arrow batch) and
keeps a running top-k per query; a final window keeps the global top-k. Exact, and one
pass over the collection however many queries there are.
``method="mllib-brp"``: Spark MLlib ``BucketedRandomProjectionLSH.approxNearestNeighbors``,
one Spark job per query, as the seed scripts did (for comparison; slow).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from functools import partial

import numpy as np

from .data import SparkInputError, arrow_batch_rows, as_matrix, check_method, load_embeddings, read_meta
from .embed import embed_images

METHODS = ("exact", "mllib-brp")


@dataclass
class SparkSearchResult:
    """Per query path: ``[(path, score), ...]`` best first."""

    results: dict[str, list[tuple[str, float]]]
    errors: dict[str, str]  # query path -> why it could not be embedded
    n_collection: int
    method: str
    seconds: float


def _topk_partition(batches, queries, k: int):
    """Running top-k of every broadcast query over this partition's rows."""
    import pandas as pd

    Q = queries.value
    nq = len(Q)
    best_s = np.full((nq, 0), -np.inf, np.float32)
    best_i = np.zeros((nq, 0), np.int64)
    for pdf in batches:
        if not len(pdf):
            continue
        X = as_matrix(pdf["embedding"])
        S = np.concatenate([best_s, Q @ X.T], axis=1)
        ids = np.concatenate([best_i, np.broadcast_to(pdf["id"].to_numpy(np.int64), (nq, len(X)))], axis=1)
        if S.shape[1] > k:
            part = np.argpartition(-S, k - 1, axis=1)[:, :k]
            S, ids = np.take_along_axis(S, part, 1), np.take_along_axis(ids, part, 1)
        best_s, best_i = S, ids
    if best_s.shape[1]:
        yield pd.DataFrame({"q": np.repeat(np.arange(nq), best_s.shape[1]), "id": best_i.ravel(),
                            "score": best_s.ravel()})


def query_vectors(spark, queries: str, collection_info: dict, *, partitions: int | None = None):
    """Embeddings of the queries (a ``spark index`` output, or a folder of images embedded now)."""
    info = read_meta(spark, queries)
    if info:
        qdf = spark.read.parquet(queries)
    else:
        qdf = embed_images(
            spark, queries, partitions=partitions, encoder=collection_info.get("encoder", "efficientnet-lite0"),
            engine=collection_info.get("engine", "onnx"),
        )
        info = collection_info
    if info.get("weights_sha256") != collection_info.get("weights_sha256"):
        raise SparkInputError(f"Queries were embedded with {info.get('encoder')!r}, the collection with "
                              f"{collection_info.get('encoder')!r}; re-embed them with the collection's encoder.")
    rows = qdf.select("path", "embedding", "error").orderBy("path").collect()
    good = [(r[0], r[1]) for r in rows if r[2] is None]
    errors = {r[0]: r[2] for r in rows if r[2] is not None}
    return [p for p, _ in good], np.asarray([v for _, v in good], np.float32).reshape(len(good), -1), errors


def spark_search(spark, queries: str, collection: str, out: str | None = None, *, k: int = 10,
                 method: str = "exact", n_tables: int | None = None, bucket_length: float | None = None,
                 seed: int = 0) -> SparkSearchResult:
    """The ``k`` most similar collection images for every query.

    Written as Parquet ``(query, rank, path, score)`` under ``out`` when given.
    """
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    check_method(method, METHODS)
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    t0 = time.perf_counter()
    df, info = load_embeddings(spark, collection)
    n = df.count()
    qpaths, Q, errors = query_vectors(spark, queries, info)
    results: dict[str, list[tuple[str, float]]] = {p: [] for p in qpaths}
    if len(Q) and n:
        if method == "exact":
            bq = spark.sparkContext.broadcast(Q)
            part = df.select("id", "embedding").mapInPandas(partial(_topk_partition, queries=bq, k=k),
                                                            "q int, id long, score float")
            w = Window.partitionBy("q").orderBy(F.desc("score"), F.asc("id"))
            with arrow_batch_rows(spark, 4096):
                top = (part.withColumn("rank", F.row_number().over(w)).filter(F.col("rank") <= k)
                       .join(df.select("id", "path"), "id").select("q", "rank", "path", "score").collect())
            bq.unpersist()
            for q, _rank, path, score in sorted(top, key=lambda r: (r[0], r[1])):
                results[qpaths[q]].append((path, float(score)))
        else:
            from pyspark.ml.feature import BucketedRandomProjectionLSH
            from pyspark.ml.functions import array_to_vector
            from pyspark.ml.linalg import Vectors

            data = df.select("id", "path", array_to_vector("embedding").alias("v")).persist()
            model = BucketedRandomProjectionLSH(inputCol="v", outputCol="h", bucketLength=bucket_length or 2.0,
                                                numHashTables=n_tables or 200, seed=seed).fit(data)
            for p, q in zip(qpaths, Q):
                near = model.approxNearestNeighbors(data, Vectors.dense(q.astype(np.float64)), k, distCol="d")
                results[p] = [(r[0], float(1 - r[1] ** 2 / 2)) for r in near.select("path", "d").collect()]
            data.unpersist()
    if out:
        rows = [(q, rank, path, score) for q, hits in results.items() for rank, (path, score) in enumerate(hits, 1)]
        spark.createDataFrame(rows, "query string, rank int, path string, score float").coalesce(1).write.mode(
            "overwrite").parquet(out)
    return SparkSearchResult(results=results, errors=errors, n_collection=n, method=method,
                             seconds=time.perf_counter() - t0)
