"""Bring your own encoder: any ONNX image model, with its preprocessing in a JSON file beside it.

``--encoder onnx:PATH/model.onnx`` reads ``PATH/model.json``::

    {
      "input_size": 224,              # S: the model takes (B, 3, S, S) float32, NCHW
      "crop_fraction": 0.875,         # centre crop min(w, h) * f, resize to S; null = stretch whole image
      "interpolation": "bicubic",     # or bilinear, lanczos, nearest
      "mean": [0.485, 0.456, 0.406],  # (x / 255 - mean) / std, on [0, 1] pixels ...
      "std": [0.229, 0.224, 0.225],
      "scale": 0.0078125,             # ... or x * scale + offset on 0..255 pixels (number or 3 numbers)
      "offset": -0.9921875,
      "channel_order": "RGB",         # or BGR
      "output": "pooled",             # (B, D) vector; or "feature_map": (B, D, H, W), average-pooled here
      "output_name": null             # which output to use (default: the first)
    }

Only ``input_size`` is required; give either mean/std or scale/offset (default: the
EfficientNet-Lite scaling ``(x - 127) / 128``). The encoder's identity (:attr:`weights_hash`,
stored by a collection as ``weights_sha256``) is the SHA-256 of the ``.onnx`` file, so
embeddings of two different models are never mixed.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np

from . import CUSTOM_PREFIX, Encoder
from .preprocess import Preprocessing

OUTPUTS = ("pooled", "feature_map")
_KEYS = {"input_size", "crop_fraction", "interpolation", "mean", "std", "scale", "offset", "channel_order",
         "output", "output_name"}


@dataclass(frozen=True)
class OnnxModelSpec:
    """An ONNX model file and how to feed it (read from the JSON beside it by :meth:`load`)."""

    model_path: Path
    preprocessing: Preprocessing
    output: str = "pooled"
    output_name: str | None = None

    @property
    def name(self) -> str:
        """``onnx:/absolute/path/model.onnx``: what a collection records as its encoder."""
        return CUSTOM_PREFIX + str(self.model_path)

    @property
    def image_size(self) -> int:
        """The model's input side S."""
        return self.preprocessing.input_size

    @staticmethod
    def config_path(model_path: str | Path) -> Path:
        """The preprocessing JSON of a model: same folder, same stem, ``.json``."""
        return Path(model_path).with_suffix(".json")

    @classmethod
    def load(cls, model_path: str | Path) -> OnnxModelSpec:
        """Read ``model_path``'s JSON; ``FileNotFoundError`` / ``ValueError`` say what is missing or wrong."""
        model_path = Path(model_path).expanduser().resolve()
        if not model_path.is_file():
            raise FileNotFoundError(f"No ONNX model at {model_path} (from --encoder {CUSTOM_PREFIX}PATH).")
        cfg_path = cls.config_path(model_path)
        if not cfg_path.is_file():
            raise FileNotFoundError(
                f"{model_path.name} needs its preprocessing in {cfg_path} (JSON), e.g. "
                '{"input_size": 224, "crop_fraction": 0.875, "mean": [0.485, 0.456, 0.406], '
                '"std": [0.229, 0.224, 0.225], "output": "pooled"}'
            )
        try:
            cfg = json.loads(cfg_path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise ValueError(f"{cfg_path} is not valid JSON: {err}") from None
        return cls.from_dict(model_path, cfg, source=str(cfg_path))

    @classmethod
    def from_dict(cls, model_path: Path, cfg: dict, *, source: str = "the config") -> OnnxModelSpec:
        """Validate a config dict (the JSON's content)."""
        if not isinstance(cfg, dict):
            raise ValueError(f"{source} must hold a JSON object, not {type(cfg).__name__}")
        unknown = sorted(set(cfg) - _KEYS)
        if unknown:
            raise ValueError(f"{source}: unknown keys {unknown}; expected some of {sorted(_KEYS)}")
        if "input_size" not in cfg:
            raise ValueError(f"{source} must give input_size (the model's input side, e.g. 224)")
        has_mean_std, has_scale = ("mean" in cfg or "std" in cfg), ("scale" in cfg or "offset" in cfg)
        if has_mean_std and has_scale:
            raise ValueError(f"{source}: give mean/std or scale/offset, not both")
        kw = {}
        if has_mean_std:
            if "mean" not in cfg or "std" not in cfg:
                raise ValueError(f"{source}: mean and std go together")
            kw["scale"], kw["offset"] = Preprocessing.from_mean_std(_three(cfg["mean"]), _three(cfg["std"]))
        elif has_scale:
            kw["scale"], kw["offset"] = _three(cfg.get("scale", 1.0)), _three(cfg.get("offset", 0.0))
        for key in ("crop_fraction", "interpolation", "channel_order"):
            if key in cfg:
                kw[key] = cfg[key]
        output = cfg.get("output", "pooled")
        if output not in OUTPUTS:
            raise ValueError(f"{source}: output must be one of {OUTPUTS}, got {output!r}")
        return cls(Path(model_path), Preprocessing(cfg["input_size"], **kw), output, cfg.get("output_name"))


def _three(v) -> tuple[float, float, float]:
    if isinstance(v, (int, float)):
        return (float(v),) * 3
    return tuple(float(x) for x in v)


class OnnxFileEncoder(Encoder):
    """Your own ONNX model as an encoder (``--encoder onnx:PATH/model.onnx``).

    Parameters
    ----------
    model_path : str or Path
        The ``.onnx`` file; its preprocessing is read from the ``.json`` beside it.
    engine : {"onnx", "onnx-int8"}, default "onnx"
    int8_model, flip_average
        As for :class:`.Encoder`.

    Examples
    --------
    >>> enc = OnnxFileEncoder("models/dinov2-small.onnx")  # doctest: +SKIP
    >>> enc.embed_images([image]).shape  # doctest: +SKIP
    (1, 384)
    """

    engines = ("onnx", "onnx-int8")

    def __init__(self, model_path, engine: str = "onnx", *, int8_model=None, flip_average: bool = False):
        if engine not in self.engines:
            raise ValueError(f"Unknown engine {engine!r} for an ONNX model of your own; expected one of {self.engines}")
        super().__init__(OnnxModelSpec.load(model_path), engine, int8_model=int8_model, flip_average=flip_average,
                         views=("crop",))  # one view: the model's own preprocessing

    draft_size = property(lambda self: self.spec.preprocessing.draft_size)

    @cached_property
    def weights_path(self) -> Path:
        """The ``.onnx`` file itself."""
        return self.spec.model_path

    @cached_property
    def dim(self) -> int:
        """Embedding dimension: the output's last (pooled) or channel (feature map) axis."""
        from .engines import OnnxEngine

        # The float engine's own session when that is the engine (a large model loads once).
        session = self.engine.session if self.engine_name == "onnx" else OnnxEngine(self.spec.model_path).session
        out = self._output(session)
        axis = 1 if self.spec.output == "feature_map" else -1
        want = 4 if self.spec.output == "feature_map" else 2
        if len(out.shape) != want:
            cfg = OnnxModelSpec.config_path(self.spec.model_path)
            raise ValueError(f"{self.spec.model_path.name}: output {out.name!r} has shape {out.shape}, but output "
                             f"{self.spec.output!r} needs {want} axes; fix 'output' in {cfg}")
        if isinstance(out.shape[axis], int):
            return out.shape[axis]
        s = self.image_size  # a symbolic size: run one blank image
        return int(self.features(np.zeros((1, 3, s, s), np.float32)).shape[1])

    def _output(self, session):
        outs = session.get_outputs()
        if self.spec.output_name is None:
            return outs[0]
        for o in outs:
            if o.name == self.spec.output_name:
                return o
        raise ValueError(f"{self.spec.model_path.name} has no output {self.spec.output_name!r}; "
                         f"its outputs are {[o.name for o in outs]}")

    def build_graph(self, *, logits: bool = False):  # noqa: D102
        raise TypeError("an ONNX model of your own is used as it is; there is no graph to build")

    def load_model(self):  # noqa: D102
        raise TypeError("an ONNX model of your own has no torch model; use the onnx engine")

    def fp32_onnx_path(self) -> Path:
        """The model file itself (the int8 engine quantises it)."""
        return self.spec.model_path

    def preprocess(self, image, *, flip: bool = False) -> np.ndarray:
        """RGB PIL image -> ``(3, S, S)`` float32 input, as the JSON says."""
        return self.spec.preprocessing(image, flip=flip)

    def features(self, batch: np.ndarray) -> np.ndarray:
        """Run the model; average-pool a feature map; return ``(B, dim)`` float32."""
        engine = self.engine
        x = np.ascontiguousarray(batch, dtype=np.float32)
        out = self._output(engine.session)
        y = engine.session.run([out.name], {engine.input_name: x})[0]
        if self.spec.output == "feature_map":
            y = y.mean(axis=(2, 3))
        return np.asarray(y, np.float32).reshape(len(x), -1)
