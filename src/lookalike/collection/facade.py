"""``Collection``: the one object the CLI, the server and users work with.

It reads a committed generation (``view.Snapshot`` over ``segment.Segment`` files named by
the manifest in ``store``, read by ``loading``). Its methods come from mixins, one job each:
``query.QueryMixin`` (embed and search), ``writing.WritingMixin`` (index, add, remove, rename,
import, maintain) and ``commit.CommitMixin`` (every write goes through ``_writing``: take the
folder's lock, *then* re-read the manifest, change, commit, release). Here: creating, opening,
reading and verifying a collection.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np

from .. import storage
from ..dupes import DEFAULT_THRESHOLD
from ..encoders import LEGACY_VIEWS, Encoder, canonical_name, default_engine, get_encoder
from ..rotations import check_variants
from ..storage import CollectionError
from . import store
from .commit import CommitMixin
from .loading import load
from .query import QueryMixin
from .segment import Segment
from .view import Snapshot
from .writing import IndexReport, WritingMixin, install_int8

log = logging.getLogger(__name__)

__all__ = ["DEFAULT_DTYPE", "Collection", "IndexReport"]

# New collections store float16 embeddings: half the disk and memory; retrieval quality
# moves by < 0.001 (README, "Storage precision").
DEFAULT_DTYPE = "float16"


class Collection(QueryMixin, WritingMixin, CommitMixin):
    """A folder holding embeddings of images and everything needed to search them.

    Use :meth:`create` or :meth:`open`; then :meth:`index` a folder and :meth:`search`.

    Examples
    --------
    >>> col = Collection.create("photos.lookalike")          # doctest: +SKIP
    >>> report = col.index("~/Pictures")                       # doctest: +SKIP
    >>> col.search("query.jpg", k=5)[0].path                   # doctest: +SKIP
    """

    def __init__(self, path: Path, manifest: dict, segments: list[Segment], errors, stamp, *, read_only: bool,
                 engine: str | None, verify: bool = True):
        self.path = path
        self.read_only = read_only
        self._engine = engine
        self._encoder: Encoder | None = None
        self._verify = verify
        self._locked = False
        self._set_state(manifest, segments, errors, stamp)

    def _set_state(self, manifest, segments, errors, stamp) -> None:
        self.manifest = manifest
        self._segments = {s.name: s for s in segments}
        self._snap = Snapshot(segments, self._verify)
        self._errors = errors
        self._stamp = stamp
        self._lsh = None
        self._search_matrix = None
        dba = manifest.get("dba")
        try:  # held open like the segments' files: this generation's DBA vectors stay readable
            self._dba_fh = open(self.path / dba["file"]["name"], "rb") if dba else None
        except OSError:
            self._dba_fh = None  # reported as missing at first use

    # ---------------------------------------------------------------- create / open
    @classmethod
    def create(cls, path: str | os.PathLike = store.DEFAULT_DB, *, encoder: str | None = None,
               engine: str | None = None, flip_average: bool = False, overwrite: bool = False,
               dtype: str = DEFAULT_DTYPE, views=None, rotations=False) -> Collection:
        """Make a new, empty collection folder.

        Parameters
        ----------
        path : path, default ``./lookalike-index``
        encoder : str, optional
            Registered encoder name (default ``efficientnet-lite0``).
        engine : {"onnx", "onnx-int8", "torch"}, optional
            The collection's engine (stored). Default ``encoders.default_engine(encoder)``:
            ``onnx-int8`` for the built-in Lite0, whose int8 model is built from activation ranges
            shipped with lookalike (the same model for every collection, copied into the folder);
            ``onnx`` (float) for encoders without shipped ranges.
        flip_average : bool, default False
            Embed each image as the sum of it and its mirror image (stored).
        overwrite : bool, default False
            Replace an existing collection at ``path`` (under the lock: never while another writes).
        dtype : {"float16", "float32"}, default "float16"
            Storage precision of the embeddings.
        views : sequence of {"crop", "full"}, optional
            What each embedding is pooled from (stored; default ``encoders.DEFAULT_VIEWS``).
        rotations : bool or sequence of {"rot90", "rot180", "rot270"}, default False
            True: also store the embeddings of each image turned by 90 and 180 degrees, so
            ``dupes`` finds copies turned by 90, 180 or 270 degrees (about 3x the encode time
            and the embeddings' disk; search is unchanged). A sequence names the turns to
            store. See :mod:`lookalike.rotations`.
        """
        path = Path(path).expanduser()
        if dtype not in ("float16", "float32"):
            raise ValueError(f"dtype must be 'float16' or 'float32', got {dtype!r}")
        if path.exists() and not path.is_dir():
            raise CollectionError(f"{path} is a file, not a collection folder; choose another --db.")
        chosen, engine = engine, engine or default_engine(canonical_name(encoder))
        enc = get_encoder(encoder, engine, flip_average=flip_average, views=views)  # fails before any folder is made
        variants = check_variants(rotations) if rotations else ()
        shared_int8 = None
        if engine == "onnx-int8" and enc.has_shared_int8:
            try:
                shared_int8 = enc.shared_int8_path()
            except (ValueError, KeyError, RuntimeError) as err:
                if chosen is not None:
                    raise
                # The default must not stop a first run: shipped ranges that this ONNX Runtime cannot use
                # (another version naming the graph's tensors otherwise) leave the new collection on float.
                log.warning("the shared int8 model cannot be built here (%s); this new collection uses the float "
                            "engine (--engine onnx: same results, ~2x slower to index)", err)
                engine = "onnx"
                enc = get_encoder(encoder, engine, flip_average=flip_average, views=views)
        try:
            path.mkdir(parents=True, exist_ok=True)
            with store.Lock(path):
                generation = 0
                if (path / store.MANIFEST).exists():
                    if not overwrite:
                        raise CollectionError(
                            f"A collection already exists at {path}; open it, or pass overwrite=True (--rebuild).")
                    try:
                        generation = int(store.read_manifest(path)["generation"])
                    except (CollectionError, KeyError, ValueError, TypeError):
                        generation = 0
                elif any(not store.ours(f.name) for f in path.iterdir()) and not overwrite:
                    raise CollectionError(
                        f"{path} exists and is not an empty folder or a collection; choose another --db.")
                manifest = store.new_manifest(enc, flip_average=flip_average, dtype=dtype,
                                              generation=generation + 1)
                if variants:
                    manifest["rotations"] = list(variants)
                if shared_int8 is not None:  # the queries of this collection use exactly this file
                    manifest["int8_model"] = install_int8(path, shared_int8, enc)
                store.write_manifest(path, manifest)
                store.remove_unreferenced(path, manifest)
        except OSError as err:
            raise CollectionError(storage.os_error_message(err, path) or f"Cannot create {path}: {err}") from None
        if shared_int8 is not None:
            enc.int8_model = path / manifest["int8_model"]["name"]
        col = cls(path, manifest, [], [], store.manifest_stamp(path), read_only=False, engine=engine)
        col._encoder = enc
        return col

    @classmethod
    def open(cls, path: str | os.PathLike = store.DEFAULT_DB, *, read_only: bool = False, encoder: str | None = None,
             engine: str | None = None, verify: bool = True) -> Collection:
        """Open an existing collection.

        Small files (manifest, metadata, tombstones, errors) are checksummed here; the large
        ones (embeddings, LSH tables, DBA vectors) have their size checked here and their
        checksum on first use in this process (``verify=False`` skips those).

        Raises
        ------
        CollectionError
            No collection there, a newer format, or a different encoder.
        CorruptCollectionError
            A file is missing or damaged; the message names it and how to rebuild.
        """
        path = Path(path).expanduser()
        if path.exists() and not path.is_dir():
            raise CollectionError(f"{path} is a file, not a collection folder. Pass the folder given to "
                                  "`lookalike index ... --db`.")
        manifest, segments, errors, stamp = load(path, verify)
        if encoder is not None:
            from ..encoders import canonical_name

            encoder = canonical_name(encoder)  # onnx:PATH compares by its absolute path
        if encoder is not None and encoder != manifest["encoder"]:
            raise CollectionError(
                f"{path} was built with encoder {manifest['encoder']!r}, not {encoder!r}. Embeddings of different "
                f"encoders cannot be compared: omit --encoder, or use a new --db (or --rebuild) for {encoder!r}.")
        return cls(path, manifest, segments, errors, stamp, read_only=read_only, engine=engine, verify=verify)

    @classmethod
    def open_or_create(cls, path: str | os.PathLike = store.DEFAULT_DB, **kwargs) -> Collection:
        """Open ``path`` if it holds a collection, else create one there."""
        path = Path(path).expanduser()
        if (path / store.MANIFEST).exists():
            return cls.open(path, encoder=kwargs.get("encoder"), engine=kwargs.get("engine"))
        return cls.create(path, **{k: v for k, v in kwargs.items() if k != "overwrite"})

    def reload(self) -> bool:
        """Re-read the collection if another process committed since; True if it changed."""
        if store.manifest_stamp(self.path) == self._stamp:
            return False
        self._set_state(*load(self.path, self._verify))
        return True

    # ---------------------------------------------------------------- properties
    def __len__(self) -> int:
        return len(self._snap)

    def __repr__(self) -> str:
        return f"Collection({str(self.path)!r}, encoder={self.encoder_name!r}, images={len(self)})"

    @property
    def generation(self) -> int:
        """The committed generation this object reads (grows with every commit)."""
        return int(self.manifest["generation"])

    @property
    def encoder_name(self) -> str:
        """Name of the encoder that produced the embeddings."""
        return self.manifest["encoder"]

    @property
    def encoder(self) -> Encoder:
        """The encoder, built on first use; refuses weights that differ from the collection's."""
        if self._encoder is None:
            built = self.manifest.get("engine", "onnx")
            engine = self._engine or built
            if (engine == "onnx-int8") != (built == "onnx-int8"):
                raise CollectionError(
                    f"{self.path} was built with the {built!r} engine; int8 and float embeddings differ slightly, "
                    f"so use --engine {built} with it (or --rebuild).")
            int8 = None
            if engine == "onnx-int8" and "int8_model" in self.manifest:
                info = self.manifest["int8_model"]
                int8 = self.path / info["name"]
                storage.verify(int8, info["sha256"], store.RECOVER_HINT.format(db=self.path))
            enc = get_encoder(self.encoder_name, engine, int8_model=int8,
                              flip_average=bool(self.manifest.get("flip_average", False)),
                              views=self.manifest.get("views", LEGACY_VIEWS))
            if enc.weights_hash != self.manifest["weights_sha256"]:
                raise CollectionError(
                    f"The installed weights for {enc.name!r} differ from those that built {self.path} "
                    f"(sha256 {enc.weights_hash[:12]} vs {self.manifest['weights_sha256'][:12]}); "
                    "rebuild with --rebuild.")
            self._encoder = enc
        return self._encoder

    @property
    def rotations(self) -> tuple[str, ...]:
        """The variants stored per image for ``dupes`` (e.g. ``("rot90", "rot180", "rot270")``); () if off."""
        return tuple(self.manifest.get("rotations") or ())

    def variant_embeddings(self, v: int):
        """``(n, dim)`` embeddings of every image's ``v``-th variant (see :attr:`rotations`), like :attr:`embeddings`.

        An image whose variants are not embedded yet gives its plain embedding.
        """
        if not 0 <= v < len(self.rotations):
            raise IndexError(f"{self.path} stores {len(self.rotations)} variants per image, not {v + 1}")
        return self._snap.variant_rows(v)

    def variants_of_rows(self, rows) -> np.ndarray | None:
        """``(len(rows), V, dim)`` float32 variant embeddings of collection rows; None without rotations."""
        if not self.rotations:
            return None
        return np.stack([self._snap.variant_rows(v).take(rows) for v in range(len(self.rotations))], axis=1)

    @property
    def embeddings(self):
        """``(n, dim)`` unit vectors, read-only: a :class:`~lookalike.collection.view.Rows` view.

        Index it by row, slice or array (float32 out); ``np.asarray`` builds the whole matrix.
        """
        return self._snap.rows

    @property
    def ids(self) -> np.ndarray:
        """``(n,)`` int64 image ids, aligned with :attr:`embeddings` rows."""
        return self._snap.cols["id"]

    @property
    def paths(self) -> list[str]:
        """Image paths (as the OS names them), aligned with :attr:`embeddings` rows."""
        return self._snap.cols["path"].tolist()

    @property
    def labels(self) -> list[str]:
        """Parent-folder labels, aligned with :attr:`embeddings` rows."""
        return self._snap.cols["label"].tolist()

    @property
    def errors(self) -> list[tuple[str, str]]:
        """``(path, reason)`` of every file skipped so far (current state)."""
        return list(self._errors)

    @property
    def segments(self) -> list[dict]:
        """The segments: name, rows, deleted rows, LSH or not."""
        return [{"name": s.name, "rows": s.rows, "live": s.live, "lsh": bool(s.entry.get("lsh")),
                 "variants": s.has_variants} for s in self._snap.segments]

    def describe(self) -> dict:
        """Size, pipeline, storage, search method, LSH and DBA state (see :func:`.describe.describe`)."""
        from .describe import describe

        return describe(self)

    def metadata(self):
        """The metadata as a ``pyarrow.Table`` (one row per image; paths in display form)."""
        import pyarrow as pa

        from .segment import arrow_batch

        return pa.Table.from_batches([arrow_batch(self._snap.cols)])

    def metadata_columns(self) -> dict[str, np.ndarray]:
        """The metadata as aligned column arrays (read-only use)."""
        return self._snap.cols

    def row_of_id(self, image_id: int) -> int:
        """Row number of an image id; KeyError if absent."""
        return self._snap.row_of_id(int(image_id))

    def record(self, image_id: int) -> dict:
        """Metadata of one image by id."""
        r = self.row_of_id(image_id)
        return {k: (v[r].item() if hasattr(v[r], "item") else v[r]) for k, v in self._snap.cols.items()}

    def duplicates(self, threshold: float = DEFAULT_THRESHOLD, *, strict: bool = False, method: str = "auto",
                   against=None):
        """Groups of near-duplicate images (report only: nothing is deleted or moved).

        With ``against`` (another collection): the pairs of images of this collection
        duplicated there.
        """
        from ..dupes import find_pairs, group_pairs

        pairs = find_pairs(self, threshold, method=method, against=against)
        if against is not None:
            return pairs
        groups = group_pairs(self, pairs, strict=strict)
        return sorted(groups, key=lambda g: (-g.min_score, -len(g.ids)))  # strongest first

    def verify(self) -> list[str]:
        """Check every file of the collection against its checksum; returns the names checked.

        Raises :class:`CorruptCollectionError` naming the first damaged file.
        """
        hint = store.RECOVER_HINT.format(db=self.path)
        checked = [store.MANIFEST]
        store.read_manifest(self.path)
        for seg in self._snap.segments:
            for role in store.SEGMENT_FILES:
                if seg.entry.get(role):
                    storage.check_digest(self.path, seg.entry[role], hint)
                    checked.append(seg.entry[role]["name"])
        for info in (self.manifest.get("errors_file"), (self.manifest.get("dba") or {}).get("file")):
            if info:
                storage.check_digest(self.path, info, hint)
                checked.append(info["name"])
        if self.manifest.get("int8_model"):
            storage.verify(self.path / self.manifest["int8_model"]["name"], self.manifest["int8_model"]["sha256"],
                           hint)
            checked.append(self.manifest["int8_model"]["name"])
        return checked
