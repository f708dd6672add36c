"""Reading a committed generation from disk: the manifest, its segments and the errors file.

A format-1 collection is seen as format 2 here (one segment over its files); it is migrated at
its first write (:meth:`~lookalike.collection.commit.CommitMixin._migrate`).
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from .. import storage
from ..storage import CollectionError, CorruptCollectionError
from . import store
from .segment import Segment


def load(path: Path, verify: bool):
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
