import json
import os

import numpy as np
import pytest
from conftest import leave_one_out, synthetic_image
from PIL import Image

from lookalike import Collection, CollectionError, CorruptCollectionError


@pytest.fixture
def collection(tmp_path, image_folder):
    col = Collection.create(tmp_path / "db")
    col.index(image_folder)
    return col


def test_index_and_search(collection, image_folder):
    assert len(collection) == 12
    assert collection.errors == []
    assert set(collection.labels) == {"cats", "dogs"}
    emb = collection.embeddings
    assert emb.shape == (12, 1280)
    assert np.allclose(np.linalg.norm(emb, axis=1), 1, atol=1e-3)  # float16 storage
    q = image_folder / "dogs" / "img_04.jpg"
    hits = collection.search(q, k=3)
    assert hits[0].path == str(q) and hits[0].score == pytest.approx(1.0, abs=1e-3)
    assert [h.rank for h in hits] == [1, 2, 3]
    assert hits[0].score >= hits[1].score >= hits[2].score


def test_search_new_image_finds_its_original(collection, image_folder, tmp_path):
    # an edited copy outside the collection: crop + recompress
    im = synthetic_image(8)
    im.crop((8, 6, 152, 114)).save(tmp_path / "query.jpg", quality=70)
    hits = collection.search(tmp_path / "query.jpg", k=3)
    assert hits[0].path.endswith("img_08.png") or hits[0].path.endswith("img_08.jpg")
    assert hits[0].score > 0.9


def test_search_by_vector_and_pil(collection):
    v = np.asarray(collection.embeddings[3])
    assert collection.search(v, k=1)[0].id == collection.ids[3]
    assert collection.search(synthetic_image(5), k=1)[0].path.endswith("img_05.jpg")
    with pytest.raises(ValueError, match="dimensions"):
        collection.search(np.ones(7), k=1)


def test_reopen_keeps_everything(collection, tmp_path):
    col2 = Collection.open(tmp_path / "db")
    assert col2.paths == collection.paths
    assert np.array_equal(np.asarray(col2.embeddings), np.asarray(collection.embeddings))
    assert list(col2.ids) == list(collection.ids)


def test_incremental_reindex(collection, image_folder, tmp_path):
    emb_before = {p: np.asarray(e) for p, e in zip(collection.paths, collection.embeddings)}
    ids_before = dict(zip(collection.paths, collection.ids))
    r = collection.index(image_folder)
    assert (r.added, r.updated, r.removed, r.unchanged) == (0, 0, 0, 12)
    # add one, change one, delete one
    synthetic_image(100).save(image_folder / "cats" / "new.jpg")
    changed = image_folder / "dogs" / "img_02.jpg"
    synthetic_image(200).save(changed)
    os.utime(changed, ns=(1, 10**18))
    deleted = image_folder / "cats" / "img_01.jpg"
    deleted.unlink()
    r = Collection.open(tmp_path / "db").index(image_folder)
    assert (r.added, r.updated, r.removed, r.unchanged) == (1, 1, 1, 10)
    col = Collection.open(tmp_path / "db")
    assert len(col) == 12
    assert str(deleted) not in col.paths
    row = col.paths.index(str(changed))
    assert not np.allclose(col.embeddings[row], emb_before[str(changed)])
    assert col.ids[row] == ids_before[str(changed)], "a changed file keeps its id"
    kept = str(image_folder / "cats" / "img_05.jpg")
    assert np.array_equal(col.embeddings[col.paths.index(kept)], emb_before[kept])
    assert len(set(col.ids.tolist())) == 12


def test_bad_files_are_skipped_with_reasons(tmp_path, image_folder):
    (image_folder / "broken.jpg").write_bytes(b"not a jpeg")
    (image_folder / "empty.png").write_bytes(b"")
    col = Collection.create(tmp_path / "db")
    r = col.index(image_folder)
    assert r.added == 12 and len(r.skipped) == 2
    reasons = dict(col.errors)
    assert "not an image" in reasons[str(image_folder / "broken.jpg")]
    assert "empty" in reasons[str(image_folder / "empty.png")]
    # fixing a file clears its error on the next run
    synthetic_image(50).save(image_folder / "broken.jpg", format="JPEG")
    col.index(image_folder)
    assert str(image_folder / "broken.jpg") not in dict(col.errors)
    assert len(Collection.open(tmp_path / "db")) == 13


