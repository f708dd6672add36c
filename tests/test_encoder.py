import numpy as np
import pytest
from conftest import real_photo, synthetic_image
from PIL import Image

from lookalike.encoders import get_encoder
from lookalike.encoders.preprocess import preprocess
from lookalike.images import decode

# ImageNet-1k class indices (checked against the standard synset list).
IMAGENET = {"accordion": 401, "soccer_ball": 805, "strawberry": 949, "pizza": 963}


def test_preprocess_shape_range_and_centre_crop():
    im = synthetic_image(0, size=(300, 200))
    x = preprocess(im, 224)
    assert x.shape == (3, 224, 224) and x.dtype == np.float32
    flipped = preprocess(im, 224, flip=True)
    assert np.allclose(flipped, x[:, :, ::-1])
    # Pixels scale as (p - 127) / 128: white -> 1, black -> -127/128. The centre crop (side 200 * 224 / 256 = 175,
    # from x = 62.5) leaves out black bands 40 px wide at the left and right; the full view keeps them.
    a = np.full((200, 300, 3), 255, np.uint8)
    a[:, :40] = a[:, -40:] = 0
    banded = Image.fromarray(a)
    assert (preprocess(banded, 224) == 1.0).all()
    full = preprocess(banded, 224, view="full")
    assert (full[:, :, 0] == -127 / 128).all() and (full[:, :, 112] == 1.0).all()


@pytest.fixture(scope="module")
def classifier(encoder):
    """The torch-free graph with the ImageNet head (logits) attached, in ONNX Runtime."""
    import onnxruntime as ort

    model = encoder.build_graph(logits=True)
    return ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])


@pytest.mark.parametrize("cls", sorted(IMAGENET))
def test_weights_are_pretrained_imagenet_top5(cls, encoder, classifier):
    """A real photo's ImageNet top-5 contains its class: random weights would not manage this.

    Runs the torch-free graph (the same trunk the embeddings come from, + the checkpoint's
    classifier), so it checks the checkpoint reader, the batch-norm folding and the padding.
    """
    paths = real_photo(cls, n=5)
    batch = np.stack([preprocess(decode(p, draft_size=encoder.draft_size).image, encoder.image_size) for p in paths])
    features, logits = classifier.run(["features", "logits"], {"images": batch})
    assert np.allclose(features, encoder.features(batch), atol=1e-5), "the head rides on the cached graph's trunk"
    top5 = np.argsort(-logits, axis=1)[:, :5].tolist()
    hits = sum(IMAGENET[cls] in t for t in top5)
    assert hits >= 4, f"{cls}: class {IMAGENET[cls]} in top-5 for only {hits}/5 photos: {top5}"


# 8 classes x 4 photos: the torch-free graph must match torch on real photos, not only on synthetic ones.
EQUIVALENCE_CLASSES = ("accordion", "airplanes", "Faces", "Leopards", "Motorbikes", "pizza", "soccer_ball",
                       "strawberry")


def test_torch_free_graph_equals_torch_model_on_32_real_photos(encoder):
    """Dev check (needs lookalike[torch]): built graph == torch reference, cosine >= 0.9999 on 32 photos."""
    pytest.importorskip("torch")
    paths = [p for cls in EQUIVALENCE_CLASSES for p in real_photo(cls, n=4)]
    assert len(paths) == 32
    batch = np.stack([encoder.preprocess(decode(p, draft_size=encoder.draft_size).image) for p in paths])
    ours = encoder.embed_batch(batch)
    ref = get_encoder("efficientnet-lite0", "torch").embed_batch(batch)
    cos = (ours * ref).sum(axis=1)
    assert cos.min() >= 0.9999, f"cosine to torch: min {cos.min():.6f}"
    # The logits too: the classifier reads the same pooled features.
    assert np.abs(ours - ref).max() < 1e-4


