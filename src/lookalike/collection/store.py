"""The collection folder on disk: the manifest, the writer's lock, and what a commit may name.

Layout of a collection folder (format 2)::

    manifest.json                 the committed state: settings, segments, checksums (written last)
    seg-000004.meta.parquet       one immutable segment's metadata: id, path, size, mtime, hash, pixels, label
    seg-000004.emb.npy            its embeddings (rows <-> meta rows), memory-mapped
    seg-000004.del-000009.npy     rows of the segment deleted as of generation 9 (tombstones)
    seg-000004.lsh.npz            its LSH tables (segments of at least LSH_MIN_SEGMENT rows)
    seg-000004.var.npy            its rows' rotated-copy embeddings (collections indexed with rotations)
    errors-000009.parquet         path, reason of every skipped file
    dba-000009.npy                database-augmented search vectors (when enabled)
    encoder-int8.onnx             the collection's int8 model (engine onnx-int8; a copy of the shared one)

A commit writes new files under new names, then the manifest by an atomic rename, then
deletes the files no manifest names any more. Writers hold an OS lock on the folder itself
(``flock`` on the directory), taken *before* the manifest is read.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import re
import time
from pathlib import Path

from .. import storage
from ..storage import CollectionError, CorruptCollectionError

log = logging.getLogger(__name__)

FORMAT_VERSION = 2
MANIFEST = "manifest.json"
DEFAULT_DB = "lookalike-index"
RECOVER_HINT = "Rebuild it from the images with: lookalike index FOLDER --db {db} --rebuild"
RACE_HINT = "another process may have been committing; run the command again"
DATA_FILE = re.compile(
    r"^(?:seg-\d{6}\.(?:meta\.parquet|emb\.npy|var\.npy|lsh\.npz|del-\d{6}\.npy)|errors-\d{6}\.parquet|dba-\d{6}\.npy"
    r"|encoder-int8\.onnx)$")
# Files of format 1 (kept readable; renamed into segments at the first write).
LEGACY_FILE = re.compile(r"^(meta|embeddings|errors|lsh|dba)-(\d{6})\.(parquet|npy|npz)$")
MANIFEST_KEYS = {
    "format", "format_version", "encoder", "engine", "flip_average", "weights_sha256", "dim", "dtype",
    "generation", "next_id", "next_segment", "count", "errors", "roots", "created", "updated", "uid",
    "segments", "errors_file", "lsh", "dba", "int8_model", "views", "rotations",
}
SEGMENT_KEYS = {"name", "rows", "deleted", "meta", "emb", "dels", "lsh", "var"}
SEGMENT_FILES = ("meta", "emb", "dels", "lsh", "var")
FILE_KEYS = {"name", "size", "xxh3"}


def ours(name: str) -> bool:
    """A file a collection (or an interrupted write of one) leaves in its folder."""
    return (name in (MANIFEST, ".lock") or bool(DATA_FILE.match(name)) or bool(LEGACY_FILE.match(name))
            or (name.startswith(".") and ".tmp" in name))


class Lock:
    """The single-writer lock: ``flock`` on the collection folder itself.

    Deleting a file cannot remove it (there is none to delete), and the OS releases it when
    the process dies. ``wait`` blocks until the other writer finishes (saying so once).
    """

    def __init__(self, folder: Path, *, wait: bool = True):
        self.folder, self.wait, self.fd = folder, wait, None

    def __enter__(self) -> Lock:
        try:
            self.fd = os.open(self.folder, os.O_RDONLY | os.O_DIRECTORY)
        except OSError as err:
            raise CollectionError(f"Cannot open the collection folder {self.folder}: {err.strerror}.") from None
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            if not self.wait:
                os.close(self.fd)
                raise CollectionError(
                    f"Another process is writing to {self.folder}; wait for it to finish.") from None
            log.warning("waiting for another process writing to %s to finish...", self.folder)
            fcntl.flock(self.fd, fcntl.LOCK_EX)
        return self

    def __exit__(self, *exc) -> None:
        if self.fd is not None:
            os.close(self.fd)  # releases the flock
            self.fd = None


def manifest_stamp(folder: Path) -> tuple[int, int] | None:
    """(inode, mtime_ns) of the manifest: changes with every commit (atomic rename). None if absent."""
    try:
        st = os.stat(Path(folder) / MANIFEST)
    except OSError:
        return None
    return st.st_ino, st.st_mtime_ns


def read_manifest(folder: Path) -> dict:
    """The committed manifest, checksum-checked and validated (whatever its checksum says)."""
    hint = RECOVER_HINT.format(db=folder)
    mpath = folder / MANIFEST
    try:
        raw = mpath.read_bytes()
    except FileNotFoundError:
        raise CollectionError(
            f"No collection at {folder} (no {MANIFEST}). Create one with: lookalike index FOLDER --db {folder}"
        ) from None
    except OSError as err:
        raise CollectionError(f"Cannot read {mpath}: {err.strerror}.") from None
    try:
        manifest = json.loads(raw)
        checksum = manifest.pop("manifest_sha256")
    except (ValueError, KeyError, AttributeError, TypeError):
        raise CorruptCollectionError(f"Collection file is damaged: {mpath} is not a valid manifest. {hint}") from None
    if storage.json_sha256(manifest) != checksum:
        raise CorruptCollectionError(f"Collection file is damaged: {mpath} (checksum mismatch). {hint}")
    version = manifest.get("format_version", 0)
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise CollectionError(f"{folder} was written by a newer lookalike (format {version}); upgrade lookalike.")
    if version >= 2:
        validate(manifest, folder)
    else:
        validate_v1(manifest, folder)
    return manifest


def _bad(folder: Path, what: str):
    return CorruptCollectionError(
        f"Collection file is damaged: {folder / MANIFEST} ({what}). {RECOVER_HINT.format(db=folder)}")


def _file_info(folder: Path, info, what: str) -> None:
    if not isinstance(info, dict) or set(info) != FILE_KEYS:
        raise _bad(folder, f"{what}: expected a file entry with {sorted(FILE_KEYS)}")
    name = info["name"]
    if not isinstance(name, str) or not DATA_FILE.match(name):
        raise _bad(folder, f"{what}: {name!r} is not a collection file name inside the folder")
    if not isinstance(info["size"], int) or info["size"] < 0 or not isinstance(info["xxh3"], str) \
            or not re.fullmatch(r"[0-9a-f]{16}", info["xxh3"]):
        raise _bad(folder, f"{what}: {name} has no valid size and checksum")


def validate(m: dict, folder: Path) -> None:
    """Refuse a manifest with unknown keys, file names outside the folder, or files without checksums."""
    unknown = set(m) - MANIFEST_KEYS
    if unknown:
        raise _bad(folder, f"unknown fields {sorted(unknown)}")
    for key in ("encoder", "weights_sha256", "dim", "generation", "next_id", "segments", "dtype"):
        if key not in m:
            raise _bad(folder, f"no {key!r}")
    if not isinstance(m["segments"], list):
        raise _bad(folder, "segments is not a list")
    total = 0
    for seg in m["segments"]:
        if not isinstance(seg, dict) or not set(seg) <= SEGMENT_KEYS or not {"name", "rows", "meta", "emb"} <= set(seg):
            raise _bad(folder, "a segment entry is malformed")
        for role in SEGMENT_FILES:
            if seg.get(role) is not None:
                _file_info(folder, seg[role], f"segment {seg['name']} {role}")
        total += int(seg["rows"]) - int(seg.get("deleted", 0))
    rotations = m.get("rotations")
    if rotations is not None:
        from ..rotations import VARIANTS

        if not isinstance(rotations, list) or not rotations or any(r not in VARIANTS for r in rotations):
            raise _bad(folder, f"rotations {rotations!r} is not a list of {sorted(VARIANTS)}")
    if m.get("count") != total:
        raise _bad(folder, f"count {m.get('count')} but the segments hold {total} images")
    if m.get("errors_file") is not None:
        _file_info(folder, m["errors_file"], "errors")
    if m.get("dba"):
        _file_info(folder, m["dba"].get("file"), "dba")
    if m.get("int8_model") and m["int8_model"].get("name") != "encoder-int8.onnx":
        raise _bad(folder, "int8_model names another file")


def validate_v1(m: dict, folder: Path) -> None:
    """Format 1 (read-only until migrated): every data file named in the folder and checksummed."""
    roles = m.get("file_roles")
    files = m.get("files")
    if not isinstance(roles, dict) or not isinstance(files, dict) or set(roles) != {"meta", "embeddings", "errors"}:
        raise _bad(folder, "format 1 manifest without its file roles")
    for name in roles.values():
        if not isinstance(name, str) or not LEGACY_FILE.match(name) or name not in files:
            raise _bad(folder, f"{name!r} is not a checksummed collection file inside the folder")


def write_manifest(folder: Path, manifest: dict) -> None:
    """Write the manifest (with its own checksum) atomically: the commit point."""
    body = dict(manifest)
    body["manifest_sha256"] = storage.json_sha256(manifest)
    storage.atomic_write_json(folder / MANIFEST, body)


def referenced(manifest: dict) -> set[str]:
    """Every file name the manifest relies on."""
    names = {MANIFEST}
    for seg in manifest.get("segments", []):
        names |= {seg[r]["name"] for r in SEGMENT_FILES if seg.get(r)}
    for key in ("errors_file",):
        if manifest.get(key):
            names.add(manifest[key]["name"])
    if manifest.get("dba"):
        names.add(manifest["dba"]["file"]["name"])
    if manifest.get("int8_model"):
        names.add(manifest["int8_model"]["name"])
    return names


def remove_unreferenced(folder: Path, manifest: dict) -> None:
    """Delete collection files no longer named by ``manifest`` (call with the lock held)."""
    keep = referenced(manifest)
    for f in folder.iterdir():
        if f.name in keep or f.name == ".lock":
            continue
        if ours(f.name):
            try:
                f.unlink()
            except OSError:
                pass


def new_manifest(enc, *, flip_average: bool, dtype: str, generation: int = 0) -> dict:
    """The manifest of an empty collection."""
    return {
        "format": "lookalike-collection",
        "format_version": FORMAT_VERSION,
        "encoder": enc.name,
        "engine": enc.engine_name,
        "flip_average": bool(flip_average),
        "views": list(enc.views),  # absent in older collections: the centre crop only
        "weights_sha256": enc.weights_hash,
        "dim": enc.dim,
        "dtype": dtype,
        "generation": generation,
        "next_id": 0,
        "next_segment": 1,
        "count": 0,
        "errors": 0,
        "segments": [],
        "errors_file": None,
        "roots": [],
        "lsh": None,
        "dba": None,
        "created": time.time(),
        "uid": os.urandom(8).hex(),
    }
