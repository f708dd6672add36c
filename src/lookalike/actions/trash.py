"""The trash of trash and link actions: the freedesktop.org trash spec (``~/.Trash`` on macOS)."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from urllib.parse import quote, unquote

from .. import storage
from .errors import ActionError


def _trash_dir(path: str) -> tuple[Path, bool]:
    """The trash for ``path`` and whether it keeps ``info/*.trashinfo`` (freedesktop) files.

    The home trash (``$XDG_DATA_HOME/Trash``) when it is on the file's file system, else
    ``$topdir/.Trash-$uid`` at the top of the file's mount; macOS: ``~/.Trash``.
    """
    if sys.platform == "darwin":
        return Path.home() / ".Trash", False
    if os.name != "posix":
        raise ActionError("--apply trash (and links, which trash the original) needs a POSIX system here")
    dev = os.stat(path).st_dev
    home = Path(os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share") / "Trash"
    probe = home
    while not probe.exists() and probe.parent != probe:
        probe = probe.parent
    if os.stat(probe).st_dev == dev:
        return home, True
    top = Path(os.path.abspath(path)).parent
    while top.parent != top and os.stat(top.parent).st_dev == dev:
        top = top.parent
    return top / f".Trash-{os.getuid()}", True


def trash_names(path: str) -> tuple[str, str | None]:
    """A free name in the trash for ``path``: (file there, its .trashinfo or None)."""
    trash, with_info = _trash_dir(path)
    for sub in ("files", "info") if with_info else ():
        (trash / sub).mkdir(parents=True, exist_ok=True, mode=0o700)
    trash.mkdir(parents=True, exist_ok=True, mode=0o700)
    base = Path(path).name
    stem, suffix = os.path.splitext(base)
    k = 1
    while True:
        name = base if k == 1 else f"{stem}.{k}{suffix}"
        f = trash / "files" / name if with_info else trash / name
        info = trash / "info" / f"{name}.trashinfo" if with_info else None
        if not os.path.lexists(f) and (info is None or not info.exists()):
            return str(f), str(info) if info else None
        k += 1


def to_trash(src: str, target: str, info: str | None) -> None:
    """Move ``src`` to ``target`` in the trash, its .trashinfo ``info`` written first (it reserves the name)."""
    if info is not None:
        fd = os.open(info, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)  # reserves the name
        with os.fdopen(fd, "w") as f:
            f.write(f"[Trash Info]\nPath={quote(src)}\nDeletionDate={time.strftime('%Y-%m-%dT%H:%M:%S')}\n")
            f.flush()
            os.fsync(f.fileno())
    try:
        os.rename(src, target)
    except OSError:
        if info is not None:
            os.unlink(info)
        raise
    storage.fsync_dir(Path(target).parent)
    storage.fsync_dir(Path(src).parent)


def info_names(info: str | None, src: str) -> bool:
    """The .trashinfo ``info`` is ours for ``src`` (or there is none to check)."""
    if info is None or not os.path.exists(info):
        return True
    try:
        for line in Path(info).read_text().splitlines():
            if line.startswith("Path="):
                return unquote(line[5:]) == src
    except OSError:
        return False
    return False
