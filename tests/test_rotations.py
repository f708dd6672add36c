"""Rotations (issue 14, item 6): variant embeddings stored per segment and used by dupes only."""

import shutil
from pathlib import Path

import numpy as np
import pytest
from conftest import synthetic_image
from PIL import Image

from lookalike import Collection
from lookalike.collection import store
from lookalike.dupes import DEFAULT_THRESHOLD, find_pairs, review_groups
from lookalike.storage import CorruptCollectionError


def _names(pairs):
    return {frozenset((Path(p.path_a).name, Path(p.path_b).name)) for p in pairs}


TURNED = {frozenset(("img_0.png", "turned_0.png")), frozenset(("img_6.png", "turned_6.png"))}


@pytest.fixture(scope="module")
def turned_folder(tmp_path_factory) -> Path:
    """8 distinct images, image 0 turned by 270 degrees and image 6 by 90, in two sub-folders.

    Plain cosines of those copies to their originals: 0.82 and 0.85 (under the threshold).
    """
    root = tmp_path_factory.mktemp("turned") / "photos"
    for sub in ("a", "b"):
        (root / sub).mkdir(parents=True)
    for i in range(8):
        synthetic_image(i).save(root / ("a" if i < 4 else "b") / f"img_{i}.png")
    synthetic_image(0).transpose(Image.Transpose.ROTATE_270).save(root / "b" / "turned_0.png")
    synthetic_image(6).transpose(Image.Transpose.ROTATE_90).save(root / "b" / "turned_6.png")
    return root


@pytest.fixture(scope="module")
def built(tmp_path_factory, turned_folder):
    """(plain collection, collection with rotations) of the folder, indexed a/ then b/ (two segments each)."""
    base = tmp_path_factory.mktemp("dbs")
    plain = Collection.create(base / "plain")
    rot = Collection.create(base / "rot", rotations=True)
    for col in (plain, rot):
        col.index(turned_folder / "a")
        col.add(sorted((turned_folder / "b").iterdir()))
    return base / "plain", base / "rot"


def _copy(src: Path, tmp_path: Path) -> Path:
    dst = tmp_path / src.name
    shutil.copytree(src, dst)
    return dst


def test_a_turned_copy_is_found_only_with_rotations(built):
    plain, rot = Collection.open(built[0]), Collection.open(built[1])
    # a collection without rotations is laid out as before: no manifest field, no variants files
    assert plain.rotations == () and "rotations" not in plain.manifest
    assert not list(plain.path.glob("*.var.npy")) and not any("var" in e for e in plain.manifest["segments"])
    assert plain.variants_of_rows([0]) is None
    assert rot.rotations == ("rot90", "rot180") and rot.manifest["rotations"] == ["rot90", "rot180"]
    assert not TURNED & _names(find_pairs(plain, DEFAULT_THRESHOLD, method="exact"))
    for method in ("exact", "lsh"):
        if method == "lsh":
            rot.build_lsh(min_segment_rows=2)
        pairs = find_pairs(rot, DEFAULT_THRESHOLD, method=method)
        assert TURNED <= _names(pairs), method
        assert all(p.id_a < p.id_b for p in pairs)  # each pair once
        assert len(_names(pairs)) == len(pairs)
    groups = [g for g in review_groups(rot) if g.tier == "near"]
    found = {frozenset(Path(m.path).name for m in g.members) for g in groups}
    assert TURNED <= found
    for g in groups:  # the turned copy scores against its keeper like an upright copy: it may be acted on
        assert all(m.role in ("keep", "act") and m.score >= DEFAULT_THRESHOLD for m in g.members)
    # search is unchanged: the same embeddings answer it
    assert np.array_equal(np.asarray(plain.embeddings), np.asarray(rot.embeddings))


