"""EfficientNet-Lite's shape, without any framework: block list, widths and input sizes.

Shared by the torch-free ONNX builder (:mod:`.lite_onnx`) and the torch reference
implementation (:mod:`.efficientnet_lite`, in the ``torch`` extra), so both build the
same network from the same table.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import NamedTuple

# (repeats, kernel, stride, expand_ratio, in_channels, out_channels) for the B0/Lite0 base.
BASE_BLOCKS = (
    (1, 3, 1, 1, 32, 16),
    (2, 3, 2, 6, 16, 24),
    (2, 5, 2, 6, 24, 40),
    (3, 3, 2, 6, 40, 80),
    (3, 5, 1, 6, 80, 112),
    (4, 5, 2, 6, 112, 192),
    (1, 3, 1, 6, 192, 320),
)
# TF checkpoints use batch-norm epsilon 1e-3 (PyTorch's default is 1e-5).
BN_EPS = 1e-3
STEM_CHANNELS = 32  # Lite: the stem is not scaled with the width
HEAD_CHANNELS = 1280  # Lite: nor is the head; this is the embedding's dimension

# name -> (width multiplier, depth multiplier, input size)
LITE_PARAMS = {
    "efficientnet-lite0": (1.0, 1.0, 224),
    "efficientnet-lite1": (1.0, 1.1, 240),
    "efficientnet-lite2": (1.1, 1.2, 260),
    "efficientnet-lite3": (1.2, 1.4, 280),
    "efficientnet-lite4": (1.4, 1.8, 300),
}


class Block(NamedTuple):
    """One mobile inverted bottleneck (MBConv without squeeze-and-excitation)."""

    kernel: int
    stride: int
    expand: int
    c_in: int
    c_out: int

    @property
    def residual(self) -> bool:
        """True when the block adds its input to its output."""
        return self.stride == 1 and self.c_in == self.c_out


def round_filters(filters: int, width: float, divisor: int = 8) -> int:
    """Scale a channel count by ``width`` and round to a multiple of ``divisor`` (TF reference rule)."""
    filters *= width
    new = max(divisor, int(filters + divisor / 2) // divisor * divisor)
    if new < 0.9 * filters:
        new += divisor
    return int(new)


def round_repeats(repeats: int, depth: float) -> int:
    """Scale a stage's block count by ``depth`` (rounded up)."""
    return int(math.ceil(depth * repeats))


def check_variant(name: str) -> tuple[float, float, int]:
    """``(width, depth, image_size)`` of a variant; ``ValueError`` naming the valid ones otherwise."""
    if name not in LITE_PARAMS:
        raise ValueError(f"Unknown EfficientNet-Lite variant {name!r}; expected one of {sorted(LITE_PARAMS)}")
    return LITE_PARAMS[name]


def blocks(name: str) -> Iterator[Block]:
    """The blocks of variant ``name`` in order (their index is the checkpoint's ``_blocks.N``)."""
    width, depth, _ = check_variant(name)
    n_stages = len(BASE_BLOCKS)
    for i, (repeats, k, s, e, c_in, c_out) in enumerate(BASE_BLOCKS):
        c_in = STEM_CHANNELS if i == 0 else round_filters(c_in, width)
        c_out = round_filters(c_out, width)
        # Lite keeps the first and last stage's repeats fixed.
        n = repeats if i in (0, n_stages - 1) else round_repeats(repeats, depth)
        for j in range(n):
            yield Block(k, s if j == 0 else 1, e, c_in if j == 0 else c_out, c_out)


def head_in_channels(name: str) -> int:
    """Channels entering the 1x1 head convolution."""
    return round_filters(320, check_variant(name)[0])


def same_pads(size: int, kernel: int, stride: int) -> tuple[int, int]:
    """TensorFlow ``padding="SAME"``: ``(before, after)`` for one axis; the extra pixel goes after."""
    pad = max((math.ceil(size / stride) - 1) * stride + kernel - size, 0)
    return pad // 2, pad - pad // 2
