"""Inference engines: run a backbone's pooled-feature graph on batches.

``onnx``: ONNX Runtime on a graph built once from the checkpoint without torch
(:mod:`.lite_onnx`) and cached in the user cache dir, keyed by the weights' hash.
``onnx-int8`` (new collections' default for Lite0): the same graph statically quantised to
int8 by ONNX Runtime with activation ranges shipped in the package (:mod:`.calibration`), built
once and cached; a collection keeps a copy of the model its embeddings came from. Encoders
without shipped ranges are calibrated on real images (:meth:`.Encoder.calibrate`).
``torch``: eager PyTorch, the reference, in the ``torch`` extra (:mod:`.torch_engine`).
All use CUDA when it is present.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import shutil
import tempfile
import threading
from pathlib import Path

import numpy as np

from .lite_onnx import ONNX_OPSET  # noqa: F401 (part of the cache key)

log = logging.getLogger(__name__)

ENGINES = ("onnx", "onnx-int8", "torch")


def cache_dir() -> Path:
    """Where built models are cached (``$LOOKALIKE_CACHE`` or the user cache dir)."""
    env = os.environ.get("LOOKALIKE_CACHE")
    if env:
        return Path(env)
    import platformdirs

    return Path(platformdirs.user_cache_dir("lookalike"))


def threads() -> int:
    """Inference threads: ``$LOOKALIKE_THREADS``, else the CPU count."""
    return int(os.environ.get("LOOKALIKE_THREADS", 0)) or os.cpu_count() or 1


class OnnxEngine:
    """ONNX Runtime inference over a model file (the cached built-in graph, or your own)."""

    name = "onnx"

    def __init__(self, model_path: Path):
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads()
        opts.inter_op_num_threads = 1
        # Spinning threads collapse throughput when decode workers share the cores.
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        available = ort.get_available_providers()
        providers = [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider") if p in available]
        self.session = ort.InferenceSession(str(model_path), opts, providers=providers)
        self.input_name = self.session.get_inputs()[0].name
        self.model_path = model_path

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        """Return pooled features ``(B, D)`` float32 for a ``(B, 3, S, S)`` batch."""
        return self.session.run(None, {self.input_name: batch})[0]


# Images a collection calibrates its own int8 model on (an ONNX model of your own, which has no shared
# ranges; and collections made before the shared calibration): 64 real images (~8 s to quantise here).
CALIBRATION_IMAGES = 64


def quantize_int8(fp32_path: Path, calibration: np.ndarray | None, out_path: Path, *,
                  ranges: dict[str, tuple[float, float]] | None = None) -> Path:
    """Statically quantise a float ONNX model to int8 (QDQ, per-channel weights).

    Parameters
    ----------
    fp32_path : Path
        The float model (:meth:`.Encoder.fp32_onnx_path`).
    calibration : ndarray, shape (n, 3, S, S), or None
        Preprocessed real images; activation ranges are calibrated on them (MinMax).
    out_path : Path
        Where to write the int8 model (atomically).
    ranges : dict, optional
        Instead of ``calibration``: the activation ranges ``{tensor: (min, max)}`` to use, as
        :func:`activation_ranges` computed them (the shipped ranges, :mod:`.calibration`). The
        model is then a function of the float graph, the ranges and the ONNX Runtime version only.

    Notes
    -----
    Dynamic and per-tensor quantisation lose too much accuracy on this network; static
    QDQ per-channel keeps the embedding cosine to the float model at ~0.99 (median).
    """
    if (calibration is None) == (ranges is None):
        raise ValueError("give the calibration images or the activation ranges (one of them)")
    out_path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        pre = _pre_process(fp32_path, Path(tmp))
        cache = Path(tmp) / "ranges.json"
        if ranges is not None:
            _check_ranges(pre, ranges)
            _save_ranges(ranges, cache)
        q = Path(tmp) / "int8.onnx"
        _quantize(pre, q, None if calibration is None else _reader(pre, calibration), cache)
        _place(q, out_path)
    return out_path


def activation_ranges(fp32_path: Path, calibration: np.ndarray) -> dict[str, tuple[float, float]]:
    """The activation ranges ``{tensor: (min, max)}`` static quantisation calibrates on ``calibration``.

    The same MinMax calibration :func:`quantize_int8` runs (it also quantises, ~1 s, and the
    model is dropped): what :mod:`.calibration` ships for :func:`quantize_int8`'s ``ranges``.
    """
    from onnxruntime.quantization.calibrate import load_tensors_data

    with tempfile.TemporaryDirectory() as tmp:
        pre = _pre_process(fp32_path, Path(tmp))
        cache = Path(tmp) / "ranges.json"
        _quantize(pre, Path(tmp) / "int8.onnx", _reader(pre, calibration), cache)
        data = load_tensors_data(cache)
    return {k: (float(np.asarray(v.lowest).reshape(-1)[0]), float(np.asarray(v.highest).reshape(-1)[0]))
            for k, v in sorted(data.items())}


def _pre_process(fp32_path: Path, tmp: Path) -> Path:
    from onnxruntime.quantization.shape_inference import quant_pre_process

    pre = tmp / "pre.onnx"
    # Symbolic shape inference (for transformers' dynamic shapes) needs sympy, which the core
    # install lacks; a CNN's shapes are static apart from the batch, so ONNX's own inference suffices.
    quant_pre_process(str(fp32_path), str(pre), skip_symbolic_shape=not _installed("sympy"))
    return pre


def _installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):  # an import hook that refuses it: as good as missing
        return False


def _reader(model_path: Path, calibration: np.ndarray):
    import onnx
    from onnxruntime.quantization import CalibrationDataReader

    input_name = onnx.load(str(model_path), load_external_data=False).graph.input[0].name

    class _Reader(CalibrationDataReader):
        def __init__(self):
            self.i = 0

        def get_next(self):
            if self.i >= len(calibration):
                return None
            self.i += 8
            return {input_name: np.ascontiguousarray(calibration[self.i - 8 : self.i], dtype=np.float32)}

    return _Reader()


def _quantize(pre: Path, out: Path, reader, cache: Path) -> None:
    """quantize_static as every int8 model here is made; ``reader`` None: the ranges saved in ``cache``."""
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static

    quantize_static(str(pre), str(out), reader, quant_format=QuantFormat.QDQ, per_channel=True,
                    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8, calibration_cache_path=str(cache))


def _save_ranges(ranges: dict, path: Path) -> None:
    from onnxruntime.quantization import CalibrationMethod
    from onnxruntime.quantization.calibrate import TensorData, TensorsData, save_tensors_data

    data = {k: TensorData(lowest=np.array([lo], np.float32), highest=np.array([hi], np.float32))
            for k, (lo, hi) in ranges.items()}
    save_tensors_data(TensorsData(CalibrationMethod.MinMax, data), path)


def _check_ranges(pre: Path, ranges: dict) -> None:
    """Refuse ranges of tensors this graph does not have (ranges made for another graph or ONNX Runtime)."""
    import onnx

    graph = onnx.load(str(pre), load_external_data=False).graph
    names = {t for n in graph.node for t in n.output} | {i.name for i in graph.input}
    missing = sorted(set(ranges) - names)
    if missing:
        raise ValueError(f"the int8 activation ranges name {len(missing)} tensors this graph lacks (e.g. "
                         f"{missing[0]!r}): they were computed for another graph or onnxruntime version. "
                         "Use --engine onnx, or compute them again: python -m lookalike.encoders.calibration")


def _place(src: Path, dst: Path) -> None:
    """Move ``src`` to ``dst`` atomically (a copy and a rename across file systems)."""
    tmp = dst.with_name(f".{dst.name}.tmp{os.getpid()}-{threading.get_ident()}")
    shutil.copyfile(src, tmp)
    os.replace(tmp, dst)