def test_graph_is_built_without_torch(tmp_path, monkeypatch):
    """First run without torch: the graph is built from the checkpoint (fast) and cached by the weights' hash."""
    import sys
    import time

    monkeypatch.setenv("LOOKALIKE_CACHE", str(tmp_path))
    monkeypatch.setitem(sys.modules, "torch", None)
    enc = get_encoder("efficientnet-lite0")
    t0 = time.perf_counter()
    path = enc.fp32_onnx_path()
    elapsed = time.perf_counter() - t0
    assert path.parent == tmp_path and enc.weights_hash[:16] in path.name
    assert elapsed < 5, f"building the graph took {elapsed:.1f} s (target <= 5 s)"
    vecs = enc.embed_images([synthetic_image(i) for i in range(3)])
    assert vecs.shape == (3, 1280) and np.allclose(np.linalg.norm(vecs, axis=1), 1, atol=1e-5)
    path.write_bytes(b"damaged")  # a damaged cache file is rebuilt
    again = get_encoder("efficientnet-lite0").embed_images([synthetic_image(0)])
    assert np.abs(again - vecs[:1]).max() < 1e-6


@pytest.mark.slow
def test_int8_engine_quantises_the_torch_free_graph(tmp_path, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "torch", None)
    monkeypatch.setitem(sys.modules, "sympy", None)  # not in the core install either
    enc = get_encoder("efficientnet-lite0")
    paths = [p for cls in EQUIVALENCE_CLASSES for p in real_photo(cls, n=2)]
    ims = [decode(p, draft_size=enc.draft_size).image for p in paths]
    int8 = get_encoder("efficientnet-lite0", "onnx-int8")
    int8.calibrate(ims, tmp_path / "int8.onnx")
    cos = (enc.embed_images(ims) * int8.embed_images(ims)).sum(axis=1)
    # Measured: median 0.994 on Caltech photos, as with the torch export (synthetic images: ~0.92).
    assert np.median(cos) > 0.97, f"int8 vs float cosine: median {np.median(cos):.3f}"


@pytest.mark.slow
def test_shared_int8_model_is_built_from_the_shipped_ranges_the_same_every_time(tmp_path, monkeypatch, encoder):
    """The default int8 model: float graph + committed activation ranges, no user image; two builds agree."""
    import sys

    from lookalike.encoders.calibration import has_ranges, ranges_path

    monkeypatch.setitem(sys.modules, "torch", None)
    monkeypatch.setitem(sys.modules, "sympy", None)  # not in the core install either
    assert has_ranges("efficientnet-lite0") and not has_ranges("efficientnet-lite2")
    paths = [p for cls in EQUIVALENCE_CLASSES for p in real_photo(cls, n=2)]
    ims = [decode(p, draft_size=encoder.draft_size).image for p in paths]
    builds, files = [], []
    for i in range(2):
        monkeypatch.setenv("LOOKALIKE_CACHE", str(tmp_path / f"cache{i}"))
        int8 = get_encoder("efficientnet-lite0", "onnx-int8")
        builds.append(int8.embed_images(ims))
        path = int8.engine.model_path
        assert path.parent == tmp_path / f"cache{i}" and "-int8-" in path.name
        files.append(path.read_bytes())
    assert files[0] == files[1] and np.array_equal(builds[0], builds[1])
    cos = (encoder.embed_images(ims) * builds[0]).sum(axis=1)
    # Measured: median 0.996 on 300 Caltech photos (both views), as with a per-collection calibration.
    assert np.median(cos) >= 0.98, f"int8 vs float cosine: median {np.median(cos):.3f}"
    assert "caltech101_background_distractors" in ranges_path("efficientnet-lite0").read_text()


def test_int8_ranges_of_another_graph_are_refused(tmp_path, encoder):
    import json

    from lookalike.encoders.calibration import load_ranges, ranges_path
    from lookalike.encoders.engines import quantize_int8

    ranges = load_ranges(ranges_path(encoder.name), encoder.weights_hash)
    with pytest.raises(ValueError, match="another graph or onnxruntime version"):
        quantize_int8(encoder.fp32_onnx_path(), None, tmp_path / "x.onnx", ranges={**ranges, "not_here": (0.0, 1.0)})
    other = json.loads(ranges_path(encoder.name).read_text()) | {"weights_sha256": "0" * 64}
    (tmp_path / "r.json").write_text(json.dumps(other))
    with pytest.raises(ValueError, match="other weights"):
        load_ranges(tmp_path / "r.json", encoder.weights_hash)
    assert not (tmp_path / "x.onnx").exists()


