"""Bring your own encoder: ``--encoder onnx:PATH/model.onnx`` with its preprocessing in ``PATH/model.json``."""

import hashlib
import json
import os
import sys

import numpy as np
import pytest
from conftest import real_photo, synthetic_image

from lookalike import Collection
from lookalike.encoders import get_encoder
from lookalike.encoders.custom import OnnxFileEncoder
from lookalike.encoders.preprocess import Preprocessing
from lookalike.images import decode

# The tiny model: a seeded 1x1 convolution, 3 -> 6 channels, then ReLU.
TINY_CHANNELS = 6
TINY_SIZE = 16


def _tiny_weights():
    rng = np.random.default_rng(0)
    return rng.standard_normal((TINY_CHANNELS, 3, 1, 1)).astype(np.float32), rng.standard_normal(
        TINY_CHANNELS).astype(np.float32)


def tiny_model(path, *, pooled: bool, input_name="pixels"):
    """Write a tiny ONNX model: (B, 3, 16, 16) -> ReLU(1x1 conv) as a feature map, or average-pooled."""
    from onnx import TensorProto, helper, numpy_helper, save

    w, b = _tiny_weights()
    nodes = [helper.make_node("Conv", [input_name, "w", "b"], ["conv"]), helper.make_node("Relu", ["conv"], ["fmap"])]
    if pooled:
        nodes += [helper.make_node("GlobalAveragePool", ["fmap"], ["gap"]),
                  helper.make_node("Flatten", ["gap"], ["embedding"], axis=1)]
        out = helper.make_tensor_value_info("embedding", TensorProto.FLOAT, ["n", TINY_CHANNELS])
    else:
        out = helper.make_tensor_value_info("fmap", TensorProto.FLOAT, ["n", TINY_CHANNELS, TINY_SIZE, TINY_SIZE])
    graph = helper.make_graph(
        nodes, "tiny", [helper.make_tensor_value_info(input_name, TensorProto.FLOAT, ["n", 3, TINY_SIZE, TINY_SIZE])],
        [out], initializer=[numpy_helper.from_array(w, "w"), numpy_helper.from_array(b, "b")])
    save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8), str(path))
    return path


def tiny_reference(x):
    """What the tiny model computes, in numpy, pooled and L2-normalised."""
    w, b = _tiny_weights()
    fmap = np.maximum(np.einsum("oc,nchw->nohw", w[:, :, 0, 0], x) + b[None, :, None, None], 0)
    v = fmap.mean(axis=(2, 3))
    return v / np.linalg.norm(v, axis=1, keepdims=True)


@pytest.mark.parametrize("pooled", [True, False], ids=["pooled", "feature_map"])
def test_tiny_onnx_model_as_encoder(tmp_path, pooled):
    model = tiny_model(tmp_path / "tiny.onnx", pooled=pooled)
    cfg = {"input_size": TINY_SIZE, "crop_fraction": 1.0, "interpolation": "bilinear",
           "mean": [0.5, 0.4, 0.3], "std": [0.2, 0.25, 0.3], "channel_order": "BGR",
           "output": "pooled" if pooled else "feature_map"}
    (tmp_path / "tiny.json").write_text(json.dumps(cfg))
    enc = get_encoder(f"onnx:{model}")
    assert isinstance(enc, OnnxFileEncoder)
    assert enc.name == f"onnx:{model}" and enc.dim == TINY_CHANNELS and enc.image_size == TINY_SIZE
    assert enc.weights_hash == hashlib.sha256(model.read_bytes()).hexdigest()
    ims = [synthetic_image(i) for i in range(5)]
    vecs = enc.embed_images(ims, batch_size=2)
    assert vecs.shape == (5, TINY_CHANNELS) and vecs.dtype == np.float32
    # The reference preprocessing, written out: centre square, resize, BGR, (x/255 - mean)/std.
    x = []
    for im in ims:
        w, h = im.size
        s = min(w, h)
        box = ((w - s) / 2, (h - s) / 2, (w + s) / 2, (h + s) / 2)
        a = np.asarray(im.resize((TINY_SIZE, TINY_SIZE), 2, box=box), np.float32)[..., ::-1] / 255
        x.append(((a - np.array(cfg["mean"])) / np.array(cfg["std"])).transpose(2, 0, 1))
    assert np.abs(vecs - tiny_reference(np.stack(x))).max() < 1e-5
    flipped = get_encoder(f"onnx:{model}", flip_average=True).embed_images(ims[:2])
    assert flipped.shape == (2, TINY_CHANNELS)


