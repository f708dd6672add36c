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


def test_many_threads_give_the_answers_of_one(files):
    names = ["rotate_20", "crop_50", "unrelated", "thumbnail", "broken", "watermark", "screenshot"]
    a = [files[n] for n in names] * 2
    b = [files["original"]] * len(names) + [files["unrelated2"]] * len(names)
    seen = []
    ok1, inl1 = vf.verify_pairs(a, b, workers=1)
    ok4, inl4 = vf.verify_pairs(a, b, workers=4, progress=seen.append)
    assert ok1.tolist() == ok4.tolist() == [True, True, False, True, False, True, True] + [False] * len(names)
    assert inl1.tolist() == inl4.tolist()
    assert seen == [1.0]  # one chunk of CHUNK_PAIRS or fewer


def test_verify_plan_modes():
    assert vf.plan("auto", 10) == vf.Plan("auto", True)
    assert vf.plan(None, 10) == vf.Plan("auto", True)
    assert vf.plan(False, 10) == vf.Plan("off", False)
    assert vf.plan(True, 10 ** 6) == vf.Plan("on", True)  # forced: at any size
    assert vf.plan("auto", 10, against=True) == vf.Plan("auto", False)  # another collection: off, no note
    with pytest.raises(ValueError, match="against"):
        vf.plan(True, 10, against=True)
    big = vf.plan("auto", vf.AUTO_MAX_IMAGES + 1)
    assert not big.on and f"{vf.AUTO_MAX_IMAGES + 1:,} images is above the {vf.AUTO_MAX_IMAGES:,}" in big.note
    assert vf.plan("auto", vf.AUTO_MAX_IMAGES).on
    with pytest.raises(ValueError, match="verify must be"):
        vf.plan("sometimes", 10)


def test_the_cli_copy_of_the_size_limit_is_the_library_one():
    from lookalike.cli.options import VERIFY_MAX_IMAGES

    assert VERIFY_MAX_IMAGES == vf.AUTO_MAX_IMAGES


def _without_opencv(monkeypatch):
    """Make ``import cv2`` fail as it does where the verify extra is not installed."""
    import sys

    for name in [m for m in sys.modules if m == "cv2" or m.startswith("cv2.")] + ["cv2"]:
        monkeypatch.setitem(sys.modules, name, None)


def test_without_opencv_auto_is_off_with_the_pip_command(monkeypatch):
    from lookalike.extras import MissingExtraError

    _without_opencv(monkeypatch)
    assert not vf.available()
    p = vf.plan("auto", 10)
    assert not p.on and "pip install 'lookalike[verify]'" in p.note
    with pytest.raises(MissingExtraError):
        vf.plan(True, 10)
    assert vf.plan(False, 10) == vf.Plan("off", False)


@pytest.fixture(scope="module")
def hard_copies(tmp_path_factory):
    """conftest.hard_copy_db: 5 real photos + 2 hard copies of one; checks the copies score below the threshold."""
    from conftest import hard_copy_db

    from lookalike import Collection
    from lookalike.dupes import DEFAULT_THRESHOLD

    db, group = hard_copy_db(tmp_path_factory.mktemp("hard"))
    col = Collection.open(db)
    E = np.asarray(col.embeddings, np.float32)
    names = [p.rsplit("/", 1)[1] for p in col.paths]
    o = names.index(group[0])
    assert all(E[o] @ E[names.index(n)] < DEFAULT_THRESHOLD for n in group[1:])
    return db, group


def _dupes(args, db):
    import json

    from typer.testing import CliRunner

    from lookalike.cli import app

    res = CliRunner().invoke(app, ["dupes", "--db", str(db), "--format", "json"] + args)
    assert res.exit_code == 0, res.output
    data = json.loads(res.stdout)
    groups = [sorted(m["path"].rsplit("/", 1)[1] for m in g["members"]) for g in data["groups"]]
    return data, groups, res.stderr


def test_dupes_verifies_by_default(hard_copies):
    db, group = hard_copies
    data, groups, err = _dupes([], db)
    assert (data["verify"], data["verified"], data["verify_note"]) == ("auto", True, None)
    assert groups == [group]
    # the keeper is the turned copy (most pixels: its canvas grew); the other two verified against it
    assert sorted((m["role"], m["verified"]) for m in data["groups"][0]["members"]) == [
        ("act", True), ("act", True), ("keep", False)]
    assert err == ""
    assert _dupes(["--verify"], db)[:2] == (dict(data, verify="on"), groups)


def test_csv_says_which_members_were_verified(hard_copies):
    import csv
    import io

    from typer.testing import CliRunner

    from lookalike.cli import app

    db, group = hard_copies
    res = CliRunner().invoke(app, ["dupes", "--db", str(db), "--format", "csv"])
    assert res.exit_code == 0, res.output
    rows = list(csv.DictReader(io.StringIO(res.stdout)))
    assert sorted((r["path"].rsplit("/", 1)[1], r["role"], r["verified"]) for r in rows) == sorted(
        (name, "keep" if name == "copy_rotate_20.jpg" else "act", "0" if name == "copy_rotate_20.jpg" else "1")
        for name in group)