@pytest.mark.parametrize("cls", sorted(IMAGENET))
def test_shared_int8_model_keeps_imagenet_top5(cls, encoder):
    """The int8 trunk's pooled features still classify: its features + the checkpoint's classifier."""
    from lookalike.encoders.checkpoint import read_checkpoint

    head = read_checkpoint(encoder.weights_path)
    w, b = np.asarray(head["_fc.weight"], np.float32), np.asarray(head["_fc.bias"], np.float32)
    int8 = get_encoder("efficientnet-lite0", "onnx-int8", views=("crop",))
    batch = np.stack([int8.preprocess(decode(p, draft_size=int8.draft_size).image) for p in real_photo(cls, n=5)])
    top5 = np.argsort(-(int8.features(batch) @ w.T + b), axis=1)[:, :5].tolist()
    hits = sum(IMAGENET[cls] in t for t in top5)
    assert hits >= 4, f"{cls}: class {IMAGENET[cls]} in the int8 top-5 for only {hits}/5 photos: {top5}"


def test_onnx_matches_torch_and_vectors_are_unit(encoder):
    pytest.importorskip("torch")
    ims = [synthetic_image(i) for i in range(5)]
    onnx_vecs = encoder.embed_images(ims)
    torch_vecs = get_encoder("efficientnet-lite0", "torch").embed_images(ims)
    assert onnx_vecs.shape == (5, 1280) and onnx_vecs.dtype == np.float32
    assert np.allclose(np.linalg.norm(onnx_vecs, axis=1), 1, atol=1e-5)
    assert (onnx_vecs >= 0).all(), "pooled ReLU6 features are non-negative"
    assert np.abs(onnx_vecs - torch_vecs).max() < 1e-4


def test_batch_size_does_not_change_embeddings(encoder):
    ims = [synthetic_image(i) for i in range(7)]
    a = encoder.embed_images(ims, batch_size=7)
    b = encoder.embed_images(ims, batch_size=2)
    assert np.abs(a - b).max() < 1e-5


def test_unknown_encoder_and_engine_say_what_is_valid():
    with pytest.raises(ValueError, match="expected one of"):
        get_encoder("resnet-9000")
    with pytest.raises(ValueError, match="onnx"):
        get_encoder("efficientnet-lite0", "tensorflow")



def test_views_default_to_crop_plus_full_frame(encoder):
    from lookalike.encoders import DEFAULT_VIEWS

    im = synthetic_image(4, (200, 120))
    assert encoder.views == DEFAULT_VIEWS == ("crop", "full")
    x = encoder.preprocess(im)
    assert x.shape == (2, 3, 224, 224)
    assert np.array_equal(x[0], preprocess(im, 224)) and np.array_equal(x[1], preprocess(im, 224, view="full"))
    crop = get_encoder("efficientnet-lite0", views=("crop",))
    full = get_encoder("efficientnet-lite0", views=["full"])
    assert crop.preprocess(im).shape == (3, 224, 224)
    ims = [synthetic_image(i, (200, 120)) for i in range(3)]
    both = crop.embed_images(ims) + full.embed_images(ims)
    expected = both / np.linalg.norm(both, axis=1, keepdims=True)
    assert np.abs(encoder.embed_images(ims) - expected).max() < 1e-5


def test_full_view_keeps_what_the_centre_crop_drops():
    im = synthetic_image(6, (300, 100))
    full = preprocess(im, 224, view="full")
    crop = preprocess(im, 224)
    assert full.shape == crop.shape == (3, 224, 224)
    assert not np.allclose(full, crop)
    with pytest.raises(ValueError, match="Unknown view 'middle'"):
        preprocess(im, 224, view="middle")


def test_bad_views_and_profiles_say_what_is_valid(encoder):
    from lookalike.encoders import PROFILES, get_profile

    with pytest.raises(ValueError, match="views must be distinct names"):
        get_encoder("efficientnet-lite0", views=("crop", "crop"))
    with pytest.raises(ValueError, match="views must be distinct names"):
        get_encoder("efficientnet-lite0", views=())
    with pytest.raises(TypeError, match="sequence of view names"):
        get_encoder("efficientnet-lite0", views="crop")
    with pytest.raises(ValueError, match="expected a batch"):
        encoder.embed_batch(np.zeros((2, 3, 224, 224), np.float32))  # one view's batch for a two-view encoder
    with pytest.raises(ValueError, match=r"Unknown profile 'fastest'; expected one of \['balanced', 'best', 'fast'\]"):
        get_profile("fastest")
    assert PROFILES["fast"].views == ("crop",) and get_profile("balanced").views == ("crop", "full")


