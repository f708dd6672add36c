"""Seeded synthetic data for tests and benchmarks (faiss's SyntheticDataset idea).

Real embeddings have low intrinsic dimension and cluster by content; uniform noise in
1280-d has neither, and makes every index look either perfect or useless.
"""

from __future__ import annotations

import numpy as np


def clustered_vectors(n: int, dim: int = 1280, *, n_clusters: int = 100, intrinsic_dim: int = 32,
                      spread: float = 0.6, nonnegative: bool = True, seed: int = 0,
                      dtype=np.float32) -> np.ndarray:
    """Unit vectors ``(n, dim)`` that lie near a low-dimensional manifold, in clusters.

    Points are cluster centres plus Gaussian offsets (``spread`` x centre scale) in an
    ``intrinsic_dim``-dimensional latent space, mapped to ``dim`` by a fixed random
    linear map, passed through ReLU when ``nonnegative`` (like CNN features), plus a
    little isotropic noise, then L2-normalised. Generated in blocks, so 1M x 1280 fits.
    """
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((n_clusters, intrinsic_dim))
    mixing = rng.standard_normal((intrinsic_dim, dim)) / np.sqrt(intrinsic_dim)
    out = np.empty((n, dim), dtype)
    block = 65_536
    for b0 in range(0, n, block):
        m = min(block, n - b0)
        r = np.random.default_rng([seed, b0])
        lab = r.integers(0, n_clusters, m)
        z = centres[lab] + spread * r.standard_normal((m, intrinsic_dim))
        x = (z @ mixing).astype(np.float32)
        if nonnegative:
            np.maximum(x, 0, out=x)
        x += 0.05 * r.standard_normal((m, dim)).astype(np.float32)
        x /= np.linalg.norm(x, axis=1, keepdims=True)
        out[b0 : b0 + m] = x
    return out
