"""Distributed embedding: Spark's ``binaryFile`` source -> decode + embed in ``mapInPandas``.

The same files as the local indexer (:data:`lookalike.images.IMAGE_EXTENSIONS`, any case), turned
into model input by the same function (:func:`lookalike.indexer.prepare`: decoder, HEIF, reasons)
and the same encoder, inside the Python workers; the model is loaded once per worker process.
Unreadable files get an ``error`` with the reason and never fail the job. Output: Parquet with
``path, size, modificationTime, content_hash, width, height, embedding (array<float>), error``,
plus ``_lookalike/`` (one JSON row: encoder, weights SHA-256, dim) that Spark and pyarrow
readers skip because of the leading underscore.
"""

from __future__ import annotations

import numpy as np

from .. import images
from ..indexer import FileResult, prepare
from .data import META_DIR, read_meta, write_meta

__all__ = ["IMAGE_GLOB", "META_DIR", "OUTPUT_SCHEMA", "embed_images", "embed_partition", "encoder_info", "read_meta",
           "spark_index", "spark_session", "write_meta"]

OUTPUT_SCHEMA = ("path string, size long, modificationTime timestamp, content_hash string, width int, height int, "
                 "embedding array<float>, error string")


def glob_of(extensions) -> str:
    """A Hadoop glob (binaryFile's ``pathGlobFilter``) matching names with any of ``extensions`` in any case."""
    def any_case(ext: str) -> str:
        return "".join(f"[{c.lower()}{c.upper()}]" if c.isalpha() else c for c in ext.lstrip("."))

    return "*.{" + ",".join(any_case(e) for e in sorted(extensions)) + "}"


# Files read by binaryFile: the local indexer's extensions, any case.
IMAGE_GLOB = glob_of(images.IMAGE_EXTENSIONS)
# Images embedded per model call inside a task.
TASK_BATCH = 32
_ENCODERS: dict = {}  # one encoder per worker process, keyed by (name, engine)


def _encoder(name: str, engine: str):
    key = (name, engine)
    if key not in _ENCODERS:
        from ..encoders import get_encoder

        _ENCODERS[key] = get_encoder(name, engine)
    return _ENCODERS[key]


def embed_partition(batches, encoder_name: str = "efficientnet-lite0", engine: str = "onnx",
                    max_pixels: int | None = images.DEFAULT_MAX_PIXELS, weights_sha256: str | None = None):
    """``mapInPandas`` function: pandas batches of binaryFile rows -> embedding rows.

    ``weights_sha256``: the driver's model hash; a worker whose model file differs (another
    ``onnx:PATH`` file at the same path, other weights) fails the task instead of mixing embeddings.
    """
    import pandas as pd

    enc = _encoder(encoder_name, engine)
    if weights_sha256 is not None and enc.weights_hash != weights_sha256:
        raise RuntimeError(f"This worker's model for {encoder_name!r} differs from the driver's (sha256 "
                           f"{enc.weights_hash[:12]} vs {weights_sha256[:12]}): install the same file on every node.")
    for pdf in batches:
        out = {"path": [], "size": [], "modificationTime": [], "content_hash": [], "width": [], "height": [],
               "embedding": [], "error": []}
        arrays, slots = [], []
        for path, content, length, mtime in zip(pdf["path"], pdf["content"], pdf["length"], pdf["modificationTime"]):
            res = FileResult(path, size=int(length))
            arr = prepare(res, bytes(content) if content is not None else b"", enc, max_pixels)  # never raises
            if arr is not None:
                slots.append(len(out["path"]))
                arrays.append(arr)
            row = {"path": path, "size": res.size, "modificationTime": mtime, "content_hash": res.content_hash,
                   "width": res.width if arr is not None else None, "height": res.height if arr is not None else None,
                   "embedding": None, "error": res.reason}
            for key, value in row.items():
                out[key].append(value)
        for b0 in range(0, len(arrays), TASK_BATCH):
            vecs = enc.embed_batch(np.stack(arrays[b0 : b0 + TASK_BATCH]))
            for slot, v in zip(slots[b0 : b0 + TASK_BATCH], vecs):
                out["embedding"][slot] = v.astype(np.float32).tolist()
        yield pd.DataFrame(out)


