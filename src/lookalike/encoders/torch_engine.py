"""The ``torch`` engine and the torch-based ONNX export: the reference, in the ``torch`` extra.

``pip install 'lookalike[torch]'`` enables ``--engine torch`` (eager PyTorch) and
:func:`export_onnx`, the exporter lookalike used before it built its graph without torch
(:mod:`.lite_onnx`); the tests use both to check the torch-free graph.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np

from ..extras import require
from .engines import threads
from .lite_onnx import INPUT_NAME, ONNX_OPSET, OUTPUT_NAME

log = logging.getLogger(__name__)


class PooledFeatures:
    """``torch.nn.Module`` wrapper: image batch -> globally average-pooled features."""

    def __new__(cls, model):  # noqa: D102 - a factory, so torch is imported only when needed
        torch = require("torch", "torch")

        class _Pooled(torch.nn.Module):
            def __init__(self, m):
                super().__init__()
                self.m = m

            def forward(self, x):
                return self.m.extract_features(x).mean(dim=(2, 3))

        return _Pooled(model).eval()


class TorchEngine:
    """Eager PyTorch inference (CPU, or CUDA when available)."""

    name = "torch"

    def __init__(self, model):
        torch = require("torch", "torch")

        self._torch = torch
        self.device = "cuda" if torch.cuda.is_available() else "cpu"
        if self.device == "cpu" and torch.get_num_threads() != threads():
            torch.set_num_threads(threads())
        self.module = PooledFeatures(model).to(self.device)

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        """Return pooled features ``(B, D)`` float32 for a ``(B, 3, S, S)`` batch."""
        torch = self._torch
        with torch.inference_mode():
            x = torch.from_numpy(batch).to(self.device)
            return self.module(x).float().cpu().numpy()


def export_onnx(model, image_size: int, path: Path) -> Path:
    """Export ``model``'s pooled features to ONNX at ``path`` (atomic; batch axis dynamic)."""
    torch = require("torch", "torch")

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    module = PooledFeatures(model)
    example = torch.zeros(2, 3, image_size, image_size)
    batch = torch.export.Dim("batch", min=1, max=4096)
    log.info("exporting %s to ONNX (once; cached at %s)", type(model).__name__, path)
    torch.onnx.export(
        module,
        (example,),
        str(tmp),
        input_names=[INPUT_NAME],
        output_names=[OUTPUT_NAME],
        dynamic_shapes={"x": {0: batch}},
        opset_version=ONNX_OPSET,
        external_data=False,
        dynamo=True,
        verbose=False,
    )
    os.replace(tmp, path)
    return path
