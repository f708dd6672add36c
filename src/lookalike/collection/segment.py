"""Immutable segments: metadata Parquet + embeddings ``.npy`` (+ tombstones, LSH tables, variants).

A segment is written once, streaming (Arrow batches in, row groups and raw vector bytes out,
memory bounded whatever its size), and never changed: deleting an image records its row in
a tombstone file; merging segments writes a new one. File names are data: a path that is
not valid UTF-8 is kept as its raw bytes (``path_bytes``) next to an escaped display form.

A collection indexed with rotations (:mod:`lookalike.rotations`) gives each segment a
variants file, ``seg-N.var.npy``: ``(rows, V * dim)``, row ``r`` holding the ``V`` variant
embeddings of row ``r`` one after the other. Like the LSH file it may be attached to a
segment after it was written (when rotations are turned on for an existing collection).
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


def _discard(f, tmp: Path) -> None:
    """Close ``f`` (best effort, on the way out of a failed write) and delete its temp file ``tmp``."""
    try:
        f.close()
    except Exception:  # noqa: BLE001
        pass
    if tmp.exists():
        tmp.unlink()


class NpyWriter:
    """A 2-d ``.npy`` file written streaming under a temp name: ``write`` blocks, then ``finish``."""

    def __init__(self, path: Path, width: int, dtype):
        self.path, self.width, self.dtype = path, width, np.dtype(dtype)
        self.tmp = storage.tmp_name(path)
        self.rows = 0
        self._f = open(self.tmp, "wb")
        self._f.write(npy_header(0, width, self.dtype))

    def write(self, block: np.ndarray) -> None:
        """Append ``(m, width)`` rows."""
        self._f.write(np.ascontiguousarray(block, dtype=self.dtype).tobytes())
        self.rows += len(block)

    def close(self) -> None:
        """Fill in the row count, fsync and close (still under the temp name)."""
        self._f.seek(0)
        self._f.write(npy_header(self.rows, self.width, self.dtype))
        self._f.flush()
        os.fsync(self._f.fileno())
        self._f.close()

    def finish(self) -> dict:
        """Close and rename into place; returns the file entry."""
        self.close()
        os.replace(self.tmp, self.path)
        storage.fsync_dir(self.path.parent)
        return storage.describe(self.path)

    def abort(self) -> None:
        """Give up: close and delete the temp file."""
        _discard(self._f, self.tmp)


class SegmentWriter:
    """Writes one segment streaming: ``append`` blocks of rows, then ``finish``.

    Files go to hidden temp names and are renamed into place only by :meth:`finish`
    (still unreferenced until the manifest names them). ``variants``: how many variant
    embeddings each row has (0: no variants file).
    """

    def __init__(self, folder: Path, name: str, dim: int, dtype: str, variants: int = 0):
        import pyarrow.parquet as pq

        self.folder, self.name, self.dim, self.dtype = folder, name, dim, np.dtype(dtype)
        self.variants = variants
        self.meta_path = folder / f"{name}.meta.parquet"
        self._meta_tmp = storage.tmp_name(self.meta_path)
        self.rows = 0
        self._emb = NpyWriter(folder / f"{name}.emb.npy", dim, self.dtype)
        self._var = NpyWriter(folder / f"{name}.var.npy", variants * dim, self.dtype) if variants else None
        self._meta = pq.ParquetWriter(self._meta_tmp, meta_schema(), compression="zstd")

    def append(self, cols: dict[str, np.ndarray], vectors: np.ndarray, variants: np.ndarray | None = None) -> None:
        """Write rows: metadata columns, their ``(m, dim)`` vectors and (with variants) ``(m, V, dim)`` variants."""
        m = len(cols["id"])
        if vectors.shape != (m, self.dim):
            raise ValueError(f"expected vectors of shape ({m}, {self.dim}), got {vectors.shape}")
        if self._var is not None and (variants is None or variants.shape != (m, self.variants, self.dim)):
            got = None if variants is None else variants.shape
            raise ValueError(f"expected variants of shape ({m}, {self.variants}, {self.dim}), got {got}")
        if not len(vectors):
            return
        self._meta.write_batch(arrow_batch(cols))
        self._emb.write(vectors)
        if self._var is not None:
            self._var.write(variants.reshape(m, -1))
        self.rows += len(vectors)

    def finish(self) -> dict:
        """Close, fsync and rename the files; returns the segment's manifest entry."""
        self._meta.close()
        with open(self._meta_tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(self._meta_tmp, self.meta_path)
        entry = {"name": self.name, "rows": self.rows, "deleted": 0, "meta": storage.describe(self.meta_path),
                 "emb": self._emb.finish()}
        if self._var is not None:
            entry["var"] = self._var.finish()
        return entry

    def abort(self) -> None:
        """Give up: close and delete the temp files."""
        _discard(self._meta, self._meta_tmp)
        for w in (self._emb, self._var):
            if w is not None:
                w.abort()


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
        self._variants = None
        self._var_fh = None
        self._var_verified = False
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
        if entry.get("var"):
            self._open_variants()

    def _open_variants(self) -> None:
        var_path = storage.check_size(self.folder, self.entry["var"], self.hint)
        try:
            self._var_fh = open(var_path, "rb")
            shape, dtype, self._var_offset = npy_shape(var_path)
        except FileNotFoundError as err:
            raise CorruptCollectionError(f"Collection file is missing: {err.filename}. {self.hint}") from None
        except (OSError, ValueError, SyntaxError) as err:
            raise CorruptCollectionError(f"Collection file is damaged: {var_path}: {err}. {self.hint}") from None
        if len(shape) != 2 or shape[0] != self.rows or not shape[1] or shape[1] % self.dim:
            raise CorruptCollectionError(
                f"Collection files disagree in {self.folder}: segment {self.name} records {self.rows} rows of "
                f"{self.dim} values, its variants file holds {tuple(shape)}. {self.hint}")
        self._n_variants = shape[1] // self.dim
        self._var_dtype = dtype

    @property
    def n_variants(self) -> int:
        """Variant embeddings per row (0 without a variants file)."""
        if not self.has_variants:
            return 0
        if self._var_fh is None:
            self._open_variants()
        return self._n_variants

    def replace_entry(self, entry: dict) -> None:
        """Take a new manifest entry with the same rows (its LSH or variants file swapped)."""
        if entry.get("lsh") != self.entry.get("lsh") and self._lsh_fh is not None:
            self._lsh_fh.close()  # a rebuilt LSH file has the old one's name: read it afresh
            self._lsh_fh = None
        if entry.get("var") != self.entry.get("var"):
            if self._var_fh is not None:
                self._var_fh.close()
            self._var_fh, self._variants, self._var_verified = None, None, False
        self.entry = entry

    @property
    def has_variants(self) -> bool:
        """Whether the segment has a variants file (collections indexed with rotations)."""
        return bool(self.entry.get("var"))

    def variants(self, verify: bool = True) -> np.ndarray:
        """``(rows, V, dim)`` variant embeddings of all rows, memory-mapped; checksummed on first use."""
        if self._variants is None:
            if self._var_fh is None:
                self._open_variants()
            if verify and not self._var_verified:
                storage.check_digest(self.folder, self.entry["var"], self.hint, fd=self._var_fh.fileno())
                self._var_verified = True
            self._variants = np.memmap(self._var_fh, dtype=self._var_dtype, mode="r", offset=self._var_offset,
                                       shape=(self.rows, self._n_variants, self.dim))
        return self._variants

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
        self._variants = None

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
        for fh in (self._emb_fh, self._lsh_fh, self._var_fh):
            if fh is not None:
                fh.close()

