"""Seeded synthetic data for tests and benchmarks (faiss's SyntheticDataset idea).

Real embeddings have low intrinsic dimension and cluster by content; uniform noise in
1280-d has neither, and makes every index look either perfect or useless.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path

import numpy as np

# Rows generated at a time by :func:`clustered_blocks` (a float32 block is 335 MB at 1280-d).
# Fixed: the block boundaries seed the generator, so changing it changes every dataset.
GENERATE_BLOCK = 65_536
# Rows per Parquet row group written by :func:`write_spark_output` (42 MB of float32 at 1280-d);
# a reader holds about one row group per file it reads at a time.
SPARK_ROW_GROUP = 8_192
# Rows per ``part-*.parquet`` file (Spark writes one per partition): 100k rows ~ 0.5 GB.
SPARK_ROWS_PER_FILE = 100_000


def clustered_blocks(n: int, dim: int = 1280, *, n_clusters: int = 100, intrinsic_dim: int = 32,
                     spread: float = 0.6, nonnegative: bool = True, seed: int = 0,
                     dtype=np.float32) -> Iterator[np.ndarray]:
    """The rows of :func:`clustered_vectors` as consecutive blocks of ``GENERATE_BLOCK`` rows.

    Only one block is in memory at a time, so any ``n`` streams. Concatenated, the blocks
    equal ``clustered_vectors(n, ...)`` with the same arguments, bit for bit.
    """
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((n_clusters, intrinsic_dim))
    mixing = rng.standard_normal((intrinsic_dim, dim)) / np.sqrt(intrinsic_dim)
    for b0 in range(0, n, GENERATE_BLOCK):
        m = min(GENERATE_BLOCK, n - b0)
        r = np.random.default_rng([seed, b0])
        lab = r.integers(0, n_clusters, m)
        z = centres[lab] + spread * r.standard_normal((m, intrinsic_dim))
        x = (z @ mixing).astype(np.float32)
        if nonnegative:
            np.maximum(x, 0, out=x)
        x += 0.05 * r.standard_normal((m, dim)).astype(np.float32)
        x /= np.linalg.norm(x, axis=1, keepdims=True)
        yield x.astype(dtype, copy=False)


def clustered_vectors(n: int, dim: int = 1280, *, n_clusters: int = 100, intrinsic_dim: int = 32,
                      spread: float = 0.6, nonnegative: bool = True, seed: int = 0,
                      dtype=np.float32) -> np.ndarray:
    """Unit vectors ``(n, dim)`` that lie near a low-dimensional manifold, in clusters.

    Points are cluster centres plus Gaussian offsets (``spread`` x centre scale) in an
    ``intrinsic_dim``-dimensional latent space, mapped to ``dim`` by a fixed random
    linear map, passed through ReLU when ``nonnegative`` (like CNN features), plus a
    little isotropic noise, then L2-normalised. Generated in blocks, so 1M x 1280 fits;
    :func:`clustered_blocks` yields the same rows without holding them all.
    """
    out = np.empty((n, dim), dtype)
    b0 = 0
    for block in clustered_blocks(n, dim, n_clusters=n_clusters, intrinsic_dim=intrinsic_dim, spread=spread,
                                  nonnegative=nonnegative, seed=seed, dtype=dtype):
        out[b0 : b0 + len(block)] = block
        b0 += len(block)
    return out


def synthetic_path(i: int) -> str:
    """The path :func:`write_spark_output` gives row ``i`` by default."""
    return f"/synthetic/{i:07d}.jpg"


def write_spark_output(path: str | os.PathLike, n: int, *, vectors: np.ndarray | Iterable[np.ndarray] | None = None,
                       paths: Sequence[str] | Callable[[int], str] | None = None, encoder: str = "efficientnet-lite0",
                       info: dict | None = None, files: int | None = None, row_group: int = SPARK_ROW_GROUP,
                       dim: int = 1280, n_clusters: int | None = None, seed: int = 0) -> Path:
    """Write ``n`` embeddings as ``lookalike spark index`` writes them, without Spark, streaming.

    The same schema as :data:`lookalike.spark.embed.OUTPUT_SCHEMA` (``path`` as a ``file:``
    URI, ``size``, ``modificationTime``, ``content_hash``, ``width``, ``height``,
    ``embedding`` as ``list<float>``, ``error``) in ``part-NNNNN.parquet`` files, plus the
    ``_lookalike/`` encoder description that :meth:`lookalike.Collection.import_parquet`
    checks. Rows are written row group by row group with ``pyarrow.parquet.ParquetWriter``:
    memory stays at about one generated block whatever ``n`` is (1M x 1280 is 5 GB of floats).

    Parameters
    ----------
    path : path
        Output folder; must not exist yet.
    n : int
        Rows to write.
    vectors : ndarray (n, dim) or iterable of ndarray (m_i, dim), optional
        The embeddings (an array, a memory map, or blocks that together hold at least ``n``
        rows). Default: :func:`clustered_blocks` with ``n_clusters`` (default ``n // 100``,
        at least 1) and ``seed``.
    paths : sequence of str or callable, optional
        Local path of row ``i`` (a list, or ``f(i) -> str``); default :func:`synthetic_path`.
    encoder : str, default "efficientnet-lite0"
        Registered encoder whose name, weights hash and dim go into ``_lookalike/``.
    info : dict, optional
        The ``_lookalike/`` description itself (skips loading the encoder's weights hash).
    files : int, optional
        Number of ``part-*.parquet`` files (default: one per ``SPARK_ROWS_PER_FILE`` rows).
    row_group : int, default ``SPARK_ROW_GROUP``
        Rows per Parquet row group.

    Returns
    -------
    pathlib.Path
        ``path``. Row ``i`` has ``size = i``, ``width = 100 + i``, ``height = 100``,
        ``content_hash = f"h{i}"`` and a modification time ``i`` microseconds after 2023-11-14.

    Examples
    --------
    >>> write_spark_output("emb", 1000)                                  # doctest: +SKIP
    >>> Collection.create("db").import_parquet("emb")                     # doctest: +SKIP
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    from .spark.data import META_DIR

    path = Path(path)
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    if info is None:
        from .encoders import get_encoder

        enc = get_encoder(encoder)
        info = {"encoder": enc.name, "weights_sha256": enc.weights_hash, "dim": enc.dim, "flip_average": False}
    if vectors is None:
        vectors = clustered_blocks(n, dim, n_clusters=n_clusters or max(1, n // 100), seed=seed)
    elif isinstance(vectors, np.ndarray):
        if len(vectors) < n:
            raise ValueError(f"vectors has {len(vectors)} rows; expected at least n = {n}")
        array = vectors
        vectors = (array[i : i + GENERATE_BLOCK] for i in range(0, n, GENERATE_BLOCK))
    if paths is None:
        paths = synthetic_path
    path_of = paths if callable(paths) else paths.__getitem__
    files = files or max(1, -(-n // SPARK_ROWS_PER_FILE))
    bounds = [n * k // files for k in range(files + 1)]  # rows [bounds[k], bounds[k+1]) go to part k
    schema = pa.schema([("path", pa.string()), ("size", pa.int64()), ("modificationTime", pa.timestamp("us")),
                        ("content_hash", pa.string()), ("width", pa.int32()), ("height", pa.int32()),
                        ("embedding", pa.list_(pa.float32())), ("error", pa.string())])
    path.mkdir(parents=True)
    writers: list = [None]

    def write_rows(i0: int, block: np.ndarray) -> None:
        m = len(block)
        idx = np.arange(i0, i0 + m)
        flat = pa.array(np.ascontiguousarray(block, np.float32).reshape(-1))
        offsets = pa.array(np.arange(0, (m + 1) * block.shape[1], block.shape[1], dtype=np.int32))
        table = pa.table([
            pa.array(["file:" + path_of(i) for i in range(i0, i0 + m)], pa.string()),
            pa.array(idx, pa.int64()),
            pa.array(1_700_000_000_000_000 + idx, pa.timestamp("us")),
            pa.array([f"h{i}" for i in range(i0, i0 + m)], pa.string()),
            pa.array(100 + idx, pa.int32()),
            pa.array(np.full(m, 100), pa.int32()),
            pa.ListArray.from_arrays(offsets, flat),
            pa.nulls(m, pa.string()),
        ], schema=schema)
        part = int(np.searchsorted(bounds, i0, side="right")) - 1
        if writers[0] is None or writers[0][0] != part:
            if writers[0] is not None:
                writers[0][1].close()
            writers[0] = (part, pq.ParquetWriter(path / f"part-{part:05d}.parquet", schema))
        writers[0][1].write_table(table, row_group_size=row_group)

    i0 = 0
    try:
        for block in vectors:
            block = np.asarray(block)
            while len(block) and i0 < n:
                # A row group never straddles a part file or exceeds row_group rows.
                part_end = bounds[int(np.searchsorted(bounds, i0, side="right"))]
                take = min(len(block), row_group, part_end - i0)
                write_rows(i0, block[:take])
                block, i0 = block[take:], i0 + take
            if i0 >= n:
                break
    finally:
        if writers[0] is not None:
            writers[0][1].close()
    if i0 < n:
        raise ValueError(f"vectors ran out after {i0} rows; expected n = {n}")
    if n == 0:
        pq.write_table(schema.empty_table(), path / "part-00000.parquet")
    (path / META_DIR).mkdir()
    (path / META_DIR / "part-00000.txt").write_text(json.dumps(info) + "\n")
    return path
