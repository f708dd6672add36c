import io
import os

import numpy as np
import pytest
from conftest import synthetic_image
from PIL import Image

from lookalike import images
from lookalike.images import DecodeError, decode, discover


def _save(im, path, **kw):
    path.parent.mkdir(parents=True, exist_ok=True)
    im.save(path, **kw)
    return path


def test_discover_sorted_filters_extensions_and_hidden(tmp_path):
    im = synthetic_image(0)
    for rel in ["b/2.jpg", "b/1.PNG", "a/x.webp", "notes.txt", ".hidden/h.jpg", "b/.dot.jpg", "c/d.TIFF"]:
        p = tmp_path / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        if rel.endswith("txt"):
            p.write_text("hi")
        else:
            fmt = {"jpg": "JPEG", "png": "PNG", "webp": "WEBP", "tiff": "TIFF"}[rel.rsplit(".", 1)[1].lower()]
            im.save(p, format=fmt)
    found = [p.relative_to(tmp_path).as_posix() for p in discover(tmp_path)]
    assert found == ["a/x.webp", "b/1.PNG", "b/2.jpg", "c/d.TIFF"]
    hidden = [p.relative_to(tmp_path).as_posix() for p in discover(tmp_path, include_hidden=True)]
    assert ".hidden/h.jpg" in hidden and "b/.dot.jpg" in hidden


def test_discover_follows_symlinks_without_looping(tmp_path):
    _save(synthetic_image(0), tmp_path / "real" / "a.jpg")
    (tmp_path / "real" / "loop").symlink_to(tmp_path / "real")  # loop back to itself
    (tmp_path / "link").symlink_to(tmp_path / "real")  # second route to the same folder
    found = list(discover(tmp_path))
    assert len(found) == 1


def test_discover_directory_named_like_an_image(tmp_path):
    (tmp_path / "x.jpg").mkdir()
    _save(synthetic_image(1), tmp_path / "x.jpg" / "inner.png")
    assert [p.name for p in discover(tmp_path)] == ["inner.png"]


def test_discover_missing_folder_says_what_to_do(tmp_path):
    with pytest.raises(FileNotFoundError, match="folder"):
        list(discover(tmp_path / "nope"))


def test_decode_exif_orientation(tmp_path):
    base = synthetic_image(3, size=(200, 100))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 CW on display
    p = tmp_path / "rot.jpg"
    base.save(p, exif=exif, quality=95)
    d = decode(p)
    assert d.image.size == (100, 200)
    assert (d.width, d.height) == (100, 200)
    upright = base.transpose(Image.ROTATE_270)
    diff = np.abs(np.asarray(d.image, float) - np.asarray(upright, float)).mean()
    assert diff < 12


@pytest.mark.parametrize(
    "mode",
    ["CMYK", "L", "LA", "1", "P_alpha", "RGBA", "I;16", "I", "F"],
)
def test_decode_every_mode_to_rgb(tmp_path, mode):
    rgb = synthetic_image(4)
    if mode == "P_alpha":
        im = rgb.convert("P")
        im.info["transparency"] = 0
        p, fmt = tmp_path / "pal.png", "PNG"
    elif mode == "I;16":
        arr = (np.asarray(rgb.convert("L"), np.uint16) * 257)
        im = Image.fromarray(arr.astype("<u2"))  # mode I;16
        p, fmt = tmp_path / "g16.png", "PNG"
    elif mode == "I":
        im = Image.fromarray(np.asarray(rgb.convert("L"), np.int32) * 200)
        p, fmt = tmp_path / "i32.tif", "TIFF"
    elif mode == "F":
        im = Image.fromarray(np.asarray(rgb.convert("L"), np.float32) / 255.0)
        p, fmt = tmp_path / "f.tif", "TIFF"
    else:
        im = rgb.convert(mode)
        fmt = "JPEG" if mode in ("CMYK", "L") else "PNG"
        p = tmp_path / f"m.{fmt.lower()}"
    im.save(p, format=fmt)
    d = decode(p)
    assert d.image.mode == "RGB"
    assert d.image.size == rgb.size
    a = np.asarray(d.image)
    assert a.std() > 5, "image content lost in conversion"
    if mode in ("I;16", "I", "F"):  # rescaled to the full 8-bit range, not clipped to white
        assert 0 < a.mean() < 250


def test_decode_alpha_composited_on_white(tmp_path):
    im = Image.new("RGBA", (50, 50), (255, 0, 0, 0))
    p = _save(im, tmp_path / "clear.png")
    assert np.asarray(decode(p).image).min() == 255


def test_decode_animated_first_frame(tmp_path):
    frames = [Image.new("RGB", (40, 40), c) for c in [(250, 0, 0), (0, 250, 0), (0, 0, 250)]]
    p = tmp_path / "anim.gif"
    frames[0].save(p, save_all=True, append_images=frames[1:], duration=50, loop=0)
    px = np.asarray(decode(p).image)[20, 20]
    assert px[0] > 200 and px[1] < 50
    pw = tmp_path / "anim.webp"
    frames[0].save(pw, save_all=True, append_images=frames[1:], duration=50, lossless=True)
    assert np.asarray(decode(pw).image)[20, 20][0] > 200


