"""Rotated copies for near-duplicate matching (``index --rotations``).

A collection indexed with rotations stores, beside each image's embedding, the embeddings of
the image turned by 90 and 180 degrees (its *variants*, one side file per segment). The
``dupes`` scans then score a pair as the best of ``cos(a, b)``, ``cos(v(a), b)`` and
``cos(a, v(b))`` over the variants ``v``, so a copy turned on its side or upside down scores
like an upright copy. Search is unchanged.

Two variants cover the three turns: a copy turned by 270 degrees is the original turned by
90 degrees the other way round (``b = rot270(a)`` means ``a = rot90(b)``), which the score's
``cos(v(b), a)`` side catches. Storing ``rot270`` too (``rotations=("rot90", "rot180",
"rot270")``, one more pass per image) finds no more turned copies, only more mirrored-and-turned
ones (69 -> 100 of 100 in ``benchmarks/rotations.py``). No mirror variant: the default embedding
(centre crop + whole frame) already scores a mirrored copy at 0.96-1.0 against its original (100
of 100 found without rotations), so one more pass per image would find nothing more. README,
"Rotations and mirrors", has the measured cost and recall.

The variants come from the encoder's public API: each decoded image is turned with
``Image.transpose`` and preprocessed like the original, and all of them go through the model
in the same batch (:class:`VariantEncoder`), so an image is read and decoded once.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

# Variant name -> PIL transpose method name; their order is the order of the variants file.
VARIANTS = {"rot90": "ROTATE_90", "rot180": "ROTATE_180", "rot270": "ROTATE_270"}
DEFAULT_VARIANTS = ("rot90", "rot180")


def check_variants(names) -> tuple[str, ...]:
    """``names`` as a tuple of known variant names (``True``: :data:`DEFAULT_VARIANTS`)."""
    if names is True:
        return DEFAULT_VARIANTS
    names = tuple(names)
    if not names or len(set(names)) != len(names) or any(n not in VARIANTS for n in names):
        raise ValueError(f"rotations must be distinct names from {tuple(VARIANTS)}; got {names!r}")
    return names


def transpose(image, name: str):
    """The PIL image turned as variant ``name``."""
    from PIL import Image

    return image.transpose(getattr(Image.Transpose, VARIANTS[name]))


class VariantEncoder:
    """An encoder that embeds each image together with its variants, for :func:`lookalike.indexer.embed_files`.

    ``preprocess(image)`` stacks the model inputs of the image and of each variant;
    ``embed_batch`` returns ``(B, 1 + V, dim)``: row 0 the image's embedding (exactly what
    the wrapped encoder gives), rows 1.. its variants'. Everything else is the wrapped encoder's.
    """

    def __init__(self, encoder, variants: Sequence[str] = DEFAULT_VARIANTS, *, original: bool = True):
        self.encoder = encoder
        self.variants = check_variants(variants)
        self.original = original  # False: the variants only, (B, V, dim)

    def __getattr__(self, name):
        return getattr(self.encoder, name)

    def preprocess(self, image) -> np.ndarray:
        """``(1 + V, ...)`` stacked model inputs: the image, then each variant (``original=False``: ``(V, ...)``)."""
        first = [self.encoder.preprocess(image)] if self.original else []
        return np.stack(first + [self.encoder.preprocess(transpose(image, v)) for v in self.variants])

    def embed_batch(self, batch: np.ndarray) -> np.ndarray:
        """Stacked :meth:`preprocess` outputs ``(B, 1 + V, ...)`` -> ``(B, 1 + V, dim)`` unit vectors."""
        b, k = batch.shape[:2]
        out = self.encoder.embed_batch(batch.reshape(b * k, *batch.shape[2:]))
        return out.reshape(b, k, -1)


def embed_variants(encoder, images: Sequence, variants: Sequence[str] = DEFAULT_VARIANTS,
                   batch_size: int = 32) -> np.ndarray:
    """``(N, V, dim)`` embeddings of the variants of RGB PIL images (``Encoder.embed_images``)."""
    variants = check_variants(variants)
    turned = [transpose(im, v) for im in images for v in variants]
    return encoder.embed_images(turned, batch_size=batch_size).reshape(len(images), len(variants), -1)


def variant_scores(vectors: np.ndarray, variants: np.ndarray | None, t: int) -> np.ndarray:
    """Pair scores of rows against row ``t``: ``max(cos(a, b), max_v cos(v(a), b), max_v cos(a, v(b)))``.

    ``vectors`` ``(n, d)``; ``variants`` ``(n, V, d)`` or None (plain cosines).
    """
    vectors = np.asarray(vectors, np.float32)
    s = vectors @ vectors[t]
    if variants is not None and variants.shape[1]:
        variants = np.asarray(variants, np.float32)
        s = np.maximum(s, (variants @ vectors[t]).max(axis=1))
        s = np.maximum(s, (vectors @ variants[t].T).max(axis=1))
    return s
