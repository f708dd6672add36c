"""Geometric verification (lookalike.verify): edited copies verify, unrelated images and unreadable files do not."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from lookalike import evaluate as ev
from lookalike import verify as vf
from lookalike.testing import synthetic_image


def textured(seed: int, size=(320, 240)) -> Image.Image:
    """A seeded synthetic picture with a smooth random texture (flat shapes alone give few keypoints)."""
    rng = np.random.default_rng(seed + 1000)
    base = np.asarray(synthetic_image(seed, size), np.float32)
    grain = (rng.random((size[1] // 6, size[0] // 6)) * 255).astype(np.uint8)
    tex = np.asarray(Image.fromarray(grain).resize(size, Image.BICUBIC), np.float32)
    return Image.fromarray(np.clip(base * 0.6 + tex[..., None] * 0.6 - 20, 0, 255).astype(np.uint8))


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("verify")
    original = textured(1)
    rng = np.random.default_rng(0)
    copies = ev.edit_image(original, rng, names=["rotate_20", "crop_50", "watermark", "thumbnail", "screenshot"])
    out = {"original": original, **copies, "unrelated": textured(2), "unrelated2": textured(3)}
    paths = {}
    for name, im in out.items():
        paths[name] = root / f"{name}.png"
        im.save(paths[name])
    paths["broken"] = root / "broken.jpg"
    paths["broken"].write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    paths["missing"] = root / "missing.jpg"
    return paths


def test_edited_copies_verify(files):
    edits = ["rotate_20", "crop_50", "watermark", "thumbnail", "screenshot"]
    ok, inliers = vf.verify_pairs([files[e] for e in edits], [files["original"]] * len(edits))
    assert ok.tolist() == [True] * len(edits), dict(zip(edits, inliers.tolist()))
    assert (inliers >= vf.MIN_INLIERS).all()


def test_unrelated_images_do_not_verify(files):
    ok, inliers = vf.verify_pairs([files["original"], files["unrelated"], files["rotate_20"]],
                                  [files["unrelated"], files["unrelated2"], files["unrelated2"]])
    assert not ok.any()
    assert (inliers < vf.MIN_INLIERS).all()


def test_two_photos_under_the_same_watermark_do_not_verify(tmp_path):
    """The overlay's keypoints match, the photos do not (coverage and the aligned-pixel correlation)."""
    marked = [ev.edit_image(textured(seed), np.random.default_rng(5), names=["watermark"])["watermark"]
              for seed in (1, 11)]
    m = vf.match_details(vf.features(marked[0]), vf.features(marked[1]))
    assert not m.ok()
    paths = []
    for i, im in enumerate(marked):
        paths.append(tmp_path / f"{i}.png")
        im.save(paths[-1])
    ok, _ = vf.verify_pairs([paths[0]], [paths[1]])
    assert not ok.any()


def test_match_details_returns_the_map():
    im = textured(5)
    shifted = im.crop((40, 20, 320, 240))  # the copy starts 40 px right and 20 px down of the original
    m = vf.match_details(vf.features(shifted), vf.features(im))
    assert m.ok() and m.coverage > 0.5 and m.correlation > 0.9
    scale = vf.LONG_SIDE / 320  # both frames: longer side LONG_SIDE; shifted's longer side is 280
    origin = m.transform @ np.array([0.0, 0.0, 1.0])  # shifted's top-left corner in im's frame
    assert np.allclose(origin, [40 * scale, 20 * scale], atol=2.0)


def test_order_of_the_pair_does_not_matter(files):
    ok, _ = vf.verify_pairs([files["original"], files["crop_50"]], [files["crop_50"], files["original"]])
    assert ok.all()


def test_unreadable_files_are_not_verified(files):
    ok, inliers = vf.verify_pairs([files["broken"], files["original"], files["missing"], files["original"]],
                                  [files["original"], files["missing"], files["original"], files["rotate_20"]])
    assert ok.tolist() == [False, False, False, True]
    assert inliers[:3].tolist() == [0, 0, 0]


def test_bytes_and_empty_inputs(files):
    ok, inliers = vf.verify_pairs([files["rotate_20"].read_bytes()], [files["original"]])
    assert ok.tolist() == [True]
    ok, inliers = vf.verify_pairs([], [])
    assert ok.shape == (0,) and inliers.shape == (0,) and ok.dtype == bool


def test_tiny_and_flat_images_give_no_features():
    assert len(vf.features(Image.new("RGB", (4, 4)))) == 0
    flat = vf.features(Image.new("RGB", (200, 100), (120, 120, 120)))
    assert vf.match(flat, flat) == 0


def test_a_mirror_image_is_not_an_affine_copy():
    im = textured(4)
    assert vf.match(vf.features(im.transpose(Image.FLIP_LEFT_RIGHT)), vf.features(im)) < vf.MIN_INLIERS


def test_lengths_must_agree(files):
    with pytest.raises(ValueError, match="differ in length"):
        vf.verify_pairs([files["original"]], [])


def test_a_small_feature_cache_gives_the_same_answers(files):
    names = ["rotate_20", "crop_50", "unrelated", "thumbnail", "broken", "watermark"]
    a = [files[n] for n in names] + [files["original"]] * 3
    b = [files["original"]] * len(names) + [files["unrelated2"], files["screenshot"], files["missing"]]
    ok, inliers = vf.verify_pairs(a, b)
    ok2, inliers2 = vf.verify_pairs(a, b, cache_size=1)
    assert ok.tolist() == ok2.tolist() == [True, True, False, True, False, True, False, True, False]
    assert inliers.tolist() == inliers2.tolist()