def test_all_bad_batch_survives(tmp_path):
    folder = tmp_path / "junk"
    folder.mkdir()
    for i in range(40):
        (folder / f"{i}.jpg").write_bytes(b"junk" * i)
    col = Collection.create(tmp_path / "db")
    r = col.index(folder, batch_size=8)
    assert r.added == 0 and len(r.skipped) == 40 and len(col) == 0


def test_add_and_remove(tmp_path, image_folder):
    col = Collection.create(tmp_path / "db")
    files = sorted(image_folder.rglob("*.jpg"))[:3]
    r = col.add(files)
    assert r.added == 3 and len(col) == 3
    assert col.remove([files[0], tmp_path / "never-there.jpg"]) == 1
    assert len(Collection.open(tmp_path / "db")) == 2


def test_encoder_mismatch_is_a_clear_error(collection, tmp_path):
    with pytest.raises(CollectionError, match="efficientnet-lite0.*not 'efficientnet-lite1'"):
        Collection.open(tmp_path / "db", encoder="efficientnet-lite1")


def test_create_refuses_to_clobber(collection, tmp_path):
    with pytest.raises(CollectionError, match="already exists"):
        Collection.create(tmp_path / "db")
    assert len(Collection.create(tmp_path / "db", overwrite=True)) == 0


def test_open_missing_collection(tmp_path):
    with pytest.raises(CollectionError, match="lookalike index"):
        Collection.open(tmp_path / "nothing")


def _file_of(db, role):
    manifest = json.loads((db / "manifest.json").read_text())
    seg = manifest["segments"][0]
    return {"manifest": "manifest.json", "meta": seg["meta"]["name"], "embeddings": seg["emb"]["name"],
            "errors": (manifest["errors_file"] or {}).get("name")}[role]


