"""Inference engines: run a backbone's pooled-feature graph on batches.

``onnx`` (default): ONNX Runtime on a graph built once from the checkpoint without torch
(:mod:`.lite_onnx`) and cached in the user cache dir, keyed by the weights' hash.
``onnx-int8``: the same graph statically quantised to int8 by ONNX Runtime, calibrated on
real images (a collection keeps its own calibrated model). ``torch``: eager PyTorch, the
reference, in the ``torch`` extra (:mod:`.torch_engine`).
All use CUDA when it is present.
"""

from __future__ import annotations

import importlib.util
import logging
import os
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


# Images used to calibrate int8 activation ranges: 64 real images (~8 s to quantise here).
CALIBRATION_IMAGES = 64


def quantize_int8(fp32_path: Path, calibration: np.ndarray, out_path: Path) -> Path:
    """Statically quantise a float ONNX model to int8 (QDQ, per-channel weights).

    Parameters
    ----------
    fp32_path : Path
        The float model (:meth:`.Encoder.fp32_onnx_path`).
    calibration : ndarray, shape (n, 3, S, S)
        Preprocessed real images; activation ranges are calibrated on them.
    out_path : Path
        Where to write the int8 model (atomically).

    Notes
    -----
    Dynamic and per-tensor quantisation lose too much accuracy on this network; static
    QDQ per-channel keeps the embedding cosine to the float model at ~0.99 (median).
    """
    import tempfile

    import onnx
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    input_name = onnx.load(str(fp32_path), load_external_data=False).graph.input[0].name

    class _Reader(CalibrationDataReader):
        def __init__(self):
            self.i = 0

        def get_next(self):
            if self.i >= len(calibration):
                return None
            self.i += 8
            return {input_name: np.ascontiguousarray(calibration[self.i - 8 : self.i], dtype=np.float32)}

    out_path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        pre = Path(tmp) / "pre.onnx"
        # Symbolic shape inference (for transformers' dynamic shapes) needs sympy, which the core
        # install lacks; a CNN's shapes are static apart from the batch, so ONNX's own inference suffices.
        quant_pre_process(str(fp32_path), str(pre), skip_symbolic_shape=importlib.util.find_spec("sympy") is None)
        q = Path(tmp) / "int8.onnx"
        quantize_static(str(pre), str(q), _Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)
        os.replace(q, out_path) if q.stat().st_dev == out_path.parent.stat().st_dev else out_path.write_bytes(
            q.read_bytes()
        )
    return out_path
