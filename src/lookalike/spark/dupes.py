"""All-pairs near-duplicates on Spark.

``method="lsh"`` (ours): hyperplane band keys -> explode one row per (vector, band) ->
shuffle by band key and sort -> exact cosine inside each bucket, each pair reported only
from the first band it collides in (so no ``distinct`` shuffle) -> pairs above the
threshold. Groups (connected components, keeper = most pixels, then oldest) are formed on
the driver from the pair list, which is small for near-duplicates.

``method="mllib-brp"`` / ``"mllib-minhash"`` run Spark MLlib's
``BucketedRandomProjectionLSH`` / ``MinHashLSH`` ``approxSimilarityJoin`` the way the seed
scripts did, with the exact cosine of every pair they return, for comparison.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from functools import partial

import numpy as np

from ..dupes import connected_groups, keeper_rank
from .banding import ROW_COST, BandPlan, pairs_in_sorted, plan_bands
from .data import arrow_batch_rows, as_matrix, check_method, load_embeddings, sample_vectors

METHODS = ("lsh", "mllib-brp", "mllib-minhash")
PAIR_SCHEMA = "a long, b long, score float"
# Embeddings up to this size are broadcast instead of shuffled once per band (0: never).
BROADCAST_MAX_BYTES = 256 << 20
# Cost of a shuffled (band, key, id) row without the embedding, in pair checks (cf. ROW_COST).
ROW_COST_BROADCAST = 15.0
# Rows per shuffle partition aimed at by the banded join.
ROWS_PER_PARTITION = 100_000


@dataclass
class SparkDupesResult:
    """Pairs and groups found, and how."""

    pairs: list[tuple[str, str, float]]  # (path_a, path_b, score), best first
    groups: list[dict]  # {"group", "paths", "keeper", "min_score"}
    n_vectors: int
    method: str
    seconds: float
    plan: dict = field(default_factory=dict)


def _binary_rows(mat: np.ndarray):
    """Each row of a 2-D array as one Arrow binary value, without copying per row."""
    import pyarrow as pa

    mat = np.ascontiguousarray(mat)
    width = mat.shape[1] * mat.itemsize
    offsets = (np.arange(len(mat) + 1, dtype=np.int32) * width).tobytes()
    return pa.Array.from_buffers(pa.binary(), len(mat), [None, pa.py_buffer(offsets), pa.py_buffer(mat)])


def _rows_of_binary(arr, dtype, width: int) -> np.ndarray:
    """Inverse of :func:`_binary_rows`: ``(n, width)`` array of ``dtype``."""
    offsets = np.frombuffer(arr.buffers()[1], np.int32)[arr.offset : arr.offset + len(arr) + 1]
    data = np.frombuffer(arr.buffers()[2], np.uint8)[offsets[0] : offsets[-1]]
    return data.view(dtype).reshape(len(arr), width)


def _list_matrix(arr) -> np.ndarray:
    """Arrow list<float> column of equal-length lists -> ``(n, d)`` float32."""
    values = arr.flatten().to_numpy(zero_copy_only=False)
    return values.astype(np.float32, copy=False).reshape(len(arr), -1)


def _explode(batches, plan: BandPlan, with_emb: bool = True):
    """Arrow batches of (id, embedding) -> one row per (vector, band): band, key, id, keys[, emb]."""
    import pyarrow as pa

    for batch in batches:
        m = batch.num_rows
        if not m:
            continue
        X = _list_matrix(batch.column("embedding"))
        ids = batch.column("id")
        keys = plan.keys(X)
        keys_col = _binary_rows(keys)
        extra, names = ([_binary_rows(X)], ["emb"]) if with_emb else ([], [])
        for b in range(plan.n_bands):  # one batch per band keeps binary offsets small
            yield pa.RecordBatch.from_arrays(
                [pa.array(np.full(m, b, np.int32)), pa.array(keys[:, b]), ids, keys_col, *extra],
                names=["band", "key", "id", "keys", *names])


def _bucket_pairs(batches, threshold: float, n_bands: int, dim: int, compared=None, table=None):
    """Arrow rows sorted by (band, key) -> exact pairs. A bucket split across batches is carried over.

    ``table``: a broadcast ``(sorted ids, embeddings)`` to look vectors up in, when the rows
    carry no ``emb`` column.
    """
    import pyarrow as pa

    def run(tab):
        tab = tab.combine_chunks()
        band = tab.column("band").to_numpy()
        key = tab.column("key").to_numpy()
        if table is None:
            emb = _rows_of_binary(tab.column("emb").chunk(0), np.float32, dim)
        else:
            all_ids, all_emb = table.value
            emb = all_emb[np.searchsorted(all_ids, tab.column("id").to_numpy())]
        keys = _rows_of_binary(tab.column("keys").chunk(0), np.int64, n_bands)
        a, b, s, n_cmp = pairs_in_sorted(band, key, tab.column("id").to_numpy(), emb, keys, threshold)
        if compared is not None:
            compared.add(int(n_cmp))
        return pa.RecordBatch.from_arrays([pa.array(a), pa.array(b), pa.array(s)], names=["a", "b", "score"])

    carry = None
    for batch in batches:
        tab = pa.Table.from_batches([batch])
        if carry is not None and carry.num_rows:
            tab = pa.concat_tables([carry, tab])
        if not tab.num_rows:
            continue
        band = tab.column("band").to_numpy()
        key = tab.column("key").to_numpy()
        last = (band == band[-1]) & (key == key[-1])
        cut = len(last) - int(last.sum())  # sorted: the last bucket is a suffix
        carry = tab.slice(cut)
        if cut:
            yield run(tab.slice(0, cut))
    if carry is not None and carry.num_rows:
        yield run(carry)


def lsh_pairs(spark, df, n: int, threshold: float, *, target_recall: float = 0.95, n_bands: int | None = None,
              n_bits: int | None = None, sample_size: int = 2_000, seed: int = 0,
              broadcast_max_bytes: int | None = None):
    """The banded join. Returns ``(pairs_df[a, b, score], plan, compared_accumulator)``.

    Collections up to ``broadcast_max_bytes`` of float32 embeddings are broadcast and only
    the small key rows are shuffled; larger ones carry each embedding through the shuffle.
    """
    sample, _ = sample_vectors(df, sample_size, seed, n=n)
    dim = sample.shape[1]
    limit = BROADCAST_MAX_BYTES if broadcast_max_bytes is None else broadcast_max_bytes
    broadcast = bool(limit) and n * dim * 4 <= limit
    plan = plan_bands(sample, n, threshold, target_recall=target_recall, n_bands=n_bands, n_bits=n_bits, seed=seed,
                      row_cost=ROW_COST_BROADCAST if broadcast else ROW_COST)
    sc = spark.sparkContext
    parts = max(sc.defaultParallelism * 2, math.ceil(n * plan.n_bands / ROWS_PER_PARTITION))
    compared = sc.accumulator(0)
    table = None
    if broadcast:
        # Small enough to ship to every executor: shuffle only (band, key, id) rows and look
        # the vectors up locally, like a broadcast hash join.
        with arrow_batch_rows(spark, 4096):  # toPandas, not toArrow: pyspark 3.5 has no toArrow
            got = df.select("id", "embedding").toPandas()
        ids = got["id"].to_numpy()
        order = np.argsort(ids)
        emb = as_matrix(got["embedding"])
        table = sc.broadcast((ids[order], np.ascontiguousarray(emb[order])))
    schema = "band int, key long, id long, keys binary" + (", emb binary" if table is None else "")
    exploded = df.select("id", "embedding").mapInArrow(partial(_explode, plan=plan, with_emb=table is None), schema)
    pairs = (exploded.repartition(parts, "band", "key").sortWithinPartitions("band", "key")
             .mapInArrow(partial(_bucket_pairs, threshold=threshold, n_bands=plan.n_bands, dim=dim,
                                  compared=compared, table=table), PAIR_SCHEMA))
    return pairs, plan, compared


def mllib_pairs(df, threshold: float, method: str, *, n_tables: int | None = None, bucket_length: float | None = None,
                top_dims: int = 50, jaccard_distance: float = 0.5, seed: int = 0):
    """Spark MLlib's approxSimilarityJoin, as the seed scripts used it; exact cosine per pair.

    ``mllib-brp``: ``BucketedRandomProjectionLSH(bucketLength=2.0, numHashTables=200)`` by
    default (the seeds' settings) on the unit embeddings, joined at the Euclidean distance
    equal to the cosine threshold (``sqrt(2 - 2t)``), so it returns exactly the pairs it finds.
    ``mllib-minhash``: ``MinHashLSH`` over the set of each vector's ``top_dims`` largest
    dimensions, joined at Jaccard distance ``jaccard_distance``; every returned pair is then
    scored by exact cosine and kept if it passes ``threshold``.
    """
    from pyspark.ml.feature import BucketedRandomProjectionLSH, MinHashLSH
    from pyspark.ml.functions import array_to_vector
    from pyspark.sql import functions as F

    check_method(method, METHODS[1:])  # the mllib-* methods
    if method == "mllib-brp":
        data = df.select("id", array_to_vector("embedding").alias("v"))
        lsh = BucketedRandomProjectionLSH(inputCol="v", outputCol="h", bucketLength=bucket_length or 2.0,
                                          numHashTables=n_tables or 200, seed=seed)
        model = lsh.fit(data)
        dist = math.sqrt(max(0.0, 2 - 2 * threshold))
        joined = model.approxSimilarityJoin(data, data, dist, distCol="d")
        return (joined.filter(F.col("datasetA.id") < F.col("datasetB.id"))
                .select(F.col("datasetA.id").alias("a"), F.col("datasetB.id").alias("b"),
                        (1 - F.col("d") ** 2 / 2).cast("float").alias("score")))
    # mllib-minhash
    from pyspark.ml.linalg import SparseVector, VectorUDT

    def top_set(arr):
        v = np.asarray(arr, np.float32)
        idx = np.sort(np.argpartition(-v, top_dims)[:top_dims])
        return SparseVector(len(v), idx.tolist(), [1.0] * top_dims)

    to_set = F.udf(top_set, VectorUDT())
    data = df.select("id", "embedding", to_set("embedding").alias("v"))
    lsh = MinHashLSH(inputCol="v", outputCol="h", numHashTables=n_tables or 5, seed=seed)
    model = lsh.fit(data)
    joined = model.approxSimilarityJoin(data, data, jaccard_distance, distCol="d")
    dot = F.aggregate(F.zip_with("datasetA.embedding", "datasetB.embedding", lambda x, y: x * y),
                      F.lit(0.0).cast("double"), lambda acc, x: acc + x)
    return (
        joined.filter(F.col("datasetA.id") < F.col("datasetB.id"))
        .select(F.col("datasetA.id").alias("a"), F.col("datasetB.id").alias("b"), dot.cast("float").alias("score"))
        .filter(F.col("score") >= threshold)
    )


def spark_dupes(spark, source: str, out: str | None = None, *, threshold: float = 0.9, method: str = "lsh",
                target_recall: float = 0.95, n_bands: int | None = None, n_bits: int | None = None,
                n_tables: int | None = None, bucket_length: float | None = None, seed: int = 0,
                broadcast_max_bytes: int | None = None) -> SparkDupesResult:
    """Near-duplicate pairs and groups of a ``spark index`` output.

    Written under ``out`` as ``pairs/`` and ``groups/`` Parquet when given.
    """
    from pyspark.sql import functions as F

    if not -1.0 <= threshold <= 1.0:
        raise ValueError(f"threshold is a cosine similarity in [-1, 1], got {threshold}")
    check_method(method, METHODS)
    t0 = time.perf_counter()
    df, _ = load_embeddings(spark, source)
    n = df.count()
    plan_info: dict = {}
    if n < 2:
        pairs_df = spark.createDataFrame([], PAIR_SCHEMA)
    elif method == "lsh":
        pairs_df, plan, compared = lsh_pairs(spark, df, n, threshold, target_recall=target_recall, n_bands=n_bands,
                                             n_bits=n_bits, seed=seed, broadcast_max_bytes=broadcast_max_bytes)
        plan_info = plan.describe()
    else:
        pairs_df = mllib_pairs(df, threshold, method, n_tables=n_tables, bucket_length=bucket_length, seed=seed)
    with arrow_batch_rows(spark, 4096):  # big Arrow batches: rows here are small vectors, not images
        rows = pairs_df.collect()
    if method == "lsh" and n >= 2:
        plan_info["compared_pairs"] = int(compared.value)
    a = np.asarray([r[0] for r in rows], np.int64)
    b = np.asarray([r[1] for r in rows], np.int64)
    s = np.asarray([r[2] for r in rows], np.float32)
    involved = sorted(set(a.tolist()) | set(b.tolist()))
    meta = {}
    if involved:
        ids_df = spark.createDataFrame([(i,) for i in involved], "id long")
        for r in (
            df.join(F.broadcast(ids_df), "id").select("id", "path", "width", "height", "modificationTime").collect()
        ):
            meta[r[0]] = (r[1], int(r[2] or 0) * int(r[3] or 0), r[4])
    order = np.lexsort((b, a, -s))
    pairs = [(meta[int(a[i])][0], meta[int(b[i])][0], float(s[i])) for i in order]
    groups = _groups(a, b, s, meta)
    if out:
        _write(spark, out, pairs, groups)
    return SparkDupesResult(pairs=pairs, groups=groups, n_vectors=n, method=method, seconds=time.perf_counter() - t0,
                            plan=plan_info)


def _groups(a, b, s, meta) -> list[dict]:
    if not len(a):
        return []
    groups = connected_groups(a, b)
    group_of = {i: g for g, members in enumerate(groups) for i in members}
    weakest: dict[int, float] = {}
    for x, score in zip(a.tolist(), s.tolist()):
        weakest[group_of[x]] = min(weakest.get(group_of[x], 1.0), score)
    out = []
    for g, members in enumerate(groups):
        paths = sorted(meta[i][0] for i in members)
        keeper = min(members, key=lambda i: keeper_rank(meta[i][0], meta[i][1], meta[i][2]))
        out.append({"paths": paths, "keeper": meta[keeper][0], "min_score": weakest[g]})
    out.sort(key=lambda g: (-len(g["paths"]), g["paths"][0]))
    for k, g in enumerate(out):
        g["group"] = k
    return out


def _write(spark, out: str, pairs, groups) -> None:
    base = out.rstrip("/")
    spark.createDataFrame(pairs, "path_a string, path_b string, score float").coalesce(1).write.mode(
        "overwrite").parquet(base + "/pairs")
    rows = [(g["group"], p, p == g["keeper"], g["min_score"]) for g in groups for p in g["paths"]]
    spark.createDataFrame(rows, "group int, path string, keeper boolean, min_score float").coalesce(1).write.mode(
        "overwrite").parquet(base + "/groups")
