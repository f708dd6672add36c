"""Preprocessing exactly as the TF EfficientNet-Lite checkpoints were trained.

1. Centre crop a square of side ``min(w, h) * S / (S + 32)`` (the "crop padding" of 32
   used by the TF reference eval pipeline), 2. resize it bicubically to ``S x S``,
3. scale pixels with ``(x - 127) / 128`` (not ImageNet mean/std: the checkpoints expect
   [-1, 1] inputs; mean/std gives visibly worse features).
"""

from __future__ import annotations

import numpy as np
from PIL import Image

CROP_PADDING = 32


def draft_size(image_size: int) -> int:
    """The smallest side the crop needs before resizing (``S + 32``): use as JPEG draft size."""
    return image_size + CROP_PADDING


def preprocess(image: Image.Image, image_size: int, *, flip: bool = False) -> np.ndarray:
    """Return a ``(3, S, S)`` float32 array for an RGB image.

    Parameters
    ----------
    image : PIL.Image.Image
        RGB image of any size.
    image_size : int
        S, the model's input side (224 for Lite0).
    flip : bool, default False
        Mirror horizontally (for flip-averaged embeddings).
    """
    w, h = image.size
    side = min(w, h) * image_size / (image_size + CROP_PADDING)
    left, top = (w - side) / 2, (h - side) / 2
    im = image.resize((image_size, image_size), Image.BICUBIC, box=(left, top, left + side, top + side))
    if flip:
        im = im.transpose(Image.FLIP_LEFT_RIGHT)
    a = np.asarray(im, dtype=np.float32)
    a = (a - 127.0) * (1.0 / 128.0)
    return np.ascontiguousarray(a.transpose(2, 0, 1))
