"""Crash-safe file primitives for the collection: atomic writes, checksums, clear OS errors.

A commit writes every data file under a new name (temp file, fsync, rename), then the
manifest last, also atomically. A reader only ever follows the manifest, so a crash at
any moment leaves the previous commit intact.

Checksums: the manifest's own body is SHA-256'd; data files carry an xxh3-64 digest and
their size (xxh3 reads at memory speed, so checking a gigabyte costs well under a second).
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
from pathlib import Path

CHUNK = 1 << 23  # 8 MiB reads: checksums never hold a file in memory


class CollectionError(RuntimeError):
    """A collection cannot be created, opened or written as asked."""


class CorruptCollectionError(CollectionError):
    """A collection file is missing or does not match its recorded checksum."""


def fsync_dir(path: Path) -> None:
    """Make a rename inside ``path`` durable (no-op where directories cannot be opened)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def tmp_name(path: Path) -> Path:
    """The temp file a write of ``path`` goes through (hidden, per process)."""
    return path.with_name(f".{path.name}.tmp{os.getpid()}")


def atomic_write(path: Path, write) -> None:
    """Call ``write(fileobj)`` on a temp file, fsync it, and rename it onto ``path``."""
    tmp = tmp_name(path)
    try:
        with open(tmp, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    fsync_dir(path.parent)


def atomic_write_json(path: Path, obj) -> None:
    """Write ``obj`` as pretty JSON, atomically."""
    data = json.dumps(obj, indent=2, sort_keys=True).encode()
    atomic_write(path, lambda f: f.write(data))


def file_sha256(path: Path) -> str:
    """SHA-256 hex digest of a file, read in chunks."""
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def file_digest(path: Path | int) -> str:
    """xxh3-64 hex digest of a file (a path, or an open descriptor read with pread), in chunks."""
    import xxhash

    if isinstance(path, int):
        h = xxhash.xxh3_64()
        pos = 0
        while chunk := os.pread(path, CHUNK, pos):
            h.update(chunk)
            pos += len(chunk)
        return h.hexdigest()
    with open(path, "rb") as f:
        return hashlib.file_digest(f, xxhash.xxh3_64).hexdigest()


def describe(path: Path) -> dict:
    """What the manifest records of a data file: its name, size and xxh3 digest."""
    return {"name": path.name, "size": path.stat().st_size, "xxh3": file_digest(path)}


def _missing(path: Path, recover_hint: str) -> CorruptCollectionError:
    return CorruptCollectionError(f"Collection file is missing: {path}. {recover_hint}")


def _damaged(path: Path, detail: str, recover_hint: str) -> CorruptCollectionError:
    return CorruptCollectionError(f"Collection file is damaged: {path} ({detail}). {recover_hint}")


def verify(path: Path, expected_sha256: str, recover_hint: str) -> None:
    """Raise :class:`CorruptCollectionError` naming ``path`` unless its SHA-256 matches."""
    if not path.exists():
        raise _missing(path, recover_hint)
    actual = file_sha256(path)
    if actual != expected_sha256:
        raise _damaged(path, f"checksum {actual[:12]}..., expected {expected_sha256[:12]}...", recover_hint)


def check_size(folder: Path, info: dict, recover_hint: str) -> Path:
    """The path of a recorded data file after a cheap check that it exists with its recorded size."""
    path = folder / info["name"]
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        raise _missing(path, recover_hint) from None
    if size != info["size"]:
        raise _damaged(path, f"{size} bytes, expected {info['size']}", recover_hint)
    return path


def check_digest(folder: Path, info: dict, recover_hint: str, fd: int | None = None) -> Path:
    """The path of a recorded data file after checking its size and xxh3 digest.

    With ``fd`` (the file, opened earlier), the check reads that descriptor: a file a later
    commit deleted is still the one this reader's generation names.
    """
    path = folder / info["name"]
    if fd is None:
        check_size(folder, info, recover_hint)
    try:
        actual = file_digest(path if fd is None else fd)
    except FileNotFoundError:  # deleted since the size check (a commit raced this reader)
        raise _missing(path, recover_hint) from None
    if actual != info["xxh3"]:
        raise _damaged(path, f"checksum {actual}, expected {info['xxh3']}", recover_hint)
    return path


def bytes_sha256(data: bytes) -> str:
    """SHA-256 hex digest of bytes."""
    return hashlib.sha256(data).hexdigest()


def json_sha256(obj) -> str:
    """SHA-256 of the canonical JSON form of ``obj`` (sorted keys)."""
    return bytes_sha256(json.dumps(obj, sort_keys=True).encode())


def os_error_message(err: OSError, folder: Path) -> str | None:
    """One clear sentence for the OS errors a writer meets (full disk, read-only folder), else None."""
    if err.errno == errno.ENOSPC or err.errno == errno.EDQUOT:
        return (f"No space left on the device holding {folder}. The collection is unchanged (the last commit is "
                "intact); free some space and run the same command again.")
    if err.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
        return (f"Cannot write to {folder}: {err.strerror}. The collection is unchanged; use a --db folder you can "
                "write to, or fix its permissions.")
    return None
