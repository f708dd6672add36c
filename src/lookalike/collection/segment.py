"""Immutable segments: metadata Parquet + embeddings ``.npy`` (+ tombstones, + LSH tables).

A segment is written once, streaming (Arrow batches in, row groups and raw vector bytes out,
memory bounded whatever its size), and never changed: deleting an image records its row in
a tombstone file; merging segments writes a new one. File names are data: a path that is
not valid UTF-8 is kept as its raw bytes (``path_bytes``) next to an escaped display form.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from .. import storage
from ..storage import CorruptCollectionError

META_SCHEMA_FIELDS = ("id", "path", "path_bytes", "size", "mtime_ns", "content_hash", "width", "height", "label")
COLUMN_DTYPES = {"id": np.int64, "path": object, "size": np.int64, "mtime_ns": np.int64, "content_hash": object,
                 "width": np.int32, "height": np.int32, "label": object}
NPY_HEADER = 128  # fixed header length, so a streaming writer can fill in the row count at the end


def display(path: str) -> str:
    r"""A path as text that always prints: undecodable bytes of a file name shown as ``\\xe9``."""
    try:
        path.encode("utf-8")
        return path
    except UnicodeEncodeError:
        return os.fsencode(path).decode("utf-8", "backslashreplace")


def label_of(path: str) -> str:
    """An image's label: its parent folder's name (display form)."""
    return display(os.path.basename(os.path.dirname(path)))


def meta_schema():
    """The Arrow schema of a segment's metadata file."""
    import pyarrow as pa

    return pa.schema([("id", pa.int64()), ("path", pa.string()), ("path_bytes", pa.binary()), ("size", pa.int64()),
                      ("mtime_ns", pa.int64()), ("content_hash", pa.string()), ("width", pa.int32()),
                      ("height", pa.int32()), ("label", pa.string())])


def empty_columns() -> dict[str, np.ndarray]:
    """Metadata columns of no rows."""
    return {k: np.zeros(0, t) for k, t in COLUMN_DTYPES.items()}


def arrow_batch(cols: dict[str, np.ndarray]):
    """Metadata columns (OS paths) -> an Arrow record batch (display path + raw bytes where needed)."""
    import pyarrow as pa

    paths = cols["path"].tolist()
    shown, raw = [], []
    for p in paths:
        d = display(p)
        shown.append(d)
        raw.append(None if d is p else os.fsencode(p))
    arrays = [pa.array(np.asarray(cols["id"], np.int64)), pa.array(shown, pa.string()), pa.array(raw, pa.binary()),
              pa.array(np.asarray(cols["size"], np.int64)), pa.array(np.asarray(cols["mtime_ns"], np.int64)),
              pa.array(cols["content_hash"].tolist(), pa.string()), pa.array(np.asarray(cols["width"], np.int32)),
              pa.array(np.asarray(cols["height"], np.int32)), pa.array(cols["label"].tolist(), pa.string())]
    return pa.RecordBatch.from_arrays(arrays, schema=meta_schema())


def columns_from_arrow(table) -> dict[str, np.ndarray]:
    """An Arrow metadata table -> column arrays with real OS paths."""
    cols = {}
    for k, t in COLUMN_DTYPES.items():
        if k == "path":
            continue
        cols[k] = np.asarray(table.column(k).to_numpy(zero_copy_only=False), dtype=t)
    paths = np.asarray(table.column("path").to_pylist(), dtype=object)
    if "path_bytes" in table.column_names and table.column("path_bytes").null_count < len(table):
        for i, raw in enumerate(table.column("path_bytes").to_pylist()):
            if raw is not None:
                paths[i] = os.fsdecode(raw)
    cols["path"] = paths
    return {k: cols[k] for k in COLUMN_DTYPES}


