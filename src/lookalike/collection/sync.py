"""Bringing a collection up to date: folder scans, checkpoints, the streaming Spark import.

A folder scan finds what to embed and what vanished; embedding commits in checkpoints.

Everything here runs with the writer's lock held (see ``Collection._writing``). Each
checkpoint commits one new segment plus tombstones for the rows it replaces: O(new rows).
"""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path

import numpy as np

from ..indexer import FileResult, embed_files
from ..rotations import VariantEncoder
from ..storage import CollectionError, CorruptCollectionError
from .segment import COLUMN_DTYPES, NpyWriter, SegmentWriter, label_of

log = logging.getLogger(__name__)


def checkpoint_rows() -> int:
    """Rows between commits; ``$LOOKALIKE_CHECKPOINT_ROWS`` overrides (used by the crash tests)."""
    from . import CHECKPOINT_MIN_ROWS  # read at call time: tests patch it

    return int(os.environ.get("LOOKALIKE_CHECKPOINT_ROWS", 0)) or CHECKPOINT_MIN_ROWS


def results_columns(results: list[FileResult], ids: list[int]) -> dict[str, np.ndarray]:
    """Metadata columns of embedded files."""
    return {
        "id": np.asarray(ids, np.int64),
        "path": np.asarray([r.path for r in results], object),
        "size": np.asarray([r.size for r in results], np.int64),
        "mtime_ns": np.asarray([r.mtime_ns for r in results], np.int64),
        "content_hash": np.asarray([r.content_hash for r in results], object),
        "width": np.asarray([r.width for r in results], np.int32),
        "height": np.asarray([r.height for r in results], np.int32),
        "label": np.asarray([label_of(r.path) for r in results], object),
    }


def scan(col, found: list[str], in_scope, unreadable: list[str], report):
    """Compare the files found with the collection: (files to embed, rows removed)."""
    snap, cols = col._snap, col._snap.cols
    todo = []
    for p in found:
        r = snap.row_of_path(p)
        if r is None:
            todo.append(p)
            continue
        try:
            st = os.stat(p)
        except OSError:
            todo.append(p)  # will be recorded with its reason
            continue
        if st.st_size == cols["size"][r] and st.st_mtime_ns == cols["mtime_ns"][r]:
            report.unchanged += 1
        else:
            todo.append(p)
    found_set = set(found)
    stale_dirs = tuple(d.rstrip(os.sep) + os.sep for d in unreadable)
    removed, stale = [], 0
    for r, p in enumerate(cols["path"].tolist()):
        if in_scope(p) and p not in found_set:
            if stale_dirs and p.startswith(stale_dirs):
                stale += 1  # its folder cannot be listed now: keep it, do not guess
                continue
            removed.append(r)
    report.removed = len(removed)
    report.stale = stale
    return todo, np.asarray(removed, np.int64)


