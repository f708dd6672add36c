"""Crash-safe file primitives for the collection: atomic writes and checksums.

A commit writes every data file under a new name (temp file, fsync, rename), then the
manifest last, also atomically. A reader only ever follows the manifest, so a crash at
any moment leaves the previous commit intact.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path


class CorruptCollectionError(RuntimeError):
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


def atomic_write(path: Path, write) -> None:
    """Call ``write(fileobj)`` on a temp file, fsync it, and rename it onto ``path``."""
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
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
    """SHA-256 hex digest of a file, read in 4 MiB chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 22), b""):
            h.update(chunk)
    return h.hexdigest()


def verify(path: Path, expected_sha256: str, recover_hint: str) -> None:
    """Raise :class:`CorruptCollectionError` naming ``path`` unless its checksum matches."""
    if not path.exists():
        raise CorruptCollectionError(f"Collection file is missing: {path}. {recover_hint}")
    actual = file_sha256(path)
    if actual != expected_sha256:
        raise CorruptCollectionError(
            f"Collection file is damaged: {path} (checksum {actual[:12]}..., expected "
            f"{expected_sha256[:12]}...). {recover_hint}"
        )


def bytes_sha256(data: bytes) -> str:
    """SHA-256 hex digest of bytes."""
    return hashlib.sha256(data).hexdigest()


def json_sha256(obj) -> str:
    """SHA-256 of the canonical JSON form of ``obj`` (sorted keys)."""
    return bytes_sha256(json.dumps(obj, sort_keys=True).encode())
