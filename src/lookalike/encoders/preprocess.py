"""Preprocessing: crop, resize and scale an RGB image into a model's input array.

The built-in EfficientNet-Lite encoders use exactly what their TF checkpoints were trained with:

1. centre crop a square of side ``min(w, h) * S / (S + 32)`` (the "crop padding" of 32
   used by the TF reference eval pipeline), 2. resize it bicubically to ``S x S``,
3. scale pixels with ``(x - 127) / 128`` (not ImageNet mean/std: the checkpoints expect
   [-1, 1] inputs; mean/std gives visibly worse features).

:class:`Preprocessing` states the same steps as data, so an ONNX model of your own
(``--encoder onnx:PATH``) can say in a small JSON file how its inputs are made.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from PIL import Image

CROP_PADDING = 32
_INTERPOLATION = {"bicubic": Image.BICUBIC, "bilinear": Image.BILINEAR, "lanczos": Image.LANCZOS,
                  "nearest": Image.NEAREST}


def draft_size(image_size: int) -> int:
    """The smallest side the crop needs before resizing (``S + 32``): use as JPEG draft size."""
    return image_size + CROP_PADDING


def _crop_resize(image: Image.Image, size: int, crop: tuple[float, float] | None, resample: int, flip: bool):
    """Centre square of side ``min(w, h) * crop[0] / crop[1]`` resized to ``size`` (``None``: whole image)."""
    w, h = image.size
    if crop is None:
        im = image.resize((size, size), resample)
    else:
        side = min(w, h) * crop[0] / crop[1]
        left, top = (w - side) / 2, (h - side) / 2
        im = image.resize((size, size), resample, box=(left, top, left + side, top + side))
    return im.transpose(Image.FLIP_LEFT_RIGHT) if flip else im


# The views an embedding can be pooled from: "crop" = the centre square the checkpoints were
# evaluated with (what lookalike always used); "full" = the whole frame squashed to S x S (sees
# the borders and corners the crop drops, so copies cropped, squashed or framed differently agree).
VIEWS = ("crop", "full")


def preprocess(image: Image.Image, image_size: int, *, flip: bool = False, view: str = "crop") -> np.ndarray:
    """Return a ``(3, S, S)`` float32 array for an RGB image (the built-in encoders' rule).

    Parameters
    ----------
    image : PIL.Image.Image
        RGB image of any size.
    image_size : int
        S, the model's input side (224 for Lite0).
    flip : bool, default False
        Mirror horizontally (for flip-averaged embeddings).
    view : {"crop", "full"}, default "crop"
        ``crop``: centre square of side ``min(w, h) * S / (S + 32)``; ``full``: the whole image
        resized to ``S x S`` (aspect ratio not kept). See :data:`VIEWS`.
    """
    if view not in VIEWS:
        raise ValueError(f"Unknown view {view!r}; expected one of {VIEWS}")
    crop = (image_size, image_size + CROP_PADDING) if view == "crop" else None
    im = _crop_resize(image, image_size, crop, Image.BICUBIC, flip)
    a = np.asarray(im, dtype=np.float32)
    a = (a - 127.0) * (1.0 / 128.0)
    return np.ascontiguousarray(a.transpose(2, 0, 1))


@dataclass(frozen=True)
class Preprocessing:
    """How to turn an RGB image into a ``(3, S, S)`` model input (for your own ONNX models).

    Parameters
    ----------
    input_size : int
        S, the model's input side.
    crop_fraction : float or None, default 0.875
        Centre-crop a square of side ``min(w, h) * crop_fraction``, then resize it to S
        (0.875 = torchvision's ``Resize(256), CenterCrop(224)``; 1.0 = ``Resize(S),
        CenterCrop(S)``). ``None`` resizes the whole image to ``S x S`` (aspect not kept).
    interpolation : {"bicubic", "bilinear", "lanczos", "nearest"}, default "bicubic"
    scale, offset : sequence of 3 floats
        Per channel, ``x * scale + offset`` on 0..255 pixel values (in ``channel_order``).
        :meth:`from_mean_std` converts the usual mean/std on [0, 1] pixels.
    channel_order : {"RGB", "BGR"}, default "RGB"
    """

    input_size: int
    crop_fraction: float | None = 0.875
    interpolation: str = "bicubic"
    scale: tuple[float, float, float] = (1 / 128, 1 / 128, 1 / 128)
    offset: tuple[float, float, float] = (-127 / 128, -127 / 128, -127 / 128)
    channel_order: str = "RGB"

    def __post_init__(self):
        if not isinstance(self.input_size, int) or self.input_size < 1:
            raise ValueError(f"input_size must be a positive integer, got {self.input_size!r}")
        if self.crop_fraction is not None and not 0 < self.crop_fraction <= 1:
            raise ValueError(f"crop_fraction must be in (0, 1] or null (stretch), got {self.crop_fraction!r}")
        if self.interpolation not in _INTERPOLATION:
            raise ValueError(f"interpolation must be one of {sorted(_INTERPOLATION)}, got {self.interpolation!r}")
        if self.channel_order not in ("RGB", "BGR"):
            raise ValueError(f"channel_order must be 'RGB' or 'BGR', got {self.channel_order!r}")
        for key in ("scale", "offset"):
            v = getattr(self, key)
            if len(v) != 3:
                raise ValueError(f"{key} needs 3 values (one per channel), got {v!r}")
            object.__setattr__(self, key, tuple(float(x) for x in v))

    @staticmethod
    def from_mean_std(mean: Sequence[float], std: Sequence[float]) -> tuple[tuple, tuple]:
        """``(scale, offset)`` for ``(x / 255 - mean) / std``, mean and std given on [0, 1] pixels."""
        if len(mean) != 3 or len(std) != 3 or any(s <= 0 for s in std):
            raise ValueError(f"mean and std need 3 values each, std > 0; got mean={mean!r}, std={std!r}")
        return tuple(1 / (255 * s) for s in std), tuple(-m / s for m, s in zip(mean, std))

    @property
    def draft_size(self) -> int:
        """Smallest image side worth decoding (JPEG draft) for this crop."""
        return int(np.ceil(self.input_size / (self.crop_fraction or 1.0)))

    def __call__(self, image: Image.Image, *, flip: bool = False) -> np.ndarray:
        """RGB PIL image -> ``(3, S, S)`` float32 array."""
        crop = None if self.crop_fraction is None else (self.crop_fraction, 1.0)
        im = _crop_resize(image, self.input_size, crop, _INTERPOLATION[self.interpolation], flip)
        a = np.asarray(im, dtype=np.float32)
        if self.channel_order == "BGR":
            a = a[..., ::-1]
        a = a * np.asarray(self.scale, np.float32) + np.asarray(self.offset, np.float32)
        return np.ascontiguousarray(a.transpose(2, 0, 1))