def run_index(col, found: list[str], in_scope, root: Path | None, unreadable: list[str], report, *,
              batch_size: int, workers: int | None, max_pixels: int | None, progress: bool, on_batch) -> None:
    """Embed what changed under the lock and commit it in checkpoints (O(new rows) each)."""
    todo, removed = scan(col, found, in_scope, unreadable, report)
    errors = {p: r for p, r in col._errors if not (in_scope(p) and p not in set(found)) and p not in set(todo)}
    if len(removed) or len(errors) != len(col._errors):
        col._commit(dead_rows=removed, errors=errors)
    if todo:  # the model is built (first run) or loaded here, timed apart from the indexing rate
        t0 = time.perf_counter()
        col.encoder  # noqa: B018
        report.times.extra["prepare_model"] = time.perf_counter() - t0
    if todo and col.encoder.engine_name == "onnx-int8" and not col.manifest.get("int8_model"):
        t0 = time.perf_counter()
        col._prepare_int8(todo, max_pixels)
        report.times.extra["calibrate"] = time.perf_counter() - t0
    bar = None
    if progress and todo:
        from tqdm import tqdm

        bar = tqdm(total=len(todo), unit="img", desc="indexing", smoothing=0.1, dynamic_ncols=True)
    pending: list[FileResult] = []
    failed: list[str] = []  # indexed files that changed and can no longer be read: dropped
    variants: dict[str, np.ndarray] = {}  # path -> (V, dim) rotated copies' embeddings (rotations on)
    rotations = col.manifest.get("rotations")
    encoder = VariantEncoder(col.encoder, rotations) if rotations and todo else col.encoder

    def flush():
        t0 = time.perf_counter()
        commit_results(col, pending, failed, errors, variants if rotations else None)
        pending.clear()
        failed.clear()
        variants.clear()
        report.times.write += time.perf_counter() - t0

    try:
        for batch in embed_files(todo, encoder, batch_size=batch_size, workers=workers,
                                 max_pixels=max_pixels, times=report.times):
            for res in batch:
                if rotations and res.vector is not None:  # (1 + V, dim): the image, then its variants
                    res.vector, variants[res.path] = res.vector[0], res.vector[1:]
                indexed = col._snap.row_of_path(res.path) is not None
                if res.vector is None:
                    errors[res.path] = res.reason
                    report.skipped.append((res.path, res.reason))
                    if indexed:
                        failed.append(res.path)
                else:
                    errors.pop(res.path, None)
                    pending.append(res)
                    if indexed:
                        report.updated += 1
                    else:
                        report.added += 1
            if bar is not None:
                bar.update(len(batch))
            if on_batch is not None:
                on_batch(batch)
            if len(pending) >= checkpoint_rows():
                flush()
    except KeyboardInterrupt:
        report.interrupted = True
        log.info("interrupted: saving the %d images embedded so far", len(pending))
    finally:
        if bar is not None:
            bar.close()
    if pending or failed or errors != dict(col._errors) or (
            root is not None and str(root) not in col.manifest.get("roots", [])):
        flush()
        if root is not None and str(root) not in col.manifest.get("roots", []):
            col._commit(roots=sorted(set(col.manifest.get("roots", [])) | {str(root)}))


def commit_results(col, results: list[FileResult], failed: list[str], errors: dict[str, str],
                   variants: dict[str, np.ndarray] | None = None) -> None:
    """One checkpoint: a segment of the new rows (+ their variants) + tombstones of the rows they replace."""
    snap = col._snap
    ids, dead = [], []
    next_id = col.manifest["next_id"]
    for r in results:
        row = snap.row_of_path(r.path)
        if row is None:
            ids.append(next_id)
            next_id += 1
        else:
            ids.append(int(snap.cols["id"][row]))
            dead.append(row)
    dead += [snap.row_of_path(p) for p in failed if snap.row_of_path(p) is not None]
    entry = None
    if results:
        n_var = len(col.manifest.get("rotations") or ()) if variants is not None else 0
        writer = SegmentWriter(col.path, col._new_segment_name(), col.manifest["dim"], col.manifest["dtype"], n_var)
        try:
            writer.append(results_columns(results, ids), np.stack([r.vector for r in results]),
                          np.stack([variants[r.path] for r in results]) if n_var else None)
            entry = writer.finish()
        except BaseException:
            writer.abort()
            raise
    col._commit(new_segments=[entry] if entry else [], dead_rows=np.asarray(dead, np.int64), errors=errors,
                next_id=next_id)


# ------------------------------------------------------------------ spark import
def local_path(uri: str) -> str:
    """``file:/a/b`` or ``file:///a/b`` -> ``/a/b``; other URIs (hdfs://, s3a://) are kept."""
    if uri.startswith("file://"):
        return uri[len("file://"):]
    return uri.removeprefix("file:")  # Hadoop paths are not percent-encoded: keep '%' as it is


def spark_meta(source: Path) -> dict:
    """The encoder description ``spark index`` writes under ``SOURCE/_lookalike``."""
    parts = sorted((source / "_lookalike").glob("part-*"))
    if not source.is_dir() or not parts:
        raise CollectionError(f"{source} is not the output of `lookalike spark index` (no _lookalike/ description).")
    for part in parts:
        text = part.read_text().strip()
        if text:
            return json.loads(text.splitlines()[0])
    raise CollectionError(f"{source}/_lookalike is empty; re-run lookalike spark index.")