def test_variants_are_the_encoders_embeddings_of_the_turned_images(built, turned_folder):
    from lookalike.encoders import get_encoder
    from lookalike.rotations import VariantEncoder, embed_variants

    col = Collection.open(built[1])
    enc = get_encoder(engine=col.manifest["engine"])  # the collection's engine (the shared int8 model by default)
    image = Image.open(turned_folder / "a" / "img_2.png").convert("RGB")
    row = col.paths.index(str(turned_folder / "a" / "img_2.png"))
    expected = embed_variants(enc, [image])[0]
    assert np.allclose(col.variants_of_rows([row])[0], expected, atol=2e-3)  # stored as float16
    both = VariantEncoder(enc).embed_batch(np.stack([VariantEncoder(enc).preprocess(image)]))[0]
    assert np.allclose(both[0], enc.embed_images([image])[0], atol=1e-5)
    assert np.allclose(both[1:], expected, atol=1e-5)


def test_variants_survive_merge_remove_and_rename(built, tmp_path, turned_folder):
    col = Collection.open(_copy(built[1], tmp_path))
    before = {int(i): v for i, v in zip(col.ids, col.variants_of_rows(np.arange(len(col))))}
    assert len(col.segments) == 2 and all(s["variants"] for s in col.segments)
    assert col.remove([turned_folder / "a" / "img_3.png"]) == 1
    col.compact(max_segments=1)
    assert len(col.segments) == 1 and col.segments[0]["variants"] and col.segments[0]["rows"] == len(col) == 9
    after = col.variants_of_rows(np.arange(len(col)))
    for i, v in zip(col.ids.tolist(), after):
        assert np.array_equal(v, before[i])
    assert TURNED <= _names(find_pairs(col, DEFAULT_THRESHOLD))
    old = str(turned_folder / "b" / "turned_0.png")
    moved = tmp_path / "moved.png"
    shutil.copy(old, moved)
    image_id = int(col.ids[col.paths.index(old)])
    assert col.rename({old: moved}) == 1
    r = col.row_of_id(image_id)
    assert np.array_equal(col.variants_of_rows([r])[0], before[image_id])
    assert frozenset(("img_0.png", "moved.png")) in _names(find_pairs(col, DEFAULT_THRESHOLD))
    reopened = Collection.open(col.path)
    assert reopened.verify() and any(n.endswith(".var.npy") for n in reopened.verify())


def test_turning_rotations_on_embeds_the_images_indexed_before_and_off_drops_them(built, tmp_path, turned_folder):
    col = Collection.open(_copy(built[0], tmp_path))
    report = col.index(turned_folder, rotations=True)
    assert report.rotated == len(col) == 10 and report.added == 0
    assert all(s["variants"] for s in col.segments)
    assert TURNED <= _names(find_pairs(col, DEFAULT_THRESHOLD))
    reference = Collection.open(built[1])
    order = [reference.row_of_id(i) for i in col.ids]
    assert np.allclose(col.variants_of_rows(np.arange(len(col))), reference.variants_of_rows(order), atol=2e-3)
    assert col.index(turned_folder).rotated == 0  # kept on: nothing to do
    col.index(turned_folder, rotations=False)
    assert col.rotations == () and "rotations" not in Collection.open(col.path).manifest
    assert not list(col.path.glob("*.var.npy"))
    assert not TURNED & _names(find_pairs(col, DEFAULT_THRESHOLD))


def test_a_damaged_variants_file_is_detected(built, tmp_path):
    db = _copy(built[1], tmp_path)
    var = sorted(db.glob("*.var.npy"))[0]
    data = bytearray(var.read_bytes())
    data[-5] ^= 0xFF
    var.write_bytes(bytes(data))
    col = Collection.open(db)
    with pytest.raises(CorruptCollectionError, match="var.npy"):
        col.verify()
    with pytest.raises(CorruptCollectionError, match="var.npy"):
        find_pairs(Collection.open(db), DEFAULT_THRESHOLD, method="exact")
    var.write_bytes(bytes(data[:-8]))  # truncated: caught when the collection is opened
    with pytest.raises(CorruptCollectionError, match="var.npy"):
        Collection.open(db)


def test_the_manifest_names_only_known_rotations(built, tmp_path):
    db = _copy(built[1], tmp_path)
    manifest = store.read_manifest(db)
    store.write_manifest(db, dict(manifest, rotations=["rot45"]))
    with pytest.raises(CorruptCollectionError, match="rotations"):
        Collection.open(db)
    seg = dict(manifest["segments"][0])
    seg["var"] = dict(seg["var"], name="../elsewhere.npy")
    store.write_manifest(db, dict(manifest, segments=[seg] + manifest["segments"][1:]))
    with pytest.raises(CorruptCollectionError, match="not a collection file name"):
        Collection.open(db)


