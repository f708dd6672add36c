"""The file operations that actions and undo are made of: re-checks against the index, a move that never overwrites."""

from __future__ import annotations

import errno
import hashlib
import os
import shutil
import stat
from pathlib import Path

from .. import storage


def same_file(a: str, b: str) -> bool:
    """``a`` is a symbolic link, or the same file as ``b`` (a hard link to it); False if either cannot be read."""
    try:
        return os.path.islink(a) or os.path.samefile(a, b)
    except OSError:
        return False


def file_hash(path: str) -> str:
    """The index's content hash (:func:`lookalike.indexer.content_hash`) of the file at ``path``, read in pieces."""
    with open(path, "rb") as f:
        return hashlib.file_digest(f, lambda: hashlib.blake2b(digest_size=16)).hexdigest()


def changed(path: str, size: int, mtime_ns: int, content_hash: str) -> str | None:
    """Why ``path`` no longer matches the index (None if it does): size, modified time, then hash."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return "missing"
    except OSError as err:
        return f"cannot read: {err.strerror}"
    if stat.S_ISLNK(st.st_mode):
        return "is now a link"
    if st.st_size != size or st.st_mtime_ns != mtime_ns:
        return "changed since it was indexed (size or modified time); run lookalike index again"
    try:
        if content_hash and file_hash(path) != content_hash:
            return "content changed since it was indexed; run lookalike index again"
    except OSError as err:
        return f"cannot read: {err.strerror}"
    return None


def move_file(src: str, dst: str, tmp: str) -> None:
    """Move without ever overwriting ``dst``: a link then an unlink, or a copy (other file system)."""
    try:
        os.link(src, dst)  # fails if dst exists; both names on one inode until the unlink
    except OSError as err:
        if err.errno == errno.EEXIST:
            raise
        if err.errno == errno.EXDEV:
            shutil.copy2(src, tmp)  # keeps the modified time
            with open(tmp, "rb") as f:
                os.fsync(f.fileno())
            if os.path.lexists(dst):
                os.unlink(tmp)
                raise FileExistsError(errno.EEXIST, "the target exists", dst) from None
            os.rename(tmp, dst)
        else:  # a file system without hard links: rename (the target was checked to be free)
            os.rename(src, dst)
            storage.fsync_dir(Path(dst).parent)
            storage.fsync_dir(Path(src).parent)
            return
    storage.fsync_dir(Path(dst).parent)
    os.unlink(src)
    storage.fsync_dir(Path(src).parent)