def _matrix(column, dim: int) -> np.ndarray:
    """An Arrow list column of equal-length vectors -> ``(n, dim)`` float32, without Python floats."""
    import pyarrow as pa
    import pyarrow.compute as pc

    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks()
    lengths = pc.list_value_length(column).to_numpy(zero_copy_only=False)
    if len(lengths) and (lengths != dim).any():
        bad = int(np.nonzero(lengths != dim)[0][0])
        raise ValueError(f"row {bad} has an embedding of {lengths[bad]} values, expected {dim}")
    flat = pc.list_flatten(column).to_numpy(zero_copy_only=False)
    return np.asarray(flat, np.float32).reshape(len(column), dim)


def _batches(dataset, columns: list[str], rows: int = 8_192):
    """Record batches of the dataset's files, one row group at a time.

    Memory stays bounded: a dataset scan reads ahead several files' row groups (1.4 GB of
    buffers at 300k rows of 1280-d embeddings).
    """
    import pyarrow.parquet as pq

    for path in dataset.files:
        with pq.ParquetFile(path, pre_buffer=False) as f:
            yield from f.iter_batches(batch_size=rows, columns=columns, use_threads=False)


def import_parquet(col, source: Path, report, *, segment_rows: int) -> None:
    """Stream a ``spark index`` output into new segments (Arrow batches in, bounded memory)."""
    import pyarrow.compute as pc
    import pyarrow.dataset as ds

    info = spark_meta(source)
    mine = col.manifest
    if info.get("weights_sha256") != mine["weights_sha256"] or info.get("dim") != mine["dim"]:
        raise CollectionError(
            f"{source} holds {info.get('encoder', 'unknown-encoder')!r} embeddings, but {col.path} uses "
            f"{mine['encoder']!r}{' with flip averaging' if mine.get('flip_average') else ''}. Import into a "
            f"collection created with --encoder {info.get('encoder')}, or re-run spark index with "
            f"--encoder {mine['encoder']}.")
    if mine.get("flip_average") and not info.get("flip_average"):
        raise CollectionError(f"{col.path} uses flip averaging; {source} does not. Import into a new --db.")
    dataset = ds.dataset(source, format="parquet")
    names = set(dataset.schema.names)
    columns = [c for c in ("path", "size", "modificationTime", "width", "height", "embedding", "error",
                           "content_hash") if c in names]
    dim, snap = mine["dim"], col._snap
    errors = dict(col._errors)
    next_id = mine["next_id"]
    entries, dead, seen = [], [], set()
    writer = None
    try:
        for batch in _batches(dataset, columns):
            paths = [local_path(p) for p in batch.column("path").to_pylist()]
            errs = batch.column("error").to_pylist()
            good = np.array([e is None for e in errs], bool)
            for p, e in zip(paths, errs):
                if e is not None:
                    errors[p] = e
                    report.skipped.append((p, e))
            if not good.any():
                continue
            b = batch.filter(good)
            gpaths = [p for p, g in zip(paths, good) if g]
            try:
                vectors = _matrix(b.column("embedding"), dim)
            except ValueError as err:
                raise CorruptCollectionError(f"{source}: {err}. Re-run spark index.") from None
            ids = np.empty(len(gpaths), np.int64)
            for i, p in enumerate(gpaths):
                errors.pop(p, None)
                row = snap.row_of_path(p)
                if row is not None and p not in seen:
                    ids[i] = snap.cols["id"][row]
                    dead.append(row)
                    report.updated += 1
                else:
                    ids[i] = next_id
                    next_id += 1
                    report.added += 1
                seen.add(p)
            mtime = b.column("modificationTime")
            mtime_ns = pc.cast(mtime, "int64").to_numpy(zero_copy_only=False) if mtime.type.unit == "ns" else \
                (pc.cast(pc.cast(mtime, "timestamp[us]"), "int64").to_numpy(zero_copy_only=False) * 1000)
            cols = {
                "id": ids, "path": np.asarray(gpaths, object),
                "size": np.nan_to_num(np.asarray(b.column("size").to_numpy(zero_copy_only=False), float)).astype(
                    np.int64),
                "mtime_ns": np.nan_to_num(np.asarray(mtime_ns, float)).astype(np.int64),
                "content_hash": np.asarray(b.column("content_hash").to_pylist() if "content_hash" in columns
                                           else [""] * len(gpaths), object),
                "width": np.nan_to_num(np.asarray(b.column("width").to_numpy(zero_copy_only=False), float)).astype(
                    np.int32),
                "height": np.nan_to_num(np.asarray(b.column("height").to_numpy(zero_copy_only=False),
                                                   float)).astype(np.int32),
                "label": np.asarray([label_of(p) for p in gpaths], object),
            }
            cols = {k: np.asarray(v, COLUMN_DTYPES[k]) for k, v in cols.items()}
            start = 0
            while start < len(ids):
                if writer is None:
                    writer = SegmentWriter(col.path, col._new_segment_name(len(entries)), dim, mine["dtype"])
                take = min(len(ids) - start, segment_rows - writer.rows)
                sl = slice(start, start + take)
                writer.append({k: v[sl] for k, v in cols.items()}, vectors[sl])
                start += take
                if writer.rows >= segment_rows:
                    entries.append(writer.finish())
                    writer = None
        if writer is not None and writer.rows:
            entries.append(writer.finish())
            writer = None
    except BaseException:
        if writer is not None:
            writer.abort()
        raise
    col._commit(new_segments=entries, dead_rows=np.asarray(dead, np.int64), errors=errors, next_id=next_id)