def test_relative_path_is_made_absolute_and_the_collection_remembers_the_model(tmp_path, monkeypatch, image_folder):
    tiny_model(tmp_path / "tiny.onnx", pooled=True)
    (tmp_path / "tiny.json").write_text(json.dumps({"input_size": TINY_SIZE}))
    monkeypatch.chdir(tmp_path)
    col = Collection.create(tmp_path / "db", encoder="onnx:tiny.onnx")
    col.index(image_folder)
    sha = hashlib.sha256((tmp_path / "tiny.onnx").read_bytes()).hexdigest()
    assert col.manifest["encoder"] == f"onnx:{tmp_path / 'tiny.onnx'}"
    assert col.manifest["weights_sha256"] == sha and col.manifest["dim"] == TINY_CHANNELS
    monkeypatch.chdir(image_folder)  # reopened from elsewhere: the absolute path still finds the model
    again = Collection.open(tmp_path / "db")
    res = again.search(image_folder / "cats" / "img_01.jpg", k=1)
    # The query is embedded with the same model: it finds itself, with cosine 1.
    assert res[0].path.endswith("img_01.jpg") and res[0].score > 0.999
    # Another model at the same path: the collection refuses to mix embeddings.
    tiny_model(tmp_path / "tiny.onnx", pooled=True, input_name="other")
    with pytest.raises(Exception, match="differ"):
        Collection.open(tmp_path / "db").encoder  # noqa: B018 (the property raises)


def test_int8_engine_works_on_your_own_model(tmp_path):
    tiny_model(tmp_path / "tiny.onnx", pooled=True)
    (tmp_path / "tiny.json").write_text(json.dumps({"input_size": TINY_SIZE}))
    ims = [synthetic_image(i) for i in range(8)]
    enc = get_encoder(f"onnx:{tmp_path / 'tiny.onnx'}", "onnx-int8")
    enc.calibrate(ims, tmp_path / "int8.onnx")
    ref = get_encoder(f"onnx:{tmp_path / 'tiny.onnx'}").embed_images(ims)
    assert np.median((enc.embed_images(ims) * ref).sum(axis=1)) > 0.99


def test_your_own_model_is_float_by_default_and_int8_calibrates_on_the_collection(tmp_path, image_folder):
    """No shipped int8 ranges for a model of your own: float by default; --engine onnx-int8 calibrates on 64 images."""
    tiny_model(tmp_path / "tiny.onnx", pooled=True)
    (tmp_path / "tiny.json").write_text(json.dumps({"input_size": TINY_SIZE}))
    name = f"onnx:{tmp_path / 'tiny.onnx'}"
    assert not get_encoder(name).has_shared_int8
    col = Collection.create(tmp_path / "db", encoder=name)
    assert col.manifest["engine"] == "onnx" and "int8_model" not in col.manifest
    col8 = Collection.create(tmp_path / "db8", encoder=name, engine="onnx-int8")
    assert "int8_model" not in col8.manifest  # calibrated when the first images come
    col8.index(image_folder)
    assert col8.manifest["int8_model"]["calibration_images"] == 12 and (tmp_path / "db8" / "encoder-int8.onnx").exists()
    assert Collection.open(tmp_path / "db8").encoder.engine.model_path == tmp_path / "db8" / "encoder-int8.onnx"


def test_bad_configs_say_what_is_wrong(tmp_path):
    model = tiny_model(tmp_path / "tiny.onnx", pooled=True)
    with pytest.raises(FileNotFoundError, match="tiny.json"):
        get_encoder(f"onnx:{model}")
    with pytest.raises(FileNotFoundError, match="No ONNX model"):
        get_encoder(f"onnx:{tmp_path / 'missing.onnx'}")
    cfg = tmp_path / "tiny.json"
    for bad, message in [
        ({}, "input_size"),
        ({"input_size": 16, "size": 3}, "unknown keys"),
        ({"input_size": 16, "mean": [0.5] * 3}, "together"),
        ({"input_size": 16, "mean": [0.5] * 3, "std": [1] * 3, "scale": 1}, "not both"),
        ({"input_size": 16, "output": "tokens"}, "output must be"),
        ({"input_size": 16, "crop_fraction": 2}, "crop_fraction"),
        ({"input_size": 16, "channel_order": "RGBA"}, "channel_order"),
    ]:
        cfg.write_text(json.dumps(bad))
        with pytest.raises(ValueError, match=message):
            get_encoder(f"onnx:{model}")
    cfg.write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        get_encoder(f"onnx:{model}")
    cfg.write_text(json.dumps({"input_size": 16, "output": "feature_map"}))
    with pytest.raises(ValueError, match="needs 4 axes"):
        get_encoder(f"onnx:{model}").dim  # noqa: B018
    cfg.write_text(json.dumps({"input_size": 16}))
    with pytest.raises(ValueError, match="expected one of"):
        get_encoder(f"onnx:{model}", "torch")


