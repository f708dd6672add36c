"""The indexing pipeline: read -> decode -> preprocess (worker threads) -> encode (batches).

Decoding overlaps inference: a bounded window of files is decoded by worker threads
(Pillow releases the GIL) while the main thread runs the model on the previous batch.
Every file yields exactly one :class:`FileResult`, with a vector or with a reason.
"""

from __future__ import annotations

import hashlib
import os
import time
from collections import deque
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from . import images


@dataclass
class FileResult:
    """The outcome of reading and embedding one file."""

    path: str
    size: int = 0
    mtime_ns: int = 0
    content_hash: str = ""
    width: int = 0
    height: int = 0
    reason: str | None = None  # set when the file was skipped
    vector: np.ndarray | None = None


@dataclass
class StageTimes:
    """Seconds spent per stage; ``decode`` sums worker-thread time (CPU-seconds)."""

    discover: float = 0.0
    decode: float = 0.0
    encode: float = 0.0
    write: float = 0.0
    total: float = 0.0
    extra: dict = field(default_factory=dict)


def content_hash(data: bytes) -> str:
    """128-bit BLAKE2b of the file bytes, hex."""
    return hashlib.blake2b(data, digest_size=16).hexdigest()


def failure_reason(err: Exception) -> str:
    """The reason recorded for a file that could not be read or embedded."""
    if isinstance(err, images.DecodeError):
        return str(err)
    if isinstance(err, FileNotFoundError):
        return "file not found (deleted, or a broken symlink)"
    if isinstance(err, OSError):
        return f"cannot read file: {err.strerror or err}"
    return f"unexpected error: {type(err).__name__}: {err}"  # a decoder bug must not stop the run


def prepare(res: FileResult, data: bytes, encoder, max_pixels: int | None) -> np.ndarray | None:
    """The encoder's input for the bytes ``data`` of the file ``res.path``, or None with ``res.reason`` set.

    Fills ``res.content_hash``, ``res.width`` and ``res.height``. The one place a file's bytes become
    model input, for the local indexer and the Spark workers alike: the same decoder, HEIF
    support and reasons.
    """
    try:
        res.content_hash = content_hash(data)
        if images.needs_heif(res.path):
            images.register_heif()
        dec = images.decode(data, max_pixels=max_pixels, draft_size=encoder.draft_size)
        res.width, res.height = dec.width, dec.height
        return encoder.preprocess(dec.image)
    except Exception as err:
        res.reason = failure_reason(err)
        return None


def _load(path: str, encoder, max_pixels: int | None) -> tuple[FileResult, np.ndarray | None, float]:
    t0 = time.perf_counter()
    res = FileResult(path)
    arr = None
    try:
        st = os.stat(path)
        res.size, res.mtime_ns = st.st_size, st.st_mtime_ns
        data = images.read_bytes(path)
    except Exception as err:
        res.reason = failure_reason(err)
    else:
        arr = prepare(res, data, encoder, max_pixels)
    return res, arr, time.perf_counter() - t0


def embed_files(
    paths: Iterable[str | Path],
    encoder,
    *,
    batch_size: int = 32,
    workers: int | None = None,
    max_pixels: int | None = images.DEFAULT_MAX_PIXELS,
    times: StageTimes | None = None,
) -> Iterator[list[FileResult]]:
    """Embed files in order, yielding one list of results per batch.

    Parameters
    ----------
    paths : iterable of path
    encoder : lookalike.encoders.Encoder
    batch_size : int, default 32
        Images per model call.
    workers : int, optional
        Decode threads (default: CPU count).
    max_pixels : int or None
        Decompression-bomb limit passed to :func:`lookalike.images.decode`.
    times : StageTimes, optional
        Accumulates decode and encode seconds.

    Yields
    ------
    list of FileResult
        In input order; ``vector`` is a ``(dim,)`` unit vector, or ``reason`` says why not.
    """
    times = times or StageTimes()
    workers = workers or os.cpu_count() or 1
    window = max(2 * batch_size, 4 * workers)  # files decoded ahead of the model
    it = iter(paths)
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="lookalike-decode") as pool:
        pending: deque = deque()

        def fill():
            while len(pending) < window:
                try:
                    p = next(it)
                except StopIteration:
                    return
                pending.append(pool.submit(_load, str(p), encoder, max_pixels))

        fill()
        while pending:
            batch: list[tuple[FileResult, np.ndarray | None]] = []
            while pending and len(batch) < batch_size:
                res, arr, dt = pending.popleft().result()
                times.decode += dt
                batch.append((res, arr))
                fill()
            good = [(r, a) for r, a in batch if a is not None]
            if good:
                t0 = time.perf_counter()
                vecs = encoder.embed_batch(np.stack([a for _, a in good]))
                times.encode += time.perf_counter() - t0
                for (r, _), v in zip(good, vecs):
                    r.vector = v
            yield [r for r, _ in batch]