# ------------------------------------------------------------------ rotations of existing images
BACKFILL_BLOCK_ROWS = 1_024


def backfill_variants(col, report, *, batch_size: int, workers: int | None, max_pixels: int | None,
                      progress: bool) -> None:
    """Embed the variants (rotations) of the images in segments that have none; one commit per segment.

    For a collection whose rotations were turned on after images were indexed (or after a
    Spark import). Each image is read again; one that changed since it was indexed (another
    content hash) or cannot be read any more, and every deleted row, gets its plain vector as
    variants (adding nothing to a score) until it is indexed again. Under the writer's lock.
    """
    rotations = col.manifest.get("rotations")
    if not rotations:
        return
    todo = [s for s in col._snap.segments if not s.has_variants or s.n_variants != len(rotations)]
    if not todo:
        return
    encoder = VariantEncoder(col.encoder, rotations, original=False)
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=sum(s.live for s in todo), unit="img", desc="rotations", dynamic_ncols=True)
    try:
        for seg in todo:
            writer = NpyWriter(col.path / f"{seg.name}.var.npy", len(rotations) * seg.dim, col.manifest["dtype"])
            try:
                vec = seg.vectors()
                for b0 in range(0, seg.rows, BACKFILL_BLOCK_ROWS):
                    block = np.asarray(vec[b0 : b0 + BACKFILL_BLOCK_ROWS], np.float32)
                    out = np.repeat(block[:, None], len(rotations), axis=1)
                    live = np.nonzero(~seg.dead[b0 : b0 + len(block)])[0]
                    done = 0  # results come in input order
                    for batch in embed_files(seg.cols["path"][b0 + live].tolist(), encoder, batch_size=batch_size,
                                             workers=workers, max_pixels=max_pixels, times=report.times):
                        for res in batch:
                            i = live[done]
                            done += 1
                            known = seg.cols["content_hash"][b0 + i]  # "" from a Spark job that kept none
                            if res.vector is not None and (not known or res.content_hash == known):
                                out[i] = res.vector
                                report.rotated += 1
                        if bar is not None:
                            bar.update(len(batch))
                    writer.write(out.reshape(len(block), -1))
                info = writer.finish()
            except BaseException:
                writer.abort()
                raise
            seg.release()
            col._commit(replace={seg.name: dict(seg.entry, var=info)})
    except KeyboardInterrupt:
        report.interrupted = True
        log.info("interrupted: the rotations of %d images were saved", report.rotated)
    finally:
        if bar is not None:
            bar.close()
