"""``Collection``: the one object the CLI, the server and users work with.

It reads a committed generation (``view.Snapshot`` over ``segment.Segment`` files named by
the manifest in ``store``), and every write goes through :meth:`Collection._writing`: take
the folder's lock, *then* re-read the manifest, change, commit, release.
"""

from __future__ import annotations

import logging
import os
import re
import time
from collections.abc import Iterable
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .. import images, storage
from ..dupes import DEFAULT_THRESHOLD
from ..encoders import LEGACY_VIEWS, Encoder, get_encoder
from ..indexer import StageTimes
from ..rotations import check_variants
from ..storage import CollectionError, CorruptCollectionError
from . import artifacts, merge, store, sync
from .query import QueryMixin
from .segment import Segment, display, write_tombstones
from .view import Snapshot

log = logging.getLogger(__name__)

# The parts of a segment entry that define its rows (a change of the others only swaps side files).
ROW_FILES = ("rows", "deleted", "meta", "emb", "dels")
# New collections store float16 embeddings: half the disk and memory; retrieval quality
# moves by < 0.001 (README, "Storage precision").
DEFAULT_DTYPE = "float16"


@dataclass
class IndexReport:
    """What one ``index``/``add``/``import`` run did."""

    added: int = 0
    updated: int = 0
    removed: int = 0
    unchanged: int = 0
    stale: int = 0  # kept although their folder could not be listed this time
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (path, reason)
    unreadable_folders: list[str] = field(default_factory=list)
    times: StageTimes = field(default_factory=StageTimes)
    interrupted: bool = False
    merged_segments: int = 0
    lsh: dict | None = None
    rotated: int = 0  # images indexed before whose rotations were embedded in this run

    @property
    def embedded(self) -> int:
        """Images run through the model in this run."""
        return self.added + self.updated

    @property
    def images_per_second(self) -> float:
        """End-to-end throughput over the images that were embedded (preparing the model not counted)."""
        t = self.times.total - self.times.extra.get("prepare_model", 0.0)
        return self.embedded / t if t > 0 else 0.0


def _abspath(p) -> str:
    return str(Path(os.path.abspath(os.path.expanduser(p))))


def _load(path: Path, verify: bool):
    """(manifest, segments, errors, stamp) of the committed generation; retries when a commit races the read."""
    for attempt in range(4):
        stamp = store.manifest_stamp(path)
        try:
            manifest = store.read_manifest(path)
            if manifest.get("format_version", 1) < 2:
                manifest = _from_v1(path, manifest, verify)
            hint = store.RECOVER_HINT.format(db=path)
            segments = [Segment(path, e, manifest["dim"], hint) for e in manifest["segments"]]
            errors = _read_errors(path, manifest.get("errors_file"), hint)
            return manifest, segments, errors, stamp
        except (CollectionError, FileNotFoundError) as err:
            if attempt < 3 and store.manifest_stamp(path) != stamp:
                time.sleep(0.05 * (attempt + 1))
                continue  # a writer committed while we read: read the new generation
            if isinstance(err, FileNotFoundError):
                raise CorruptCollectionError(f"Collection file is missing: {err.filename}. "
                                             f"{store.RECOVER_HINT.format(db=path)}") from None
            raise
    raise AssertionError("unreachable")


def _read_errors(path: Path, info: dict | None, hint: str) -> list[tuple[str, str]]:
    if not info:
        return []
    import pyarrow.parquet as pq

    p = storage.check_digest(path, info, hint)
    try:
        t = pq.read_table(p)
        paths = t.column("path").to_pylist()
        if "path_bytes" in t.column_names:
            paths = [os.fsdecode(b) if b is not None else s for s, b in zip(paths, t.column("path_bytes").to_pylist())]
        return list(zip(paths, t.column("reason").to_pylist()))
    except (OSError, ValueError, KeyError) as err:
        raise CorruptCollectionError(f"Collection file is damaged: {p}: {err}. {hint}") from None