def _flip(path, where=None):
    data = bytearray(path.read_bytes())
    data[len(data) // 2 if where is None else where] ^= 0x01
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("role", ["meta", "errors", "manifest"])
def test_flipped_byte_is_detected_at_open_naming_the_file(collection, tmp_path, image_folder, role):
    db = tmp_path / "db"
    (image_folder / "broken.jpg").write_bytes(b"junk")
    collection.index(image_folder)  # an errors file too
    name = _file_of(db, role)
    _flip(db / name)
    with pytest.raises(CorruptCollectionError) as info:
        Collection.open(db)
    assert name in str(info.value) and "--rebuild" in str(info.value)


def test_flipped_byte_in_embeddings_is_detected_at_first_use_and_by_verify(collection, tmp_path, image_folder):
    db = tmp_path / "db"
    name = _file_of(db, "embeddings")
    _flip(db / name, where=-5)
    col = Collection.open(db)  # large files: size checked at open, checksum at first use
    with pytest.raises(CorruptCollectionError, match=name):
        col.search(image_folder / "dogs" / "img_04.jpg", k=3)
    with pytest.raises(CorruptCollectionError, match=name):
        Collection.open(db).verify()
    truncated = db / name
    truncated.write_bytes(truncated.read_bytes()[:-64])
    with pytest.raises(CorruptCollectionError, match="bytes, expected"):
        Collection.open(db)


def test_missing_file_is_detected(collection, tmp_path):
    db = tmp_path / "db"
    (db / _file_of(db, "embeddings")).unlink()
    with pytest.raises(CorruptCollectionError, match="missing"):
        Collection.open(db)


def test_read_only_refuses_writes(collection, tmp_path, image_folder):
    col = Collection.open(tmp_path / "db", read_only=True)
    with pytest.raises(CollectionError, match="read-only"):
        col.index(image_folder)


def test_an_update_writes_a_small_segment_and_old_files_are_cleaned(collection, tmp_path, image_folder):
    db = tmp_path / "db"
    before = {p.name: p.stat().st_mtime_ns for p in db.iterdir()}
    synthetic_image(300).save(image_folder / "x.jpg")
    (image_folder / "cats" / "img_01.jpg").unlink()
    collection.index(image_folder)
    manifest = json.loads((db / "manifest.json").read_text())
    assert [s["rows"] for s in manifest["segments"]] == [12, 1]
    assert manifest["segments"][0]["deleted"] == 1 and manifest["count"] == 12
    first = manifest["segments"][0]
    assert before[first["emb"]["name"]] == (db / first["emb"]["name"]).stat().st_mtime_ns, "old segment rewritten"
    names = sorted(p.name for p in db.iterdir() if not p.name.startswith("."))
    referenced = {"manifest.json", first["meta"]["name"], first["emb"]["name"], first["dels"]["name"],
                  manifest["segments"][1]["meta"]["name"], manifest["segments"][1]["emb"]["name"],
                  "encoder-int8.onnx"}  # the collection's int8 model (the default engine), kept for its queries
    assert set(names) == referenced, names


def test_checkpoints_commit_during_a_long_run(tmp_path, image_folder, monkeypatch):
    from lookalike import collection as colmod

    monkeypatch.setattr(colmod, "CHECKPOINT_MIN_ROWS", 4)
    seen = []
    col = Collection.create(tmp_path / "db")

    def on_batch(batch):
        seen.append(Collection.open(tmp_path / "db").manifest["count"])

    col.index(image_folder, batch_size=4, on_batch=on_batch)
    assert seen[-1] >= 4, f"no checkpoint was committed mid-run: {seen}"
    assert len(Collection.open(tmp_path / "db")) == 12


def test_interrupt_keeps_finished_work(tmp_path, image_folder):
    col = Collection.create(tmp_path / "db")
    calls = []

    def stop(batch):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        col.index(image_folder, batch_size=4, on_batch=stop)
    assert len(Collection.open(tmp_path / "db")) == 8
    r = Collection.open(tmp_path / "db").index(image_folder)
    assert r.added == 4 and r.unchanged == 8


def test_lsh_index_in_collection(collection, tmp_path, image_folder):
    db = tmp_path / "db"
    collection.build_lsh(target_recall=0.9, k=3, min_segment_rows=2)
    summary = collection.lsh_summary()
    assert summary["recall"] is not None and summary["indexed_segments"] == 1
    col = Collection.open(db, read_only=True)
    assert col.lsh is not None and len(col.lsh) == 12
    q = image_folder / "dogs" / "img_04.jpg"
    lsh_hits = col.search(q, k=3, method="lsh")
    exact_hits = col.search(q, k=3, method="exact")
    assert lsh_hits[0].path == exact_hits[0].path == str(q)
    assert col.resolve_method("auto") == "exact"  # small collections stay exact
    tables = col.manifest["segments"][0]["lsh"]["name"]
    # an update keeps the index current: the new image lands in a new segment (scanned exactly
    # while small); the first segment keeps its tables (not re-hashed), deleted rows are skipped
    extra = image_folder / "dogs" / "extra.jpg"
    synthetic_image(77).save(extra)
    (image_folder / "dogs" / "img_00.png").unlink()
    collection.index(image_folder)
    col = Collection.open(db)
    assert col.manifest["segments"][0]["lsh"]["name"] == tables
    assert col.search(extra, k=1, method="lsh")[0].path == str(extra)
    found = {h.path for h in col.search(q, k=12, method="lsh")}
    assert str(image_folder / "dogs" / "img_00.png") not in found and str(extra) in found
    # LSH results agree with exact search on every indexed image
    for p in col.paths:
        assert col.search(p, k=1, method="lsh")[0].path == p


def test_damaged_lsh_file_is_detected(collection, tmp_path):
    collection.build_lsh(k=3, min_segment_rows=2)
    path = tmp_path / "db" / collection.manifest["segments"][0]["lsh"]["name"]
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(CorruptCollectionError, match=path.name):
        Collection.open(tmp_path / "db").lsh  # noqa: B018 (the property raises)


def test_a_new_collection_uses_the_shared_int8_model_and_keeps_it(tmp_path, image_folder, collection):
    from lookalike.encoders import get_encoder

    col = collection  # created with the defaults
    shared = get_encoder("efficientnet-lite0", "onnx-int8").shared_int8_path()
    info = col.manifest["int8_model"]
    model = tmp_path / "db" / "encoder-int8.onnx"
    assert col.manifest["engine"] == "onnx-int8" and info["calibration"] == "shared"
    assert model.read_bytes() == shared.read_bytes(), "a copy of the shared model, not a calibration of its own"
    assert col.encoder.engine.model_path == model  # its queries use the collection's own copy
    # the embeddings are exactly what the shared int8 model gives (same ranges in, same embeddings out)
    again = get_encoder("efficientnet-lite0", "onnx-int8").embed_images([Image.open(p).convert("RGB")
                                                                         for p in col.paths])
    assert np.abs(np.asarray(col.embeddings) - again).max() < 2e-3  # stored as float16
    reopened = Collection.open(tmp_path / "db")
    q = image_folder / "dogs" / "img_04.jpg"
    assert reopened.search(q, k=1)[0].path == str(q)
    assert reopened.encoder.engine.model_path == model
    with pytest.raises(CollectionError, match="int8"):
        Collection.open(tmp_path / "db", engine="onnx").encoder  # noqa: B018 (the property raises)
    data = bytearray(model.read_bytes())
    data[len(data) // 2] ^= 0xFF
    model.write_bytes(bytes(data))
    with pytest.raises(CorruptCollectionError, match="encoder-int8.onnx"):
        Collection.open(tmp_path / "db").encoder  # noqa: B018 (the property raises)


def test_shipped_ranges_this_onnxruntime_cannot_use_leave_a_new_collection_on_float(tmp_path, monkeypatch, caplog):
    """The default never stops a first run: ranges that do not fit this graph / ORT fall back to float, loudly."""
    from lookalike.encoders import calibration

    monkeypatch.setenv("LOOKALIKE_CACHE", str(tmp_path / "cache"))  # no shared model built yet

    def unusable(path, weights_sha256):
        raise ValueError("the int8 activation ranges name 3 tensors this graph lacks")

    monkeypatch.setattr(calibration, "load_ranges", unusable)
    with caplog.at_level("WARNING", logger="lookalike.collection.facade"):
        col = Collection.create(tmp_path / "db")
    assert col.manifest["engine"] == "onnx" and "int8_model" not in col.manifest
    assert "float engine" in caplog.text and "tensors this graph lacks" in caplog.text
    with pytest.raises(ValueError, match="tensors this graph lacks"):  # asked for by name: the error itself
        Collection.create(tmp_path / "db2", engine="onnx-int8")
    assert not (tmp_path / "db2").exists()


def test_a_float_collection_stays_float(tmp_path, image_folder, encoder):
    col = Collection.create(tmp_path / "f", engine="onnx")
    col.index(image_folder / "cats")
    assert col.manifest["engine"] == "onnx" and "int8_model" not in col.manifest
    col = Collection.open(tmp_path / "f")
    col.index(image_folder)  # more images, later: embedded as the first ones were
    assert col.manifest["engine"] == "onnx" and not (tmp_path / "f" / "encoder-int8.onnx").exists()
    want = encoder.embed_images([Image.open(p).convert("RGB") for p in col.paths])
    assert np.abs(np.asarray(col.embeddings) - want).max() < 2e-3
    with pytest.raises(CollectionError, match="int8"):
        Collection.open(tmp_path / "f", engine="onnx-int8").encoder  # noqa: B018 (the property raises)


def test_an_int8_collection_calibrated_on_its_own_images_keeps_its_model(tmp_path, image_folder, collection):
    """Collections made before the shared calibration hold a model calibrated on their images: it stays theirs."""
    import onnx

    from lookalike.collection import store
    from lookalike.storage import file_sha256

    db = tmp_path / "db"
    model = db / "encoder-int8.onnx"
    proto = onnx.load(str(model))
    proto.doc_string = "calibrated on 12 of the collection's images"  # stands for a calibration of its own
    onnx.save(proto, str(model))
    own = model.read_bytes()
    m = store.read_manifest(db)
    m["int8_model"] = {"name": "encoder-int8.onnx", "sha256": file_sha256(model), "calibration_images": 12}
    store.write_manifest(db, m)
    col = Collection.open(db)
    assert col.encoder.engine.model_path == model
    synthetic_image(40).save(image_folder / "new.jpg")
    col.index(image_folder)
    assert col.manifest["int8_model"]["sha256"] == file_sha256(model) and model.read_bytes() == own


def test_folder_left_by_an_interrupted_create_can_be_reused(tmp_path, image_folder):
    db = tmp_path / "db"
    db.mkdir()
    (db / ".lock").touch()
    (db / "meta-000001.parquet").write_bytes(b"partial")  # no manifest: a create that died
    col = Collection.create(db)
    assert len(col.index(image_folder).skipped) == 0 and len(col) == 12
    other = tmp_path / "not-a-collection"
    other.mkdir()
    (other / "notes.txt").write_text("mine")
    with pytest.raises(CollectionError, match="not an empty folder"):
        Collection.create(other)


def test_flip_average_and_query_expansion(tmp_path, image_folder, collection):
    col = Collection.create(tmp_path / "flip", flip_average=True)
    col.index(image_folder)
    assert Collection.open(tmp_path / "flip").manifest["flip_average"] is True
    im = synthetic_image(3)
    mirrored = im.transpose(0)  # FLIP_LEFT_RIGHT
    a, b = col.encoder.embed_images([im, mirrored])
    assert float(a @ b) > 0.9999, "a flip-averaged embedding is mirror-invariant"
    plain = dict(zip(collection.paths, np.asarray(collection.embeddings)))
    assert not np.allclose(np.asarray(col.embeddings)[0], plain[col.paths[0]])
    q = image_folder / "dogs" / "img_04.jpg"
    hits = collection.search(q, k=3, expand=2)
    assert hits[0].path == str(q) and len(hits) == 3
    from lookalike.evaluate import class_retrieval

    emb = np.asarray(collection.embeddings, np.float32)
    r = class_retrieval(emb, collection.labels, k=3, expand=2)
    expected = leave_one_out(emb, collection.labels, k=3, expand=2)
    assert r["expand"] == 2 and (r["p_at_1"], r["p_at_k"], r["map"]) == pytest.approx(expected, abs=1e-6)


def test_dba_is_stored_used_by_search_and_kept_fresh(collection, image_folder, tmp_path):
    from lookalike.evaluate import database_augment
    from lookalike.search import exact_topk

    raw = np.asarray(collection.embeddings).copy()
    collection.build_dba(3)
    info = collection.manifest["dba"]
    assert info["n"] == 3 and (collection.path / info["file"]["name"]).exists()
    aug = database_augment(raw, 3)
    assert np.allclose(collection.search_matrix, aug, atol=1e-6)
    assert np.allclose(np.linalg.norm(aug, axis=1), 1, atol=1e-5)
    q = raw[5]
    hits = collection.search(q, k=4)
    scores, rows = exact_topk(aug, q[None], 4)
    assert [h.id for h in hits] == [int(collection.ids[r]) for r in rows[0]]
    # reopened: the stored file is used (checksummed)
    again = Collection.open(collection.path)
    assert np.allclose(again.search_matrix, aug, atol=1e-6)
    # duplicates stay on the raw embeddings: an image's copy scores its raw cosine
    groups = again.duplicates(0.0)
    edges = [e for g in groups for e in g.pairs]
    assert edges
    for a, b, s in edges:
        assert s == pytest.approx(float(raw[again.row_of_id(a)] @ raw[again.row_of_id(b)]), abs=1e-5)
    # a new image: index keeps the DBA vectors current (the library owns that policy)
    synthetic_image(99).save(image_folder / "cats" / "new.png")
    again.index(image_folder)
    assert not again.dba_stale and len(again.search_matrix) == 13
    assert np.allclose(again.search_matrix, database_augment(np.asarray(again.embeddings), 3), atol=1e-6)
    # damaged file: a clear error, never silently used
    path = again.path / again.manifest["dba"]["file"]["name"]
    data = bytearray(path.read_bytes())
    data[-10] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(CorruptCollectionError, match=path.name):
        Collection.open(again.path).search_matrix  # noqa: B018 (the property raises)
    again.build_dba(0)
    assert again.manifest["dba"] is None
