"""Finding image files and decoding them safely.

Every failure becomes a :class:`DecodeError` with a human-readable reason, so a caller
can record it per file and carry on. This module knows nothing about models.
"""

from __future__ import annotations

import io
import logging
import os
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

log = logging.getLogger(__name__)

# The files taken for images (lower-case; names match in any case), by the local indexer and by
# `spark index` (whose file glob is built from this set).
IMAGE_EXTENSIONS = frozenset(
    {".jpg", ".jpeg", ".jpe", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff", ".heic", ".heif"}
)
_HEIF_EXTENSIONS = frozenset({".heic", ".heif"})
# ISO-BMFF major brands of HEIC/HEIF files (bytes 8-12, after the "ftyp" box type).
_HEIF_BRANDS = frozenset({b"heic", b"heix", b"hevc", b"hevx", b"heim", b"heis", b"mif1", b"msf1"})
# Default decompression-bomb guard: 100 megapixels is a 10000x10000 photo, ~300 MB as RGB.
DEFAULT_MAX_PIXELS = 100_000_000
# Largest file read into memory at once; bigger files are refused (1 GiB).
MAX_FILE_BYTES = 1 << 30


class DecodeError(Exception):
    """An image could not be decoded; ``str(err)`` is the reason shown to users."""


@dataclass(frozen=True)
class DecodedImage:
    """An RGB image and facts about its source file."""

    image: Image.Image  # mode "RGB", EXIF orientation applied, possibly JPEG-draft reduced
    width: int  # original pixel size after EXIF rotation (not the draft size)
    height: int
    data: bytes  # the raw file bytes (hashed by the caller)


def absolute(path: str | os.PathLike) -> str:
    """``path`` as the collection stores it: ``~`` expanded, absolute, symlinks kept (not resolved)."""
    return os.path.abspath(os.path.expanduser(os.fspath(path)))


def discover(root: str | os.PathLike, *, include_hidden: bool = False,
             unreadable: list[str] | None = None) -> Iterator[Path]:
    """Yield image files under ``root`` in sorted order.

    Follows directory symlinks but never visits the same directory twice (so symlink
    loops end); any depth (the walk keeps its own stack, not Python's). Files are selected
    by extension; hidden files and folders (name starts with ``.``) are skipped unless
    ``include_hidden``. ``root`` may also be a single file. Folders that cannot be listed
    are logged and appended to ``unreadable`` (so a caller can keep what it knew of them).
    """
    root = Path(absolute(root))
    if root.is_file():
        yield root
        return
    if not root.is_dir():
        raise FileNotFoundError(f"No such folder: {str(root)!r}. Pass a folder of images or a single image file.")
    seen: set[tuple[int, int]] = set()
    stack = [root]
    while stack:
        folder = stack.pop()
        try:
            st = folder.stat()
            key = (st.st_dev, st.st_ino)
            if key in seen:
                log.info("skipping %s: already visited (symlink loop or repeat)", folder)
                continue
            seen.add(key)
            entries = sorted(os.scandir(folder), key=lambda e: e.name)
        except OSError as err:
            log.warning("cannot list folder %s: %s", folder, err.strerror or err)
            if unreadable is not None:
                unreadable.append(str(folder))
            continue
        subdirs = []
        for entry in entries:
            if not include_hidden and entry.name.startswith("."):
                continue
            try:
                is_dir = entry.is_dir()  # follows symlinks
            except OSError:
                is_dir = False
            if is_dir:
                subdirs.append(Path(entry.path))
            elif is_image_name(entry.name):
                yield Path(entry.path)
        stack.extend(reversed(subdirs))  # depth first, in name order


def is_image_name(name: str) -> bool:
    """True when a file name has one of :data:`IMAGE_EXTENSIONS` (any case)."""
    return os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS


def read_bytes(path: str | os.PathLike) -> bytes:
    """Read a file, turning OS errors into :class:`DecodeError` reasons."""
    try:
        size = os.path.getsize(path)
        if size > MAX_FILE_BYTES:
            raise DecodeError(f"file too large: {size} bytes (limit {MAX_FILE_BYTES})")
        with open(path, "rb") as f:
            return f.read()
    except IsADirectoryError:
        raise DecodeError("is a directory, not a file") from None
    except FileNotFoundError:
        raise DecodeError("file not found (deleted, or a broken symlink)") from None
    except PermissionError:
        raise DecodeError("permission denied: cannot read the file") from None
    except OSError as err:
        raise DecodeError(f"cannot read file: {err.strerror or err}") from None


def decode(
    source: bytes | str | os.PathLike,
    *,
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
    draft_size: int | None = None,
) -> DecodedImage:
    """Decode an image file to RGB, robustly.

    Parameters
    ----------
    source : bytes or path
        The file's bytes, or its path.
    max_pixels : int or None, default DEFAULT_MAX_PIXELS
        Refuse images with more pixels than this (decompression bombs). None: no limit.
    draft_size : int or None
        For JPEGs, let the decoder downscale by a power of two while both sides stay at
        least this big. Much faster for large photos; pass the size the model crops from.

    Returns
    -------
    DecodedImage
        The first frame, EXIF orientation applied, converted to RGB (alpha composited
        on white, 16-bit and float images rescaled to 8 bits).

    Raises
    ------
    DecodeError
        With the reason: empty file, not an image, truncated/corrupt, too many pixels.
    """
    data = source if isinstance(source, bytes) else read_bytes(source)
    if not data:
        raise DecodeError("empty file (0 bytes)")
    if is_heif(data) and not register_heif():  # recognised by content, whatever the file's name
        from .extras import install_command

        raise DecodeError(f"HEIC/HEIF image, but pillow-heif is not installed: {install_command('heif')}")
    # We enforce our own pixel limit below; Pillow's global one would fire first otherwise.
    Image.MAX_IMAGE_PIXELS = None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # e.g. "Corrupt EXIF data", palette transparency notes
            im = Image.open(io.BytesIO(data))
            width, height = im.size
            if max_pixels is not None and width * height > max_pixels:
                raise DecodeError(
                    f"too many pixels: {width}x{height} = {width * height:,} exceeds the limit of "
                    f"{max_pixels:,} (possible decompression bomb; raise it with --max-pixels)"
                )
            if draft_size and im.format == "JPEG":
                im.draft("RGB", (draft_size, draft_size))
            if getattr(im, "n_frames", 1) > 1:
                im.seek(0)
            im.load()
            orientation = im.getexif().get(0x0112, 1)
            im = ImageOps.exif_transpose(im)
            if orientation in (5, 6, 7, 8):
                width, height = height, width
            rgb = to_rgb(im)
    except DecodeError:
        raise
    except UnidentifiedImageError:
        raise DecodeError("not an image: unrecognised file format") from None
    except Image.DecompressionBombError as err:
        raise DecodeError(f"too many pixels: {err}") from None
    except (OSError, SyntaxError, ValueError, EOFError, IndexError, TypeError, KeyError) as err:
        msg = str(err) or type(err).__name__
        if "truncated" in msg:
            raise DecodeError(f"truncated file: {msg}") from None
        raise DecodeError(f"corrupt image data: {msg}") from None
    except MemoryError:
        raise DecodeError("out of memory while decoding (image too large)") from None
    return DecodedImage(rgb, width, height, data)


def to_rgb(im: Image.Image) -> Image.Image:
    """Convert any Pillow mode to 8-bit RGB; transparency is composited on white."""
    if im.mode == "RGB":
        return im
    if im.mode in ("I", "I;16", "I;16B", "I;16L", "I;16N", "F"):
        a = np.asarray(im, dtype=np.float64)
        hi = 65535.0 if im.mode.startswith("I") and a.max(initial=0) > 255 else float(a.max(initial=0)) or 1.0
        if im.mode == "F":
            lo = float(a.min(initial=0))
            a, hi = a - lo, (float(a.max(initial=0)) - lo) or 1.0
        elif hi <= 255:
            hi = 255.0
        g = np.clip(a * (255.0 / hi), 0, 255).astype(np.uint8)
        return Image.fromarray(g).convert("RGB")
    if im.mode == "P" and "transparency" in im.info:
        im = im.convert("RGBA")
    if im.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        im = im.convert("RGBA")
        background = Image.new("RGBA", im.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, im).convert("RGB")
    return im.convert("RGB")


_heif_registered = False


def register_heif() -> bool:
    """Enable HEIC/HEIF decoding through pillow-heif (once); returns False if it is not installed."""
    global _heif_registered
    if not _heif_registered:
        try:
            import pillow_heif
        except ImportError:
            return False
        pillow_heif.register_heif_opener()
        _heif_registered = True
    return True


def is_heif(data: bytes) -> bool:
    """True when ``data`` starts like a HEIC/HEIF file (an ISO-BMFF ``ftyp`` box with a HEIF brand)."""
    return data[4:8] == b"ftyp" and data[8:12] in _HEIF_BRANDS


def needs_heif(path: str | os.PathLike) -> bool:
    """True when ``path`` has a HEIC/HEIF extension."""
    return os.path.splitext(str(path))[1].lower() in _HEIF_EXTENSIONS