def test_decode_bomb_limit(tmp_path):
    p = _save(Image.new("L", (5000, 5000)), tmp_path / "big.png")  # 25 MP, a tiny file
    with pytest.raises(DecodeError, match="too many pixels"):
        decode(p, max_pixels=10_000_000)
    assert decode(p, max_pixels=None).image.size == (5000, 5000)


@pytest.mark.parametrize(
    "content,reason",
    [
        (b"", "empty file"),
        (b"hello, I am text", "not an image"),
        (b"<html><body>404</body></html>", "not an image"),
    ],
)
def test_decode_bad_bytes(tmp_path, content, reason):
    p = tmp_path / "bad.jpg"
    p.write_bytes(content)
    with pytest.raises(DecodeError, match=reason):
        decode(p)


def test_decode_truncated_and_corrupt(tmp_path):
    buf = io.BytesIO()
    synthetic_image(5, size=(400, 300)).save(buf, format="JPEG", quality=90)
    data = buf.getvalue()
    (tmp_path / "trunc.jpg").write_bytes(data[: len(data) // 2])
    with pytest.raises(DecodeError, match="truncated|corrupt"):
        decode(tmp_path / "trunc.jpg")
    png = io.BytesIO()
    synthetic_image(5).save(png, format="PNG")
    bad = bytearray(png.getvalue())
    bad[60:80] = b"\x00" * 20  # damage the IDAT stream
    (tmp_path / "corrupt.png").write_bytes(bytes(bad))
    with pytest.raises(DecodeError):
        decode(tmp_path / "corrupt.png")


def test_decode_unreadable_and_directory(tmp_path):
    d = tmp_path / "dir.jpg"
    d.mkdir()
    with pytest.raises(DecodeError, match="directory"):
        decode(d)
    with pytest.raises(DecodeError, match="not found"):
        decode(tmp_path / "missing.jpg")
    if os.geteuid() != 0:  # root can read anything
        p = _save(synthetic_image(0), tmp_path / "locked.jpg")
        p.chmod(0)
        with pytest.raises(DecodeError, match="permission"):
            decode(p)


def test_jpeg_draft_keeps_at_least_requested_size(tmp_path):
    p = _save(synthetic_image(6, size=(3000, 2000)), tmp_path / "big.jpg", quality=90)
    d = decode(p, draft_size=256)
    assert min(d.image.size) >= 256 and max(d.image.size) < 3000
    assert (d.width, d.height) == (3000, 2000)


def _heic(tmp_path, seed=7):
    """A HEIC file written in a child process (this one must not have registered pillow-heif yet)."""
    import subprocess
    import sys

    p = tmp_path / f"photo{seed}.png"
    synthetic_image(seed).save(p)
    code = ("import sys, pillow_heif; from PIL import Image; pillow_heif.register_heif_opener(); "
            "Image.open(sys.argv[1]).save(sys.argv[2], format='HEIF', quality=90)")
    subprocess.run([sys.executable, "-c", code, str(p), str(p.with_suffix(".heic"))], check=True)
    return p.with_suffix(".heic")


def test_heic_decodes_by_content_in_a_fresh_process(tmp_path):
    """HEIF bytes decode on first sight, whatever the name (or none: Spark hands over bytes)."""
    import subprocess
    import sys

    heic = _heic(tmp_path)
    renamed = tmp_path / "looks-like.jpg"
    renamed.write_bytes(heic.read_bytes())
    code = ("import sys; from lookalike.images import decode; from pathlib import Path; "
            "print([decode(Path(p).read_bytes()).image.size for p in sys.argv[1:]])")
    out = subprocess.run([sys.executable, "-c", code, str(heic), str(renamed)], capture_output=True, text=True)
    assert out.stdout.strip() == "[(160, 120), (160, 120)]", out.stderr[-2000:]
    ref = np.asarray(decode(tmp_path / "photo7.png").image, np.float32)
    assert np.abs(np.asarray(decode(heic).image, np.float32) - ref).mean() < 8  # lossy, but the same picture


def _glob_matches(glob: str, name: str) -> bool:
    """Hadoop glob semantics for ``*.{a,b}`` with ``[xX]`` classes (what binaryFile's pathGlobFilter does)."""
    import fnmatch

    head, alternatives = glob[:-1].split("{")
    return any(fnmatch.fnmatchcase(name, head + alt) for alt in alternatives.split(","))


def test_spark_takes_the_same_files_as_the_local_indexer():
    from lookalike.spark.embed import IMAGE_GLOB

    names = [f"x{e}" for e in images.IMAGE_EXTENSIONS]
    names += [n.upper() for n in names] + [n.title() for n in names]
    names += ["a.JPE", "b.heic", "c.HEIF", "d.Jpeg", "notes.txt", "x.jpg.bak", "x.jpeg2", "jpg", "x.svg", "x.PDF"]
    for name in names:
        assert _glob_matches(IMAGE_GLOB, name) == images.is_image_name(name), name
    assert images.is_image_name("a.JPE") and images.is_image_name("b.heic") and not images.is_image_name("x.svg")
