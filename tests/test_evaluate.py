"""The near-duplicate suite: seeded edits and the scores computed from them."""

import numpy as np
from conftest import synthetic_image
from PIL import Image

from lookalike import evaluate as ev


def _pixels(im):
    return np.asarray(im.convert("RGB"))


def test_edits_are_seeded_and_deterministic():
    im = synthetic_image(3, (200, 150))
    a = ev.edit_image(im, np.random.default_rng(7))
    b = ev.edit_image(im, np.random.default_rng(7))
    assert list(a) == list(ev.EDIT_NAMES)
    for name in a:
        assert a[name].mode == "RGB", name
        assert np.array_equal(_pixels(a[name]), _pixels(b[name])), name
    c = ev.edit_image(im, np.random.default_rng(8))
    assert not np.array_equal(_pixels(a["crop_50"]), _pixels(c["crop_50"]))


def test_the_old_edit_names_still_exist():
    assert {"crop", "jpeg_q30", "downscale_50", "rotate_10", "colour", "blur_noise", "text_overlay", "border",
            "flip"} <= set(ev.EDIT_NAMES)


def test_new_edits_do_what_they_say():
    im = synthetic_image(5, (300, 200))
    e = ev.edit_image(im, np.random.default_rng(0))
    assert e["squash"].size == (200, 200)  # a landscape photo squashed to a square
    w, h = e["stretch"].size
    assert (w == 300) != (h == 200) and 0.59 <= min(w / 300, h / 200) <= 0.76
    assert e["rotate_90"].size == (200, 300) and e["rotate_180"].size == (300, 200)
    assert np.array_equal(_pixels(e["rotate_180"]), _pixels(im.transpose(Image.ROTATE_180)))
    r = _pixels(e["rotate_20"])
    assert r.shape[0] > 200 and r.shape[1] > 300 and r[0, 0].sum() == 0  # expanded, black corners
    assert max(e["thumbnail"].size) <= 160 and max(e["thumbnail"].size) >= 64
    cw, ch = e["crop_50"].size
    assert 0.39 <= cw * ch / (300 * 200) <= 0.61
    assert e["screenshot"].width > 300 and abs(e["screenshot"].width / e["screenshot"].height - 1.6) < 0.02
    assert e["watermark"].size == (300, 200) and not np.array_equal(_pixels(e["watermark"]), _pixels(im))
    for name in ("gamma", "colour_cast"):
        assert e[name].size == (300, 200)
        assert np.abs(_pixels(e[name]).astype(int) - _pixels(im)).mean() > 5, name


def _unit(x):
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def test_score_near_duplicates_on_synthetic_vectors():
    rng = np.random.default_rng(0)
    db = _unit(rng.normal(size=(200, 16)))
    rows = np.arange(0, 200, 20)
    close = _unit(db[rows] + 0.05 * rng.normal(size=(10, 16)))  # cosine ~0.98: found, rank 1
    far = _unit(db[rows] + 2.0 * rng.normal(size=(10, 16)))  # lost
    res = ev.score_near_duplicates(db, rows, {"close": close, "far": far}, k=5, threshold=0.92,
                                   labels=[str(i % 4) for i in range(200)])
    assert res["edits"]["close"] == {"recall_at_1": 1.0, "recall_at_5": 1.0, "found": 1.0,
                                     "median_score": res["edits"]["close"]["median_score"]}
    assert res["edits"]["far"]["found"] == 0.0
    assert res["scale"]["0.92"]["false_pairs"] == 0 and res["pair_precision"] == 1.0
    assert res["found"] == 0.5 and 0.5 < res["group_map"] <= 1
    assert res["purity"]["0.92"]["purity"] == 1.0 and res["purity"]["0.92"]["chained"] == 0
    # at a threshold of -1 every pair is reported: precision collapses and everything chains
    low = ev.score_near_duplicates(db, rows, {"close": close}, k=5, threshold=-1.0)
    assert low["scale"]["-1.00"]["precision"] < 0.01


def test_purity_sees_chaining():
    base = np.eye(4)
    vecs = np.vstack([base[0], _unit(base[0] + 0.1 * base[1]), base[1], _unit(base[1] + 0.01 * base[0])])
    res = ev._purity(vecs, np.array([0, 0, 1, 1]), [0.5])
    assert res["0.50"]["chained"] == 0 and res["0.50"]["purity"] == 1.0  # cos(base0, base1) = 0 < 0.5
    close = np.vstack([base[0], _unit(base[0] + 0.2 * base[1]), _unit(base[0] + 0.5 * base[1])])
    res = ev._purity(close, np.array([0, 0, 1]), [0.8])
    assert res["0.80"]["chained"] == 1 and res["0.80"]["purity"] == 0.0


def test_find_twins_uses_pixels_not_the_embedding(tmp_path):
    from PIL import ImageDraw

    orig = synthetic_image(1, (200, 150))
    logo = orig.copy()
    ImageDraw.Draw(logo).rectangle((170, 5, 195, 14), fill=(255, 255, 255))  # the same photo with a logo
    paths = []
    for i, im in enumerate([orig, logo, synthetic_image(2, (200, 150)), orig]):
        paths.append(str(tmp_path / f"{i}.png"))
        im.save(paths[-1])
    db = _unit(np.array([[1, 0, 0], [0.95, 0.05, 0], [0.9, 0.1, 0], [0, 0, 1]], np.float32))  # all close but #3
    assert ev.find_twins(paths, np.array([0]), db) == {0: [1]}  # #2 is close but another photo; #3 is far
    assert ev.find_twins(paths, np.array([2]), db) == {}