def test_no_verify_turns_it_off(hard_copies):
    db, _ = hard_copies
    data, groups, err = _dupes(["--no-verify"], db)
    assert (data["verify"], data["verified"], data["verify_note"], groups, err) == ("off", False, None, [], "")


def test_without_opencv_dupes_says_what_is_skipped(hard_copies, monkeypatch):
    db, _ = hard_copies
    _without_opencv(monkeypatch)
    data, groups, err = _dupes([], db)
    assert (data["verify"], data["verified"], groups) == ("auto", False, [])
    assert data["verify_note"] in err and "pip install 'lookalike[verify]'" in err
    assert len(err.strip().splitlines()) == 1


def test_above_the_size_limit_auto_is_off_and_verify_forces_it(hard_copies, monkeypatch):
    db, group = hard_copies
    monkeypatch.setattr(vf, "AUTO_MAX_IMAGES", 6)  # the collection has 7 images
    data, groups, err = _dupes([], db)
    assert (data["verified"], groups) == (False, [])
    assert "7 images is above the 6 verified by default; --verify checks them anyway" in err
    assert len(err.strip().splitlines()) == 1
    data, groups, err = _dupes(["--verify"], db)
    assert (data["verify"], data["verified"], groups, err) == ("on", True, [group], "")


def test_against_another_collection_is_not_verified(hard_copies):
    db, _ = hard_copies
    data, groups, err = _dupes(["--against", str(db)], db)
    assert (data["verify"], data["verified"], data["verify_note"], err) == ("auto", False, None, "")
    assert len(groups) == 7  # every image matches itself there


def test_review_groups_reports_progress_of_the_verification(hard_copies):
    from lookalike import Collection
    from lookalike.dupes import review_groups, verification

    col = Collection.open(hard_copies[0])
    seen = []
    groups = review_groups(col, progress=seen.append)
    assert [sorted(p.rsplit("/", 1)[1] for p in g.paths) for g in groups] == [hard_copies[1]]
    assert seen[-1] == 1.0 and seen == sorted(seen) and len(seen) >= 2
    assert verification(col) == vf.Plan("auto", True)
    assert verification(col, False) == vf.Plan("off", False)
    assert review_groups(col, verify=False) == []


def test_a_member_chained_to_its_keeper_is_verified_against_it(hard_copies):
    """A member grouped through other members (below the threshold to the keeper) is checked against the keeper."""
    from lookalike import Collection
    from lookalike.dupes import DEFAULT_THRESHOLD, MemberFacts, make_group, verify_chained

    col = Collection.open(hard_copies[0])
    facts = MemberFacts(col)
    by_name = {p.rsplit("/", 1)[1]: i for i, p in zip(col.ids, col.paths)}
    ids = sorted(by_name[n] for n in hard_copies[1] + ["airplanes_image_0001.jpg"])
    keeper = by_name[hard_copies[1][0]]  # the original
    g = make_group(col, facts, ids, keeper, [], "near", DEFAULT_THRESHOLD, (), lambda a, b: False)
    assert sorted(m.role for m in g.members) == ["chained"] * 3 + ["keep"]
    (g2,) = verify_chained(col, facts, [g], DEFAULT_THRESHOLD, (), lambda a, b: False, frozenset())
    roles = {m.path.rsplit("/", 1)[1]: (m.role, m.verified) for m in g2.members}
    assert roles == {hard_copies[1][0]: ("keep", False), hard_copies[1][1]: ("act", True),
                     hard_copies[1][2]: ("act", True), "airplanes_image_0001.jpg": ("chained", False)}


def test_the_screening_keeps_every_verified_pair(files):
    """Cheap features first: the same pairs verify with and without it; pairs it drops report 0 inliers."""
    names = ["rotate_20", "crop_50", "unrelated", "thumbnail", "broken", "watermark", "screenshot", "unrelated2"]
    a = [files[n] for n in names]
    b = [files["original"]] * len(names)
    ok, inliers = vf.verify_pairs(a, b)
    ok_full, inliers_full = vf.verify_pairs(a, b, screen=False)
    assert ok.tolist() == ok_full.tolist() == [True, True, False, True, False, True, True, False]
    assert inliers[ok].tolist() == inliers_full[ok].tolist()
    cheap = {n: vf.screen_features(Image.open(files[n])) for n in ("unrelated", "unrelated2", "original")}
    for n in ("unrelated", "unrelated2"):  # dropped by the screening: no full check, 0 inliers
        assert vf.match(cheap[n], cheap["original"]) < vf.SCREEN_MIN_INLIERS
        assert inliers[names.index(n)] == 0


def test_features_of_the_grey_image_are_the_features_of_the_image(files):
    im = Image.open(files["thumbnail"])
    a, b = vf.features(im), vf.features(vf.grey_image(im))
    assert np.array_equal(a.points, b.points) and np.array_equal(a.descriptors, b.descriptors)
    assert a.size == b.size and np.array_equal(a.thumb, b.thumb)
