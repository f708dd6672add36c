"""Helpers shared by the test suite and the benchmarks (so that neither imports the other).

* :func:`synthetic_image` — a seeded, photo-like picture of coloured shapes.
* :func:`build_corpus` — messy input: damaged, odd and hostile files built from a few images;
  returns ``{relative path: kind}`` where kind starts with ``good:`` (must be indexed) or
  ``bad:`` (must be skipped with a reason).
* :func:`run_and_kill` — SIGKILL a running ``lookalike index`` at a seeded random point of its progress.
* :func:`free_port` — a free TCP port on 127.0.0.1 for a test server.
* :func:`wait_healthy` — wait until a started ``lookalike serve`` answers ``/healthz``.
"""

from __future__ import annotations

import io
import json
import os
import signal
import socket
import subprocess
import time
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw


def synthetic_image(seed: int, size=(160, 120)) -> Image.Image:
    """A seeded picture of coloured shapes on a gradient: distinct per seed, photo-like enough for a CNN."""
    rng = np.random.default_rng(seed)
    w, h = size
    base = rng.integers(0, 255, 3)
    grad = np.linspace(0, 1, w)[None, :, None] * rng.integers(-120, 120, 3)
    arr = np.clip(base + grad + np.zeros((h, w, 3)), 0, 255).astype(np.uint8)
    im = Image.fromarray(arr)
    d = ImageDraw.Draw(im)
    for _ in range(6):
        x0, y0 = rng.integers(0, w - 20), rng.integers(0, h - 20)
        x1, y1 = x0 + rng.integers(10, w // 2), y0 + rng.integers(10, h // 2)
        color = tuple(int(c) for c in rng.integers(0, 255, 3))
        if rng.random() < 0.5:
            d.ellipse((x0, y0, x1, y1), fill=color)
        else:
            d.rectangle((x0, y0, x1, y1), fill=color)
    return im


# ------------------------------------------------------------------ damaged corpus
EXIF_ORIENTATION = 0x0112


def _jpeg(im, **kw) -> bytes:
    buf = io.BytesIO()
    im.save(buf, format="JPEG", quality=95, subsampling=0, **kw)  # 4:4:4: chroma not shifted by rotation
    return buf.getvalue()


def _png(im) -> bytes:
    buf = io.BytesIO()
    im.save(buf, format="PNG")
    return buf.getvalue()


def oriented(im: Image.Image, orientation: int) -> Image.Image:
    """The stored pixels that display as ``im`` under EXIF ``orientation`` (1-8)."""
    inverse = {1: None, 2: Image.FLIP_LEFT_RIGHT, 3: Image.ROTATE_180, 4: Image.FLIP_TOP_BOTTOM,
               5: Image.TRANSPOSE, 6: Image.ROTATE_90, 7: Image.TRANSVERSE, 8: Image.ROTATE_270}[orientation]
    return im if inverse is None else im.transpose(inverse)


def build_corpus(root: Path, originals: list[Image.Image], seed: int = 0, copies: int = 12) -> dict[str, str]:
    """Write the messy corpus under ``root``; see the module docstring."""
    rng = np.random.default_rng(seed)
    kinds: dict[str, str] = {}
    root.mkdir(parents=True, exist_ok=True)

    def put(rel: str, data: bytes, kind: str):
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data)
        kinds[rel] = kind

    for n, im in enumerate(originals):
        im = im.convert("RGB")
        jpg = _jpeg(im)
        put(f"good/orig_{n}.jpg", jpg, "good:original")
        for c in range(copies):  # truncated at random offsets (keeping at least the header)
            cut = int(rng.integers(200, max(201, len(jpg) - 64)))
            put(f"bad/trunc_{n}_{c}.jpg", jpg[:cut], "bad:truncated")
        for c in range(copies):  # byte flips in the header, always including the SOI marker
            b = bytearray(jpg)
            for pos in [int(rng.integers(0, 2))] + rng.integers(2, 24, 3).tolist():
                b[pos] ^= 0xFF
            put(f"bad/headerflip_{n}_{c}.jpg", bytes(b), "bad:header-flip")
        for c in range(copies // 2):  # byte flips in the data: may decode (garbled) or fail
            b = bytearray(jpg)
            for pos in rng.integers(len(b) // 3, len(b) - 2, 8):
                b[pos] ^= int(rng.integers(1, 255))
            put(f"either/dataflip_{n}_{c}.jpg", bytes(b), "either:data-flip")
        png = _png(im)
        put(f"bad/trunc_{n}.png", png[: len(png) // 2], "bad:truncated")
        for o in range(1, 9):  # EXIF orientations 1..8, stored so they display upright
            exif = Image.Exif()
            exif[EXIF_ORIENTATION] = o
            put(f"good/exif/orient{o}_{n}.jpg", _jpeg(oriented(im, o), exif=exif), f"good:exif{o}")
        put(f"good/modes/cmyk_{n}.jpg", _jpeg(im.convert("CMYK")), "good:cmyk")
        g16 = (np.asarray(im.convert("L"), np.uint16) * 257).astype("<u2")
        put(f"good/modes/gray16_{n}.png", _png(Image.fromarray(g16)), "good:16bit")
        pal = im.convert("P", palette=Image.ADAPTIVE)
        pal.info["transparency"] = 0
        buf = io.BytesIO()
        pal.save(buf, format="PNG", transparency=0)
        put(f"good/modes/palette_alpha_{n}.png", buf.getvalue(), "good:palette-alpha")
        put(f"good/modes/la_{n}.png", _png(im.convert("LA")), "good:LA")
        frames = [im, im.rotate(90), im.rotate(180)]
        buf = io.BytesIO()
        frames[0].save(buf, format="GIF", save_all=True, append_images=frames[1:], duration=40)
        put(f"good/anim/anim_{n}.gif", buf.getvalue(), "good:animated-gif")
        buf = io.BytesIO()
        frames[0].save(buf, format="WEBP", save_all=True, append_images=frames[1:], duration=40)
        put(f"good/anim/anim_{n}.webp", buf.getvalue(), "good:animated-webp")
        put(f"good/names/ünïcødé 写真 {n}.jpg", jpg, "good:unicode-name")
        put(f"good/names/with space {n}.jpg", jpg, "good:space-name")
        put(f"good/names/new\nline {n}.jpg", jpg, "good:newline-name")
    put("bad/empty.jpg", b"", "bad:empty")
    put("bad/text.jpg", b"just some text, not a JPEG\n" * 20, "bad:text")
    put("bad/page.png", b"<!doctype html><html><body>404 Not Found</body></html>", "bad:html")
    bomb = Image.new("1", (30000, 30000))  # 900 MP, a tiny file
    buf = io.BytesIO()
    bomb.save(buf, format="PNG")
    put("bad/bomb.png", buf.getvalue(), "bad:bomb")
    put("bad/unreadable.jpg", _jpeg(originals[0].convert("RGB")), "bad:unreadable")
    if os.geteuid() != 0:
        (root / "bad/unreadable.jpg").chmod(0)
    else:  # root reads anything: make it a dangling symlink instead
        (root / "bad/unreadable.jpg").unlink()
        (root / "bad/unreadable.jpg").symlink_to(root / "does-not-exist.jpg")
    (root / "loop").mkdir(exist_ok=True)
    (root / "loop" / "again").symlink_to(root / "loop")  # symlink loop
    (root / "folder.jpg").mkdir(exist_ok=True)  # a directory named like an image
    return kinds


# ------------------------------------------------------------------ kill harness
def committed_rows(db: Path) -> int:
    """Rows in the last committed generation (0 if none yet)."""
    from .collection.store import MANIFEST

    try:
        return int(json.loads((db / MANIFEST).read_text())["count"])
    except (OSError, ValueError, KeyError):
        return 0


def run_and_kill(cmd: list[str], env: dict, db: Path, total: int, seed: int, timeout: float = 120) -> dict:
    """Start ``cmd`` and SIGKILL it once a random share of ``total`` rows is committed.

    It waits a random few ms more first, so the kill lands in embedding or in the middle of a commit.
    """
    rng = np.random.default_rng(seed)
    target = int(rng.integers(0, total))
    extra = float(rng.uniform(0, 0.3))
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + timeout
    while proc.poll() is None and committed_rows(db) < target and time.monotonic() < deadline:
        time.sleep(0.01)
    time.sleep(extra)
    finished = proc.poll() is not None
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    return {"target_rows": target, "finished_before_kill": finished, "rows_at_kill": committed_rows(db)}


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free now (for a test or benchmark server)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_healthy(url: str, timeout: float = 60.0, proc: subprocess.Popen | None = None) -> None:
    """Poll ``url + "/healthz"`` until it answers 200.

    Raises ``RuntimeError`` (with the server's stderr) if ``proc`` exits first, ``TimeoutError``
    after ``timeout`` seconds.
    """
    import urllib.error
    import urllib.request

    deadline = time.monotonic() + timeout
    while True:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"the server exited with {proc.returncode}: {proc.communicate()[1]}")
        try:
            with urllib.request.urlopen(f"{url}/healthz", timeout=2) as r:
                if r.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        if time.monotonic() > deadline:
            raise TimeoutError(f"{url} did not answer /healthz within {timeout:.0f} s")
        time.sleep(0.1)