def test_against_another_collection_uses_either_sides_rotations(built, tmp_path, turned_folder):
    plain_turned = Collection.create(tmp_path / "plain_turned")
    plain_turned.add([turned_folder / "b" / "turned_6.png"])  # img_6 turned by 90 degrees
    rot, plain = Collection.open(built[1]), Collection.open(built[0])

    def found(col, other):
        return {(Path(p.path_a).name, Path(p.path_b).name) for p in find_pairs(col, DEFAULT_THRESHOLD, against=other)}

    assert ("turned_6.png", "img_6.png") not in found(plain_turned, plain)
    # only the other side stores rotations: its img_6 turned by 90 degrees meets the copy
    assert ("turned_6.png", "img_6.png") in found(plain_turned, rot)
    assert ("img_6.png", "turned_6.png") in found(rot, plain_turned)
    # both sides store them: a 270-degree turn too (the copy turned back by 90 degrees)
    turned = Collection.create(tmp_path / "turned", rotations=True)
    turned.add([turned_folder / "b" / "turned_0.png"])
    originals = Collection.create(tmp_path / "originals", rotations=True)
    originals.add([turned_folder / "a" / "img_0.png"])
    assert ("turned_0.png", "img_0.png") in found(turned, originals)
    assert ("img_0.png", "turned_0.png") in found(originals, turned)


def test_cli_index_rotations_on_and_off(tmp_path, turned_folder):
    from typer.testing import CliRunner

    from lookalike.cli import app

    runner = CliRunner()
    db = tmp_path / "db"
    res = runner.invoke(app, ["index", str(turned_folder), "--db", str(db), "--rotations", "--no-progress"])
    assert res.exit_code == 0, res.output
    assert Collection.open(db).rotations == ("rot90", "rot180")
    res = runner.invoke(app, ["dupes", "--db", str(db), "--format", "json"])
    assert res.exit_code == 0, res.output
    assert all(name in res.output for name in ("turned_0.png", "turned_6.png"))
    res = runner.invoke(app, ["index", str(turned_folder), "--db", str(db), "--no-progress"])  # kept
    assert res.exit_code == 0 and Collection.open(db).rotations
    res = runner.invoke(app, ["index", str(turned_folder), "--db", str(db), "--no-rotations", "--no-progress"])
    assert res.exit_code == 0 and not Collection.open(db).rotations and not list(db.glob("*.var.npy"))


def test_cli_reports_the_rotations_added_and_info_shows_them(built, tmp_path, turned_folder):
    import json

    from typer.testing import CliRunner

    from lookalike.cli import app

    runner = CliRunner()
    text_db, json_db = _copy(built[0], tmp_path / "text"), _copy(built[0], tmp_path / "json")
    res = runner.invoke(app, ["info", "--db", str(text_db), "--json"])
    assert res.exit_code == 0 and json.loads(res.output)["rotations"] == []
    res = runner.invoke(app, ["index", str(turned_folder), "--db", str(text_db), "--rotations", "--no-progress"])
    assert res.exit_code == 0, res.output
    assert "added rotation embeddings for 10 images" in res.output
    res = runner.invoke(app, ["index", str(turned_folder), "--db", str(json_db), "--rotations", "--json"])
    assert res.exit_code == 0, res.output
    summary = json.loads(res.output)
    assert summary["rotated"] == 10 and summary["added"] == 0
    res = runner.invoke(app, ["index", str(turned_folder), "--db", str(json_db), "--json"])
    assert json.loads(res.output)["rotated"] == 0  # kept on: nothing to add
    res = runner.invoke(app, ["info", "--db", str(json_db), "--json"])
    assert json.loads(res.output)["rotations"] == ["rot90", "rot180"]
    res = runner.invoke(app, ["info", "--db", str(json_db)])
    assert "rotations: rot90, rot180" in res.output