def npy_header(rows: int, dim: int, dtype) -> bytes:
    """A ``.npy`` version-1 header of exactly ``NPY_HEADER`` bytes."""
    d = {"descr": np.dtype(dtype).str, "fortran_order": False, "shape": (rows, dim)}
    text = repr(d).encode("latin1")
    pad = NPY_HEADER - 10 - len(text) - 1
    return b"\x93NUMPY\x01\x00" + (NPY_HEADER - 10).to_bytes(2, "little") + text + b" " * pad + b"\n"


def npy_shape(path: Path) -> tuple[tuple[int, int], np.dtype, int]:
    """Shape, dtype and data offset of a ``.npy`` file (reads only its header)."""
    with open(path, "rb") as f:
        version = np.lib.format.read_magic(f)
        if version == (1, 0):
            shape, _, dtype = np.lib.format.read_array_header_1_0(f)
        else:
            shape, _, dtype = np.lib.format.read_array_header_2_0(f)
        return shape, dtype, f.tell()


class SegmentWriter:
    """Writes one segment streaming: ``append`` blocks of rows, then ``finish``.

    Files go to hidden temp names and are renamed into place only by :meth:`finish`
    (still unreferenced until the manifest names them).
    """

    def __init__(self, folder: Path, name: str, dim: int, dtype: str):
        import pyarrow.parquet as pq

        self.folder, self.name, self.dim, self.dtype = folder, name, dim, np.dtype(dtype)
        self.meta_path = folder / f"{name}.meta.parquet"
        self.emb_path = folder / f"{name}.emb.npy"
        self._meta_tmp, self._emb_tmp = storage.tmp_name(self.meta_path), storage.tmp_name(self.emb_path)
        self.rows = 0
        self._emb = open(self._emb_tmp, "wb")
        self._emb.write(npy_header(0, dim, self.dtype))
        self._meta = pq.ParquetWriter(self._meta_tmp, meta_schema(), compression="zstd")

    def append(self, cols: dict[str, np.ndarray], vectors: np.ndarray) -> None:
        """Write rows: metadata columns and their ``(m, dim)`` vectors."""
        if vectors.shape != (len(cols["id"]), self.dim):
            raise ValueError(f"expected vectors of shape ({len(cols['id'])}, {self.dim}), got {vectors.shape}")
        if not len(vectors):
            return
        self._meta.write_batch(arrow_batch(cols))
        self._emb.write(np.ascontiguousarray(vectors, dtype=self.dtype).tobytes())
        self.rows += len(vectors)

    def finish(self) -> dict:
        """Close, fsync and rename the files; returns the segment's manifest entry."""
        self._meta.close()
        self._emb.seek(0)
        self._emb.write(npy_header(self.rows, self.dim, self.dtype))
        self._emb.flush()
        os.fsync(self._emb.fileno())
        self._emb.close()
        with open(self._meta_tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(self._meta_tmp, self.meta_path)
        os.replace(self._emb_tmp, self.emb_path)
        storage.fsync_dir(self.folder)
        return {"name": self.name, "rows": self.rows, "deleted": 0,
                "meta": storage.describe(self.meta_path), "emb": storage.describe(self.emb_path)}

    def abort(self) -> None:
        """Give up: close and delete the temp files."""
        for closer in (self._meta.close, self._emb.close):
            try:
                closer()
            except Exception:  # noqa: BLE001 (best effort on the way out)
                pass
        for p in (self._meta_tmp, self._emb_tmp):
            if p.exists():
                p.unlink()


def write_tombstones(folder: Path, seg_name: str, generation: int, dead_rows: np.ndarray) -> dict:
    """Write the deleted local rows of a segment as of ``generation``; returns the file entry."""
    path = folder / f"{seg_name}.del-{generation:06d}.npy"
    arr = np.asarray(np.sort(dead_rows), np.int64)
    storage.atomic_write(path, lambda f: np.save(f, arr))
    return storage.describe(path)


class Segment:
    """A committed segment as read: metadata columns, deletion mask, vectors on first use."""

    def __init__(self, folder: Path, entry: dict, dim: int, hint: str):
        self.folder, self.entry, self.dim, self.hint = folder, entry, dim, hint
        self.name = entry["name"]
        self.rows = int(entry["rows"])
        self._vectors = None
        self._verified = False
        self.lsh = None  # loaded by the artifacts module
        import pyarrow.parquet as pq

        meta_path = storage.check_digest(folder, entry["meta"], hint)
        try:
            self.cols = columns_from_arrow(pq.read_table(meta_path))
        except (OSError, ValueError, KeyError, TypeError) as err:
            raise CorruptCollectionError(f"Collection file is damaged: {meta_path}: {err}. {hint}") from None
        self.dead = np.zeros(self.rows, bool)
        if entry.get("dels"):
            del_path = storage.check_digest(folder, entry["dels"], hint)
            try:
                rows = np.load(del_path, allow_pickle=False)
                self.dead[rows] = True
            except (OSError, ValueError, IndexError) as err:
                raise CorruptCollectionError(f"Collection file is damaged: {del_path}: {err}. {hint}") from None
        emb_path = storage.check_size(folder, entry["emb"], hint)
        # Held open from here on: a later commit may delete the file, this generation still reads it.
        try:
            self._emb_fh = open(emb_path, "rb")
            self._lsh_fh = open(storage.check_size(folder, entry["lsh"], hint), "rb") if entry.get("lsh") else None
        except FileNotFoundError as err:  # deleted since the size check (a commit raced this reader)
            raise CorruptCollectionError(f"Collection file is missing: {err.filename}. {hint}") from None
        try:
            shape, dtype, self._offset = npy_shape(emb_path)
        except (OSError, ValueError, SyntaxError) as err:
            raise CorruptCollectionError(f"Collection file is damaged: {emb_path}: {err}. {hint}") from None
        self.dtype = dtype
        if len(self.cols["id"]) != self.rows or tuple(shape) != (self.rows, dim) or int(self.dead.sum()) != int(
                entry.get("deleted", 0)):
            raise CorruptCollectionError(
                f"Collection files disagree in {folder}: segment {self.name} records {self.rows} rows, its metadata "
                f"has {len(self.cols['id'])}, its embeddings {tuple(shape)}. {hint}")
        self.alive_rows = np.nonzero(~self.dead)[0]

    @property
    def live(self) -> int:
        """Rows not deleted."""
        return len(self.alive_rows)

    def vectors(self, verify: bool = True) -> np.ndarray:
        """All rows' vectors (deleted ones too), memory-mapped; checksummed on first use in this process."""
        if self._vectors is None:
            if verify and not self._verified:
                storage.check_digest(self.folder, self.entry["emb"], self.hint, fd=self._emb_fh.fileno())
                self._verified = True
            self._vectors = np.memmap(self._emb_fh, dtype=self.dtype, mode="r", offset=self._offset,
                                      shape=(self.rows, self.dim))
        return self._vectors

    def release(self) -> None:
        """Unmap the vectors (their pages leave this process's memory); mapped again on next use."""
        self._vectors = None

    def lsh_bytes(self) -> bytes:
        """The segment's LSH file, checksummed (from the descriptor opened with the segment)."""
        if self._lsh_fh is None:  # tables built after this segment was read
            self._lsh_fh = open(storage.check_size(self.folder, self.entry["lsh"], self.hint), "rb")
        fd = self._lsh_fh.fileno()
        storage.check_digest(self.folder, self.entry["lsh"], self.hint, fd=fd)
        chunks, pos = [], 0
        while chunk := os.pread(fd, storage.CHUNK, pos):
            chunks.append(chunk)
            pos += len(chunk)
        return b"".join(chunks)

    def close(self) -> None:
        """Release the files (memory maps already made stay valid)."""
        for fh in (self._emb_fh, self._lsh_fh):
            if fh is not None:
                fh.close()