def test_builtin_lite0_graph_as_your_own_model_gives_the_builtin_embeddings(tmp_path, encoder):
    """The built-in graph saved to a file, with its preprocessing in JSON, is the built-in encoder (centre crop)."""
    import onnx

    encoder = get_encoder("efficientnet-lite0", views=("crop",))  # one view, as a model of your own has
    onnx.save(encoder.build_graph(), str(tmp_path / "lite0.onnx"))
    (tmp_path / "lite0.json").write_text(json.dumps({
        "input_size": 224, "crop_fraction": 224 / 256, "interpolation": "bicubic",
        "scale": 1 / 128, "offset": -127 / 128, "channel_order": "RGB", "output": "pooled"}))
    mine = get_encoder(f"onnx:{tmp_path / 'lite0.onnx'}")
    assert mine.dim == 1280 and mine.draft_size == encoder.draft_size
    ims = [synthetic_image(i, size=(300, 200)) for i in range(6)]
    ims += [decode(p, draft_size=encoder.draft_size).image for p in real_photo("accordion", n=2)]
    for im in ims:  # identical inputs, bit for bit
        assert np.array_equal(mine.preprocess(im), encoder.preprocess(im))
    assert np.abs(mine.embed_images(ims) - encoder.embed_images(ims)).max() < 1e-6


def test_preprocessing_mean_std_equals_scale_offset():
    scale, offset = Preprocessing.from_mean_std([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])
    im = synthetic_image(3)
    a = Preprocessing(32, scale=scale, offset=offset)(im)
    raw = Preprocessing(32, scale=(1 / 255,) * 3, offset=(0,) * 3)(im)
    ref = (raw - np.array([0.485, 0.456, 0.406])[:, None, None]) / np.array([0.229, 0.224, 0.225])[:, None, None]
    assert np.abs(a - ref).max() < 1e-5
    stretched = Preprocessing(32, crop_fraction=None)(synthetic_image(3, size=(300, 100)))
    assert stretched.shape == (3, 32, 32)


@pytest.mark.spark
def test_spark_index_accepts_onnx_path(tmp_path, monkeypatch):
    pytest.importorskip("pyspark")
    import pyarrow.parquet as pq

    from lookalike.spark.embed import spark_index, spark_session

    tiny_model(tmp_path / "tiny.onnx", pooled=True)
    (tmp_path / "tiny.json").write_text(json.dumps({"input_size": TINY_SIZE}))
    root = tmp_path / "photos"
    root.mkdir()
    for i in range(4):
        synthetic_image(i).save(root / f"{i}.png")
    monkeypatch.chdir(tmp_path)  # a relative onnx:PATH, resolved on the driver
    monkeypatch.setenv("PYSPARK_PYTHON", sys.executable)
    spark = spark_session("local[1]", "lookalike-custom-encoder", **{"spark.driver.memory": "1g"})
    try:
        counts = spark_index(spark, str(root), str(tmp_path / "out"), encoder="onnx:tiny.onnx")
    finally:
        spark.stop()
    assert counts == {"files": 4, "embedded": 4, "errors": 0}
    meta = json.loads(next((tmp_path / "out" / "_lookalike").glob("part-*")).read_text().splitlines()[0])
    assert meta["encoder"] == f"onnx:{tmp_path / 'tiny.onnx'}" and meta["dim"] == TINY_CHANNELS
    assert meta["weights_sha256"] == hashlib.sha256((tmp_path / "tiny.onnx").read_bytes()).hexdigest()
    table = pq.read_table(tmp_path / "out").to_pandas()
    local = get_encoder(f"onnx:{tmp_path / 'tiny.onnx'}")
    for path, emb in zip(table["path"], table["embedding"]):
        ref = local.embed_images([decode(path.removeprefix("file:")).image])[0]
        assert np.abs(np.asarray(emb, np.float32) - ref).max() < 1e-5
    assert os.path.isabs(meta["encoder"].removeprefix("onnx:"))


def test_spark_worker_with_another_model_refuses_to_embed(tmp_path):
    """embed_partition (what each Spark task runs) checks its model against the driver's hash."""
    pd = pytest.importorskip("pandas")
    from lookalike.spark.embed import embed_partition

    model = tiny_model(tmp_path / "tiny.onnx", pooled=True)
    (tmp_path / "tiny.json").write_text(json.dumps({"input_size": TINY_SIZE}))
    import io

    buf = io.BytesIO()
    synthetic_image(0).save(buf, "PNG")
    batch = pd.DataFrame({"path": ["file:/x.png"], "content": [buf.getvalue()], "length": [len(buf.getvalue())],
                          "modificationTime": [pd.Timestamp(0)]})
    sha = hashlib.sha256(model.read_bytes()).hexdigest()
    rows = next(embed_partition(iter([batch]), encoder_name=f"onnx:{model}", weights_sha256=sha))
    assert rows["error"].isna().all() and len(rows["embedding"][0]) == TINY_CHANNELS
    with pytest.raises(RuntimeError, match="differs from the driver"):
        next(embed_partition(iter([batch]), encoder_name=f"onnx:{model}", weights_sha256="0" * 64))
