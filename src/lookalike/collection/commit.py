"""The write transaction of a :class:`~lookalike.collection.Collection`: lock, re-read, commit.

Every write goes through :meth:`CommitMixin._writing`: take the folder's lock, *then* re-read
the manifest (migrating a format-1 collection), change, and :meth:`CommitMixin._commit`:
tombstones and the errors file first, then the manifest (the commit point), then clean-up.
"""

from __future__ import annotations

import logging
import os
import re
import time
from collections.abc import Iterable
from contextlib import contextmanager

import numpy as np

from .. import storage
from ..storage import CollectionError
from . import store
from .segment import Segment, display, write_tombstones

log = logging.getLogger(__name__)

# The parts of a segment entry that define its rows (a change of the others only swaps side files).
ROW_FILES = ("rows", "deleted", "meta", "emb", "dels")


class CommitMixin:
    """The lock and commit machinery of :class:`~lookalike.collection.Collection` (used by every write)."""

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

    def _replace_entries(self, segments: list[dict], **fields) -> None:
        """Commit changed segment entries (side files only, e.g. LSH tables) with ``fields``: see :meth:`_commit`."""
        self._commit(replace={e["name"]: e for e in segments}, **fields)