def test_index_profiles_are_recorded_and_never_mixed(tmp_path, image_folder):
    from typer.testing import CliRunner

    from lookalike.cli import app
    from lookalike.collection import Collection, store

    runner = CliRunner()
    fast, default = str(tmp_path / "fast"), str(tmp_path / "default")
    res = runner.invoke(app, ["index", str(image_folder), "--db", fast, "--profile", "fast", "--no-progress"])
    assert res.exit_code == 0, res.output
    assert store.read_manifest(tmp_path / "fast")["views"] == ["crop"]
    assert runner.invoke(app, ["index", str(image_folder), "--db", default, "--no-progress"]).exit_code == 0
    col = Collection.open(default)
    assert col.manifest["views"] == ["crop", "full"] and col.encoder.views == ("crop", "full")
    # every profile runs on the shared int8 model unless --engine onnx
    assert col.manifest["engine"] == store.read_manifest(tmp_path / "fast")["engine"] == "onnx-int8"
    # queries are embedded with the collection's own pipeline
    q = image_folder / "cats" / "img_01.jpg"
    assert col.search(str(q), k=1)[0].score > 0.999
    res = runner.invoke(app, ["index", str(image_folder), "--db", fast, "--profile", "balanced"])
    assert res.exit_code != 0 and "not 'balanced'" in res.output and "--rebuild" in res.output
    res = runner.invoke(app, ["index", str(image_folder), "--db", default, "--profile", "fast", "--encoder",
                              "efficientnet-lite2"])
    assert res.exit_code != 0 and "--profile fast sets the encoder" in res.output
    res = runner.invoke(app, ["index", str(image_folder), "--db", default, "--profile", "quick"])
    assert res.exit_code != 0 and "Unknown profile 'quick'" in res.output
    # a collection made before views existed: kept as it is, with a note
    m = store.read_manifest(tmp_path / "fast")
    del m["views"]
    store.write_manifest(tmp_path / "fast", m)
    res = runner.invoke(app, ["index", str(image_folder), "--db", fast, "--no-progress"])
    assert res.exit_code == 0 and "older pipeline" in res.output, res.output
    old = Collection.open(fast)
    assert old.encoder.views == ("crop",) and old.search(str(q), k=1)[0].score > 0.999
    # a float collection (made with --engine onnx, or before int8 was the default) stays float, with a note
    flt = str(tmp_path / "float")
    res = runner.invoke(app, ["index", str(image_folder / "cats"), "--db", flt, "--engine", "onnx", "--no-progress"])
    assert res.exit_code == 0 and "older pipeline" not in res.output, res.output
    res = runner.invoke(app, ["index", str(image_folder), "--db", flt, "--no-progress"])
    assert res.exit_code == 0 and "older pipeline" in res.output and "engine onnx" in res.output, res.output
    assert "onnx-int8 engine" in res.output
    assert store.read_manifest(tmp_path / "float")["engine"] == "onnx" and len(Collection.open(flt)) == 12
    res = runner.invoke(app, ["index", str(image_folder), "--db", default, "--no-progress"])
    assert res.exit_code == 0 and "note" not in res.output, res.output  # today's default: nothing to say


def test_spark_output_of_another_pipeline_is_refused(tmp_path):
    from lookalike.collection import Collection, CollectionError
    from lookalike.datasets import write_spark_output

    col = Collection.create(tmp_path / "db")  # default: crop + full
    m = col.manifest
    info = {"encoder": m["encoder"], "weights_sha256": m["weights_sha256"], "dim": m["dim"], "flip_average": False}
    X = np.random.default_rng(0).normal(size=(4, m["dim"])).astype(np.float32)
    old = write_spark_output(tmp_path / "crop", 4, vectors=X, info=dict(info, views=["crop"]))
    with pytest.raises(CollectionError, match="views crop, but .* uses crop\\+full"):
        col.import_parquet(old)
    same = write_spark_output(tmp_path / "same", 4, vectors=X, info=dict(info, views=["crop", "full"]))
    assert col.import_parquet(same).added == 4
