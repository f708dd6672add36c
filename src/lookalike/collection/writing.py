"""The write operations of a :class:`~lookalike.collection.Collection`.

Indexing a folder, adding, removing and renaming images, the Spark import, and the maintenance
after each change (tiered merges, per-segment LSH tables, DBA): each runs in one
:meth:`~lookalike.collection.commit.CommitMixin._writing` transaction.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .. import images, storage
from ..encoders import LEGACY_VIEWS
from ..indexer import StageTimes
from ..rotations import check_variants
from ..storage import CollectionError
from . import artifacts, merge, sync


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
    return images.absolute(p)


INT8_MODEL = "encoder-int8.onnx"


def install_int8(folder: Path, model: Path, enc) -> dict:
    """Copy the shared int8 model into a collection folder (atomically); returns its manifest entry."""
    from ..encoders.calibration import ranges_path

    with open(model, "rb") as src:
        storage.atomic_write(folder / INT8_MODEL, lambda dst: shutil.copyfileobj(src, dst))
    return {"name": INT8_MODEL, "sha256": storage.file_sha256(folder / INT8_MODEL), "calibration": "shared",
            "ranges_sha256": storage.file_sha256(ranges_path(enc.name))}


class WritingMixin:
    """Write methods of :class:`~lookalike.collection.Collection` (indexing, edits, import, maintenance)."""

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
        meta = sync.spark_meta(source)
        theirs, mine = meta.get("views"), self.manifest.get("views", list(LEGACY_VIEWS))
        if theirs is not None and list(theirs) != list(mine):  # outputs from before views record none
            raise CollectionError(
                f"{source} was embedded with views {'+'.join(theirs)}, but {self.path} uses {'+'.join(mine)}: "
                "embeddings of different pipelines cannot be compared. Import into a new --db.")
        theirs, mine = meta.get("engine"), self.manifest.get("engine", "onnx")
        int8_sha = (self.manifest.get("int8_model") or {}).get("sha256")
        if theirs is not None and ((theirs == "onnx-int8") != (mine == "onnx-int8") or (
                theirs == "onnx-int8" and meta.get("int8_sha256") not in (None, int8_sha))):
            raise CollectionError(
                f"{source} was embedded with the {theirs} engine, but {self.path} uses {mine}"
                f"{' with another int8 model' if theirs == mine else ''}: int8 and float embeddings differ slightly. "
                "Import into a new --db.")
        report = IndexReport()
        with self._writing():
            sync.import_parquet(self, source, report, segment_rows=merge.MAX_SEGMENT_ROWS)
            # a Spark job embeds no rotations: embedded here from the files (local paths only)
            sync.backfill_variants(self, report, batch_size=32, workers=None, max_pixels=images.DEFAULT_MAX_PIXELS,
                                   progress=False)
            self.maintain(lsh=lsh, report=report)
        report.times.total = time.perf_counter() - t_start
        return report

    def _prepare_int8(self, candidates: list[str], max_pixels) -> None:
        """Give an int8 collection without its model file one: the shared model, else one calibrated here.

        The shared model (an encoder that ships activation ranges) is copied into the folder;
        an encoder without (an ONNX model of your own) is quantised on a seeded sample of this
        collection's own images, as collections made before the shared calibration were.
        """
        if self.encoder.has_shared_int8:
            self._commit(int8_model=install_int8(self.path, self.encoder.shared_int8_path(), self.encoder))
            self.encoder.int8_model = self.path / self.manifest["int8_model"]["name"]
            self.encoder.__dict__.pop("engine", None)
            return
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
        name = INT8_MODEL
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