def spark_session(master: str | None = "local[2]", app_name: str = "lookalike", **conf):
    """A SparkSession with Arrow enabled (needed for efficient ``mapInPandas``).

    ``master=None`` keeps the master spark-submit was given (``local[2]`` outside spark-submit).
    """
    import os

    from pyspark.sql import SparkSession

    if master is None and "PYSPARK_GATEWAY_PORT" not in os.environ:
        master = "local[2]"
    builder = SparkSession.builder.appName(app_name)
    if master:
        builder = builder.master(master)
    builder = (builder
               .config("spark.ui.enabled", "false")
               .config("spark.sql.execution.arrow.pyspark.enabled", "true")
               .config("spark.sql.execution.arrow.maxRecordsPerBatch", str(TASK_BATCH * 4)))
    for k, v in conf.items():
        builder = builder.config(k, v)
    return builder.getOrCreate()


def embed_images(spark, input_path: str, *, partitions: int | None = None, encoder: str = "efficientnet-lite0",
                 engine: str | None = None, glob: str = IMAGE_GLOB,
                 max_pixels: int | None = images.DEFAULT_MAX_PIXELS):
    """A lazy DataFrame (``OUTPUT_SCHEMA``) embedding every image under ``input_path``.

    ``encoder`` is a registered name or ``onnx:PATH/model.onnx`` (your own model; PATH and the
    JSON beside it must be readable at the same place by every worker, e.g. a shared file system).
    ``engine``: default as for a new collection (:func:`lookalike.encoders.default_engine`: the
    shared int8 model for Lite0, which every worker builds from the same shipped ranges).
    """
    from functools import partial

    from ..encoders import canonical_name, default_engine

    encoder = canonical_name(encoder)  # onnx:PATH made absolute: workers may run in another folder
    engine = engine or default_engine(encoder)

    df = (spark.read.format("binaryFile").option("recursiveFileLookup", "true")
          .option("pathGlobFilter", glob).load(input_path))
    if partitions:
        df = df.repartition(partitions)
    expected = _encoder(encoder, engine).weights_hash  # the driver's model, recorded in _lookalike
    fn = partial(embed_partition, encoder_name=encoder, engine=engine, max_pixels=max_pixels, weights_sha256=expected)
    return df.select("path", "content", "length", "modificationTime").mapInPandas(fn, schema=OUTPUT_SCHEMA)


def spark_index(spark, input_path: str, output_path: str, *, partitions: int | None = None,
                encoder: str = "efficientnet-lite0", engine: str | None = None, glob: str = IMAGE_GLOB,
                max_pixels: int | None = images.DEFAULT_MAX_PIXELS) -> dict:
    """Embed every image under ``input_path`` with Spark and write Parquet to ``output_path``.

    Returns counts: ``{"files", "embedded", "errors"}``. ``encoder``: as for :func:`embed_images`.
    """
    from ..encoders import canonical_name, default_engine

    encoder = canonical_name(encoder)
    engine = engine or default_engine(encoder)
    out = embed_images(spark, input_path, partitions=partitions, encoder=encoder, engine=engine, glob=glob,
                       max_pixels=max_pixels)
    out.write.mode("overwrite").parquet(output_path)
    write_meta(spark, output_path, encoder_info(encoder, engine))
    res = spark.read.parquet(output_path)
    total = res.count()
    errors = res.filter("error is not null").count()
    return {"files": total, "embedded": total - errors, "errors": errors}


def encoder_info(encoder: str, engine: str | None = None) -> dict:
    """What a reader needs to compare embeddings: encoder name, engine (int8: the model's hash), weights hash, dim."""
    from ..encoders import default_engine, file_sha256

    engine = engine or default_engine(encoder)
    enc = _encoder(encoder, engine)
    info = {"format": "lookalike-spark-embeddings", "encoder": enc.name, "engine": engine,
            "weights_sha256": enc.weights_hash, "dim": enc.dim, "flip_average": False, "views": list(enc.views)}
    if engine == "onnx-int8":
        info["int8_sha256"] = file_sha256(enc.engine.model_path)
    return info