def _from_v1(path: Path, m: dict, verify: bool) -> dict:
    """A format-1 manifest seen as format 2 (one segment over its files; migrated at the first write)."""
    hint = store.RECOVER_HINT.format(db=path)
    roles = m["file_roles"]
    for name, digest in m["files"].items():
        if verify or name == roles["meta"]:
            storage.verify(path / name, digest, hint)
        elif not (path / name).exists():
            raise CorruptCollectionError(f"Collection file is missing: {path / name}. {hint}")
    seg = {"name": "seg-000000", "rows": int(m["count"]), "deleted": 0,
           "meta": storage.describe(path / roles["meta"]), "emb": storage.describe(path / roles["embeddings"])}
    out = {k: v for k, v in m.items() if k not in ("files", "file_roles", "lsh", "dba")}
    out.update(format_version=1, segments=[seg] if seg["rows"] else [], dtype="float32", next_segment=1, lsh=None,
               dba=None, errors_file=storage.describe(path / roles["errors"]), legacy=roles)
    return out


class Collection(QueryMixin):
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
            The collection's engine (stored; default ``onnx``).
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
        enc = get_encoder(encoder, engine, flip_average=flip_average, views=views)  # fails before any folder is made
        variants = check_variants(rotations) if rotations else ()
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
                store.write_manifest(path, manifest)
                store.remove_unreferenced(path, manifest)
        except OSError as err:
            raise CollectionError(storage.os_error_message(err, path) or f"Cannot create {path}: {err}") from None
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
        manifest, segments, errors, stamp = _load(path, verify)
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
        self._set_state(*_load(self.path, self._verify))
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

    # ---------------------------------------------------------------- writing
    def _check_writable(self):
        if self.read_only:
            raise CollectionError(f"{self.path} was opened read-only.")

    @contextmanager
    def _writing(self):
        """The lock, then the latest committed state, then the caller's changes."""
        self._check_writable()
        if self._locked:
            yield
            return
        try:
            with store.Lock(self.path):
                self._locked = True
                try:
                    self.reload()
                    if self.manifest.get("format_version", 2) < 2:
                        self._migrate()
                    yield
                finally:
                    self._locked = False
        except OSError as err:
            msg = storage.os_error_message(err, self.path)
            if msg is None:
                raise
            raise CollectionError(msg) from None

    def _migrate(self) -> None:
        """Format 1 -> 2 at the first write: the legacy files become segment 1 (hard links, no copy)."""
        legacy = self.manifest["legacy"]
        segs = []
        if self.manifest["segments"]:
            for role, suffix in (("meta", "meta.parquet"), ("embeddings", "emb.npy")):
                dst = self.path / f"seg-000001.{suffix}"
                if dst.exists():
                    dst.unlink()
                try:
                    os.link(self.path / legacy[role], dst)
                except OSError:
                    import shutil

                    shutil.copyfile(self.path / legacy[role], dst)
            seg = {"name": "seg-000001", "rows": self.manifest["count"], "deleted": 0,
                   "meta": storage.describe(self.path / "seg-000001.meta.parquet"),
                   "emb": storage.describe(self.path / "seg-000001.emb.npy")}
            segs.append(seg)
        manifest = {k: v for k, v in self.manifest.items() if k != "legacy"}
        manifest.update(format_version=store.FORMAT_VERSION, segments=segs, next_segment=2,
                        uid=os.urandom(8).hex(), errors_file=None)
        log.info("migrating %s to collection format %d", self.path, store.FORMAT_VERSION)
        hint = store.RECOVER_HINT.format(db=self.path)
        self._set_state(manifest, [Segment(self.path, e, manifest["dim"], hint) for e in segs], self._errors,
                        self._stamp)
        self._commit(errors=dict(self._errors))

    def _new_segment_name(self, offset: int = 0) -> str:
        return f"seg-{self.manifest['next_segment'] + offset:06d}"

    def _commit(self, *, new_segments: Iterable[dict] = (), dead_rows: np.ndarray | None = None,
                drop_segments: Iterable[str] = (), errors: dict | None = None, replace: dict | None = None,
                drop_fields: Iterable[str] = (), **fields) -> None:
        """Write tombstones and the errors file, then the manifest (the commit point), then clean up.

        ``replace``: new entries of existing segments by name, whose side files (LSH tables,
        variants) changed, not their rows; ``drop_fields``: manifest fields to remove.
        """
        assert self._locked, "commits happen under the lock"
        gen = self.generation + 1
        drop = set(drop_segments)
        replace = replace or {}
        new_dead: dict[int, np.ndarray] = {}
        if dead_rows is not None and len(dead_rows):
            rows = np.unique(np.asarray(dead_rows, np.int64))
            starts = self._snap.rows.starts
            owner = np.searchsorted(starts, rows, side="right") - 1
            for s in np.unique(owner).tolist():
                new_dead[s] = self._snap.segments[s].alive_rows[rows[owner == s] - starts[s]]
        segs = []
        for s, seg in enumerate(self._snap.segments):
            if seg.name in drop:
                continue
            entry = dict(replace.get(seg.name, seg.entry))
            if s in new_dead:
                dead = np.union1d(np.nonzero(seg.dead)[0], new_dead[s])
                entry.update(dels=write_tombstones(self.path, seg.name, gen, dead), deleted=len(dead))
            segs.append(entry)
        new_segments = [e for e in new_segments if e]
        segs += new_segments
        manifest = dict(self.manifest, generation=gen, segments=segs, updated=time.time(),
                        count=sum(e["rows"] - e.get("deleted", 0) for e in segs), **fields)
        for key in drop_fields:
            manifest.pop(key, None)
        numbers = [int(re.findall(r"\d+", e["name"])[0]) for e in new_segments]
        if numbers:
            manifest["next_segment"] = max(manifest["next_segment"], max(numbers) + 1)
        if errors is not None:
            manifest["errors_file"] = self._write_errors(errors, gen) if errors else None
            manifest["errors"] = len(errors)
        lsh = manifest.get("lsh")
        if lsh:
            live = {e["name"] for e in segs}
            manifest["lsh"] = dict(lsh, segments={k: v for k, v in lsh.get("segments", {}).items() if k in live})
        store.write_manifest(self.path, manifest)
        # the new state: segments whose rows are unchanged are reused (their metadata is not read again)
        segments = []
        for entry in segs:
            old = self._segments.get(entry["name"])
            if old is not None and old.entry == entry:
                segments.append(old)
            elif old is not None and all(old.entry.get(k) == entry.get(k) for k in ROW_FILES):
                old.replace_entry(entry)
                segments.append(old)
            else:
                segments.append(Segment(self.path, entry, manifest["dim"], store.RECOVER_HINT.format(db=self.path)))
        err_list = sorted(errors.items()) if errors is not None else self._errors
        self._set_state(manifest, segments, err_list, store.manifest_stamp(self.path))
        store.remove_unreferenced(self.path, manifest)

    def _write_errors(self, errors: dict, gen: int) -> dict:
        import pyarrow as pa
        import pyarrow.parquet as pq

        items = sorted(errors.items())
        shown = [display(p) for p, _ in items]
        raw = [None if s == p else os.fsencode(p) for s, (p, _) in zip(shown, items)]
        table = pa.table({"path": pa.array(shown, pa.string()), "path_bytes": pa.array(raw, pa.binary()),
                          "reason": pa.array([r for _, r in items], pa.string())})
        path = self.path / f"errors-{gen:06d}.parquet"
        storage.atomic_write(path, lambda f: pq.write_table(table, f, compression="zstd"))
        return storage.describe(path)

    def update_manifest(self, **fields) -> None:
        """Store extra fields (e.g. settings) in the manifest, as a commit."""
        with self._writing():
            self._commit(**fields)

    # ---------------------------------------------------------------- indexing
    def index(self, root: str | os.PathLike, *, batch_size: int = 32, workers: int | None = None,
              max_pixels: int | None = images.DEFAULT_MAX_PIXELS, include_hidden: bool = False,
              progress: bool = False, on_batch=None, lsh="auto", dba: int | None = None,
              lsh_family: str = "hyperplane", target_recall: float = 0.95, rotations=None) -> IndexReport:
        """Bring the collection up to date with the images under ``root`` (incremental).

        New files and files whose size or mtime changed are embedded; files that vanished
        from under ``root`` are dropped (not those under a folder that cannot be listed now:
        they are kept, counted in ``report.stale``); unchanged files are kept. Skipped files
        are recorded with a reason (see :attr:`errors`). Work is committed in checkpoints, so
        an interrupted run keeps what it finished. Then the collection is maintained: small
        segments merged, LSH tables built for new large segments, DBA refreshed (see
        :meth:`maintain`). The lock is held from before the collection is read to the end.

        Parameters
        ----------
        root : path
            A folder (searched recursively) or a single image file.
        lsh : "auto", bool
            "auto": keep an LSH index once the collection has ``LSH_MIN_IMAGES`` images (or
            already has one); True: build it now; False: leave it as it is.
        dba : int, optional
            Turn database-side augmentation on with this many neighbours (0: off).
        rotations : bool, optional
            None (default): keep the collection's setting. True: turn rotations on (see
            :meth:`create`): new images are embedded with their rotated copies, and so are the
            images indexed before (each is read again; one commit per segment, so an
            interrupted run resumes at the next ``index``). False: turn them off (the variants
            files are dropped).
        """
        self._check_writable()
        root = Path(_abspath(root))
        report = IndexReport()
        t_start = time.perf_counter()
        unreadable: list[str] = []
        found = [str(p) for p in images.discover(root, include_hidden=include_hidden, unreadable=unreadable)]
        report.unreadable_folders = unreadable
        report.times.discover = time.perf_counter() - t_start
        under = str(root) + os.sep if root.is_dir() else str(root)
        with self._writing():
            if rotations is not None:
                self._set_rotations(rotations)
            sync.run_index(self, found, lambda p: p == str(root) or p.startswith(under),
                           root if root.is_dir() else None, unreadable, report, batch_size=batch_size,
                           workers=workers, max_pixels=max_pixels, progress=progress, on_batch=on_batch)
            if not report.interrupted:
                sync.backfill_variants(self, report, batch_size=batch_size, workers=workers, max_pixels=max_pixels,
                                       progress=progress)
            if not report.interrupted:
                self.maintain(lsh=lsh, dba=dba, lsh_family=lsh_family, target_recall=target_recall, report=report)
        report.times.total = time.perf_counter() - t_start
        if report.interrupted:
            raise KeyboardInterrupt
        return report

    def _set_rotations(self, rotations) -> None:
        """Turn rotations on (variants of existing images follow in :func:`sync.backfill_variants`) or off."""
        want = check_variants(rotations) if rotations else ()
        if want == self.rotations:
            return
        stale = {s.name: {k: v for k, v in s.entry.items() if k != "var"} for s in self._snap.segments
                 if s.has_variants}
        if want:
            self._commit(replace=stale, rotations=list(want))
        else:
            self._commit(replace=stale, drop_fields=("rotations",))

    def add(self, paths: Iterable[str | os.PathLike], *, lsh="auto", **kwargs) -> IndexReport:
        """Embed and add specific image files (re-embedding changed ones); nothing is removed."""
        self._check_writable()
        t_start = time.perf_counter()
        found = [_abspath(p) for p in paths]
        report = IndexReport()
        kwargs.setdefault("batch_size", 32)
        kwargs.setdefault("workers", None)
        kwargs.setdefault("max_pixels", images.DEFAULT_MAX_PIXELS)
        kwargs.setdefault("progress", False)
        kwargs.setdefault("on_batch", None)
        with self._writing():
            sync.run_index(self, found, lambda p: False, None, [], report, **kwargs)
            if not report.interrupted:
                self.maintain(lsh=lsh, report=report)
        report.times.total = time.perf_counter() - t_start
        if report.interrupted:
            raise KeyboardInterrupt
        return report

    def remove(self, paths: Iterable[str | os.PathLike]) -> int:
        """Remove images by path (missing ones are ignored); returns how many were removed."""
        gone = {_abspath(p) for p in paths}
        with self._writing():
            rows = [r for r, p in enumerate(self._snap.cols["path"].tolist()) if p in gone]
            errors = {p: r for p, r in self._errors if p not in gone}
            if rows or len(errors) != len(self._errors):
                self._commit(dead_rows=np.asarray(rows, np.int64), errors=errors)
                self.maintain(lsh="auto")
        return len(rows)

    def rename(self, moves: dict) -> int:
        """Re-point images to their files' new paths ({old: new}), keeping their ids and embeddings.

        For files moved or renamed on disk (``dupes --apply move`` and its undo use it): no
        image is embedded again. Old paths that are not indexed are ignored. Returns how many
        images were re-pointed.
        """
        from .segment import label_of

        moves = {_abspath(a): _abspath(b) for a, b in moves.items()}
        with self._writing():
            snap = self._snap
            pairs = [(snap.row_of_path(a), b) for a, b in moves.items() if snap.row_of_path(a) is not None]
            if not pairs:
                return 0
            rows = np.array([r for r, _ in pairs], np.int64)
            cols = {k: v[rows].copy() for k, v in snap.cols.items()}
            cols["path"] = np.asarray([b for _, b in pairs], object)
            cols["label"] = np.asarray([label_of(b) for _, b in pairs], object)
            for i, (_, b) in enumerate(pairs):  # a copy across file systems may change the mtime
                try:
                    st = os.stat(b)
                    cols["size"][i], cols["mtime_ns"][i] = st.st_size, st.st_mtime_ns
                except OSError:
                    pass
            writer = sync.SegmentWriter(self.path, self._new_segment_name(), self.manifest["dim"],
                                        self.manifest["dtype"], len(self.rotations))
            try:
                writer.append(cols, snap.rows.take(rows), self.variants_of_rows(rows))
                entry = writer.finish()
            except BaseException:
                writer.abort()
                raise
            self._commit(new_segments=[entry], dead_rows=rows)
            self.maintain(lsh="auto")
        return len(pairs)

    def import_parquet(self, source: str | os.PathLike, *, lsh="auto") -> IndexReport:
        """Add the embeddings written by ``lookalike spark index`` (a local Parquet folder), streaming.

        Rows replace same-path images (their ids are kept); rows with an ``error`` become
        skipped files. The encoder recorded in ``SOURCE/_lookalike`` must match this
        collection's. Memory stays bounded whatever the input size (Arrow batches go
        straight into segment files).
        """
        t_start = time.perf_counter()
        source = Path(sync.local_path(str(source))).expanduser()
        theirs, mine = sync.spark_meta(source).get("views"), self.manifest.get("views", list(LEGACY_VIEWS))
        if theirs is not None and list(theirs) != list(mine):  # outputs from before views record none
            raise CollectionError(
                f"{source} was embedded with views {'+'.join(theirs)}, but {self.path} uses {'+'.join(mine)}: "
                "embeddings of different pipelines cannot be compared. Import into a new --db.")
        report = IndexReport()
        with self._writing():
            sync.import_parquet(self, source, report, segment_rows=merge.MAX_SEGMENT_ROWS)
            # a Spark job embeds no rotations: embedded here from the files (local paths only)
            sync.backfill_variants(self, report, batch_size=32, workers=None, max_pixels=images.DEFAULT_MAX_PIXELS,
                                   progress=False)
            self.maintain(lsh=lsh, report=report)
        report.times.total = time.perf_counter() - t_start
        return report

    def _calibrate_int8(self, candidates: list[str], max_pixels) -> None:
        """Quantise the encoder on a seeded sample of this collection's own images."""
        from ..encoders.engines import CALIBRATION_IMAGES

        rng = np.random.default_rng(0)
        sample = []
        for i in rng.permutation(len(candidates)):
            try:
                sample.append(images.decode(candidates[i], max_pixels=max_pixels,
                                            draft_size=self.encoder.draft_size).image)
            except images.DecodeError:
                continue
            if len(sample) >= CALIBRATION_IMAGES:
                break
        if not sample:
            return
        name = "encoder-int8.onnx"
        self.encoder.calibrate(sample, self.path / name)
        storage.fsync_dir(self.path)
        self._commit(int8_model={"name": name, "sha256": storage.file_sha256(self.path / name),
                                 "calibration_images": len(sample)})

    # ---------------------------------------------------------------- maintenance
    def maintain(self, *, lsh="auto", dba: int | None = None, lsh_family: str = "hyperplane",
                 target_recall: float = 0.95, report: IndexReport | None = None, max_segments: int | None = None):
        """Keep the side structures current after a change (the library's policy, used by every shell).

        Merges segments by the tiered policy, builds LSH tables for segments that lack them
        (see ``lsh`` in :meth:`index`), and refreshes the DBA vectors if enabled and stale.
        """
        from . import LSH_MIN_IMAGES

        with self._writing():
            n_merged = self.compact(max_segments=max_segments)
            if report is not None:
                report.merged_segments = n_merged
            info = self.manifest.get("lsh")
            want = lsh is True or (lsh == "auto" and (info is not None or len(self) >= LSH_MIN_IMAGES))
            if want and len(self) >= 2:
                if info is None or info.get("family") != lsh_family or (
                        lsh is True and info.get("target_recall") != target_recall):
                    self._commit(lsh={"family": lsh_family, "target_recall": target_recall, "k": 10,
                                      "segments": {}})
                self._build_missing_lsh(artifacts.LSH_MIN_SEGMENT)
            if dba is not None and dba != (self.manifest.get("dba") or {}).get("n", 0):
                self.build_dba(dba)
            elif self.dba_stale:
                self.build_dba(self.manifest["dba"]["n"], alpha=self.manifest["dba"].get("alpha", 3.0))
            if report is not None and self.manifest.get("lsh"):
                report.lsh = self.lsh_summary()

    def compact(self, *, max_segments: int | None = None) -> int:
        """Merge segments by the tiered policy (or down to ``max_segments``); returns merges done."""
        done = 0
        with self._writing():
            while True:
                groups = merge.plan(self._snap.segments, max_segments=max_segments)
                if not groups:
                    return done
                group = groups[0]
                segs = [self._snap.segments[i] for i in group]
                entry = merge.write_merged(self.path, self._new_segment_name(), segs, self.manifest["dim"],
                                           self.manifest["dtype"], len(self.rotations))
                for seg in segs:
                    seg.release()
                self._commit(new_segments=[entry], drop_segments={s.name for s in segs})
                if self.manifest.get("lsh"):
                    self._build_missing_lsh(artifacts.LSH_MIN_SEGMENT)
                done += 1

    def _build_missing_lsh(self, min_rows: int) -> None:
        info = self.manifest["lsh"]
        settings = {"family": info["family"], "target_recall": info["target_recall"], "k": info.get("k", 10)}
        for seg in list(self._snap.segments):
            if seg.entry.get("lsh") or seg.live < max(min_rows, 2):
                continue
            done = self.manifest["lsh"].get("segments", {}).values()
            similar = [v for v in done if v.get("tuned") and v["rows"] / 2 <= seg.live <= v["rows"] * 2]
            reuse = max(similar, key=lambda v: v["rows"]) if similar else None
            file_info, seg_info, _ = artifacts.build_segment_lsh(self.path, seg, settings, reuse=reuse)
            seg.release()  # one segment's vectors in memory at a time: bounded at any collection size
            lsh = dict(self.manifest["lsh"])
            lsh["segments"] = dict(lsh.get("segments", {}), **{seg.name: seg_info})
            self._commit(replace={seg.name: dict(seg.entry, lsh=file_info)}, lsh=lsh)

    def _replace_entries(self, segments: list[dict], **fields) -> None:
        """Commit changed segment entries (side files only, e.g. LSH tables) with ``fields``: see :meth:`_commit`."""
        self._commit(replace={e["name"]: e for e in segments}, **fields)

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
