"""Hash families for the LSH index: each turns vectors into one integer key per table.

* :class:`Hyperplane` — sign random projection (Charikar 2002) for cosine similarity,
  ``n_bits`` signs per table, with query-directed multi-probe (Lv et al. 2007): the
  buckets reached by flipping the bits whose projections were closest to zero.
* :class:`BucketedRandomProjection` — p-stable LSH for Euclidean distance, the same
  definition as Spark MLlib's ``BucketedRandomProjectionLSH``:
  ``h(x) = floor(x . v / bucket_length)`` with ``v`` a random unit vector; here
  ``n_bits`` such hashes are concatenated per table (Spark uses one per table).
* :class:`MinHash` — Jaccard similarity of the sets of each vector's ``top_dims`` most
  activated dimensions; ``n_bits`` min-hashes per band/table.

Vectors are centred on the fitted mean first: CNN features are non-negative, so without
centring most hyperplanes put every vector on the same side and carry no information.
"""

from __future__ import annotations

import numpy as np

# Odd 64-bit multipliers for mixing several small hash values into one table key.
_MIX = np.uint64(0x9E3779B97F4A7C15)
# Rows hashed per block during fit: 8,192 x 1280 float32 = 40 MB.
HASH_CHUNK_ROWS = 8_192
# Multi-probe considers every flip pattern of the lowest-margin bits: 2**6 = 64 patterns.
PROBE_BITS = 6


def _mix(cols: np.ndarray) -> np.ndarray:
    """Combine int64 columns ``(..., m)`` into one uint64 key per row (wrapping arithmetic)."""
    key = np.zeros(cols.shape[:-1], np.uint64)
    with np.errstate(over="ignore"):
        for j in range(cols.shape[-1]):
            key = (key ^ cols[..., j].astype(np.uint64)) * _MIX
            key ^= key >> np.uint64(29)
    return key


class Family:
    """Base class: ``fit`` draws random parameters; ``keys`` hashes vectors."""

    name = "base"

    def __init__(self, n_tables: int, n_bits: int, seed: int = 0):
        self.n_tables, self.n_bits, self.seed = int(n_tables), int(n_bits), int(seed)

    def fit(self, X: np.ndarray, mean: np.ndarray | None = None) -> Family:
        """Draw the random parameters for vectors like ``X``, centred on ``mean`` (default: their mean)."""
        self.mean_ = mean_of(X) if mean is None else np.asarray(mean, np.float32)
        return self

    def keys(self, X: np.ndarray) -> np.ndarray:
        """``(n, n_tables)`` uint64 bucket keys."""
        out = np.empty((len(X), self.n_tables), np.uint64)
        for i in range(0, len(X), HASH_CHUNK_ROWS):
            out[i : i + HASH_CHUNK_ROWS] = self._keys(np.asarray(X[i : i + HASH_CHUNK_ROWS], np.float32))
        return out

    def bucket_ids(self, X: np.ndarray, bucket_bits: int, *, hamming: bool = False):
        """Bucket ids ``(n_tables, n)`` and, with ``hamming``, the packed hash bits ``(n, W)``.

        Ids are uint16/uint32 (a quarter of the uint64 keys); one pass over ``X`` in blocks,
        the full-size key matrix is never held. ``hamming`` is for the hyperplane family.
        """
        from .tables import bucket_of

        out = np.empty((self.n_tables, len(X)), np.uint16 if bucket_bits <= 16 else np.uint32)
        packed = None
        for i in range(0, len(X), HASH_CHUNK_ROWS):
            block = np.asarray(X[i : i + HASH_CHUNK_ROWS], np.float32)
            if hamming:
                keys, words = self._block_codes(block)
                if packed is None:
                    packed = np.empty((len(X), words.shape[1]), np.uint64)
                packed[i : i + len(block)] = words
            else:
                keys = self._keys(block)
            out[:, i : i + len(block)] = bucket_of(keys, bucket_bits).T
        return out, packed

    def probe_keys(self, X: np.ndarray, n_probes: int) -> np.ndarray:
        """``(n, n_tables, n_probes)`` keys to look up per query (the first is the query's own)."""
        return self.keys(X)[:, :, None]

    def state(self) -> dict:
        """Arrays and numbers that define the family (saved with the index)."""
        return {"n_tables": self.n_tables, "n_bits": self.n_bits, "seed": self.seed, "mean_": self.mean_}

    @classmethod
    def from_state(cls, state: dict) -> Family:
        """Rebuild a fitted family from :meth:`state`."""
        fam = cls.__new__(cls)
        for k, v in state.items():
            setattr(fam, k, int(v) if k in ("n_tables", "n_bits", "seed", "top_dims") else
                    (float(v) if k == "bucket_length" else v))
        return fam


class Hyperplane(Family):
    """Sign random projections: ``n_bits`` (<= 40) bits per table, multi-probe capable."""

    name = "hyperplane"

    def fit(self, X: np.ndarray, mean: np.ndarray | None = None) -> Hyperplane:  # noqa: D102
        if not 1 <= self.n_bits <= 40:
            raise ValueError(f"n_bits must be in 1..40 for the hyperplane family, got {self.n_bits}")
        super().fit(X, mean)
        rng = np.random.default_rng(self.seed)
        self.planes_ = rng.standard_normal((X.shape[1], self.n_tables * self.n_bits)).astype(np.float32)
        return self

    def state(self) -> dict:  # noqa: D102
        return {**super().state(), "planes_": self.planes_}

    def project(self, X: np.ndarray) -> np.ndarray:
        """``(n, n_tables, n_bits)`` projections of the centred ``X`` on the hyperplanes (sign = hash bit)."""
        return ((X - self.mean_) @ self.planes_).reshape(len(X), self.n_tables, self.n_bits)

    def _keys(self, X: np.ndarray) -> np.ndarray:
        return pack_bits(self.project(X) > 0)

    def hamming(self, X: np.ndarray) -> np.ndarray:
        """All hash bits of ``X`` packed for Hamming distances: ``(n, W)`` uint64."""
        return pack_hamming(self.project(np.asarray(X, np.float32)) > 0)

    def _block_codes(self, X):
        bits = self.project(X) > 0
        return pack_bits(bits), pack_hamming(bits)

    def probe_keys(self, X: np.ndarray, n_probes: int) -> np.ndarray:  # noqa: D102
        return probe_from_projection(self.project(np.asarray(X, np.float32)), n_probes)


def mean_of(X: np.ndarray) -> np.ndarray:
    """Column mean in float64 accumulated over row blocks (no full-size copy), as float32."""
    total = np.zeros(X.shape[1], np.float64)
    for i in range(0, len(X), HASH_CHUNK_ROWS):
        total += np.asarray(X[i : i + HASH_CHUNK_ROWS], np.float32).sum(axis=0, dtype=np.float64)
    return (total / max(len(X), 1)).astype(np.float32)


def pack_bits(bits: np.ndarray) -> np.ndarray:
    """Pack boolean ``(..., K)`` (K <= 64) into uint64 ``(...)``: bit j of the key is ``bits[..., j]``."""
    by = np.packbits(bits, axis=-1, bitorder="little")  # (..., ceil(K / 8)) bytes, least significant first
    out = np.zeros(bits.shape[:-1] + (8,), np.uint8)
    out[..., : by.shape[-1]] = by
    return out.view("<u8")[..., 0].astype(np.uint64)


def pack_hamming(bits: np.ndarray) -> np.ndarray:
    """Pack boolean ``(n, L, K)`` hash bits densely into ``(n, W)`` uint64 words (as :func:`hamming_codes`)."""
    n = bits.shape[0]
    flat = np.packbits(bits.reshape(n, -1), axis=1)
    out = np.zeros((n, -(-flat.shape[1] // 8) * 8), np.uint8)
    out[:, : flat.shape[1]] = flat
    return out.view(np.uint64)


def hamming_codes(codes: np.ndarray, n_bits: int) -> np.ndarray:
    """Pack ``(n, L)`` per-table codes of ``n_bits`` bits densely: ``(n, W)`` uint64 words."""
    n, n_tables = codes.shape
    n_bytes = -(-n_tables * n_bits // 8)
    packed = np.zeros((n, n_bytes + (-n_bytes) % 8), np.uint8)
    shifts = np.arange(n_bits, dtype=np.uint64)
    for i in range(0, n, 1 << 16):  # blocks: the unpacked bits are 8 bytes per bit
        block = codes[i : i + (1 << 16)]
        bits = ((block[:, :, None] >> shifts) & np.uint64(1)).astype(np.uint8)
        packed[i : i + len(block), :n_bytes] = np.packbits(bits.reshape(len(block), n_tables * n_bits), axis=1)
    return packed.view(np.uint64)


def _patterns(m: int) -> np.ndarray:
    """All flip patterns of ``m`` bits as a ``(m, 2**m)`` 0/1 matrix (column j = pattern j)."""
    return ((np.arange(1 << m)[None, :] >> np.arange(m)[:, None]) & 1).astype(np.float64)


_PATTERNS = [_patterns(m) for m in range(PROBE_BITS + 1)]


def probe_from_projection(proj: np.ndarray, n_probes: int) -> np.ndarray:
    """Multi-probe keys ``(q, L, n_probes)`` from hyperplane projections ``(q, L, K)``.

    Among all flip patterns of the lowest-margin bits, visit those with the smallest sum
    of squared margins (query-directed probing, Lv et al. 2007); the first probe is the
    query's own bucket.
    """
    base = pack_bits(proj > 0)
    if n_probes <= 1:
        return base[:, :, None]
    # A pattern flipping the j-th lowest bit scores worse than the j+1 patterns {}, {b0}..{b_{j-1}},
    # so with P probes only the P-1 lowest bits can be flipped.
    m = min(PROBE_BITS, proj.shape[-1], n_probes - 1)
    margin = np.abs(proj)
    low = np.argsort(margin, axis=2)[:, :, :m]  # (q, L, m) bit positions, closest to zero first
    pat = _PATTERNS[m]  # (m, 2**m)
    score = (np.take_along_axis(margin, low, axis=2) ** 2) @ pat  # (q, L, 2**m)
    best = np.argsort(score, axis=2, kind="stable")[:, :, :n_probes]  # pattern 0 (no flip) first
    flips = (np.exp2(low) @ pat).astype(np.uint64)  # bit masks, exact below 2**53
    return base[:, :, None] ^ np.take_along_axis(flips, best, axis=2)


class BucketedRandomProjection(Family):
    """Euclidean p-stable hashing, Spark MLlib's definition: ``floor(x . v / bucket_length)``."""

    name = "brp"

    def __init__(self, n_tables: int, n_bits: int, seed: int = 0, bucket_length: float | None = None):
        super().__init__(n_tables, n_bits, seed)
        self.bucket_length = bucket_length

    def fit(self, X: np.ndarray) -> BucketedRandomProjection:  # noqa: D102
        super().fit(X)
        rng = np.random.default_rng(self.seed)
        v = rng.standard_normal((X.shape[1], self.n_tables * self.n_bits)).astype(np.float32)
        self.units_ = v / np.linalg.norm(v, axis=0, keepdims=True)
        if self.bucket_length is None:  # a quarter of the projections' spread, if not given
            sample = np.asarray(X[: min(len(X), 4096)], np.float32)
            self.bucket_length = float(((sample - self.mean_) @ self.units_[:, :16]).std() * 1.0) or 1.0
        self.offsets_ = rng.uniform(0, self.bucket_length, self.n_tables * self.n_bits).astype(np.float32)
        return self

    def state(self) -> dict:  # noqa: D102
        return {
            **super().state(),
            "units_": self.units_,
            "offsets_": self.offsets_,
            "bucket_length": self.bucket_length,
        }

    def _keys(self, X: np.ndarray) -> np.ndarray:
        h = np.floor(((X - self.mean_) @ self.units_ + self.offsets_) / self.bucket_length).astype(np.int64)
        return _mix(h.reshape(len(X), self.n_tables, self.n_bits))


class MinHash(Family):
    """MinHash of each vector's ``top_dims`` largest dimensions (Jaccard on those sets).

    Exact min-wise permutations: the universe is only ``dim`` items, so each hash is a
    true random permutation of the dimensions.
    """

    name = "minhash"

    def __init__(self, n_tables: int, n_bits: int, seed: int = 0, top_dims: int = 50):
        super().__init__(n_tables, n_bits, seed)
        self.top_dims = int(top_dims)

    def fit(self, X: np.ndarray) -> MinHash:  # noqa: D102
        super().fit(X)
        rng = np.random.default_rng(self.seed)
        d = X.shape[1]
        self.perms_ = np.stack([rng.permutation(d) for _ in range(self.n_tables * self.n_bits)]).astype(np.int32)
        return self

    def state(self) -> dict:  # noqa: D102
        return {**super().state(), "perms_": self.perms_, "top_dims": self.top_dims}

    def signature(self, X: np.ndarray) -> np.ndarray:
        """``(n, n_tables * n_bits)`` int64 min-hashes of each row's ``top_dims`` largest dimensions."""
        top = np.argpartition(-X, self.top_dims - 1, axis=1)[:, : self.top_dims]  # (n, T) raw activations
        return self.perms_[:, top].min(axis=2).T.astype(np.int64)

    def _keys(self, X: np.ndarray) -> np.ndarray:
        return _mix(self.signature(X).reshape(len(X), self.n_tables, self.n_bits))


FAMILIES = {f.name: f for f in (Hyperplane, BucketedRandomProjection, MinHash)}


def make_family(name: str, **params) -> Family:
    """Build a hash family by name."""
    if name not in FAMILIES:
        raise ValueError(f"Unknown LSH family {name!r}; expected one of {sorted(FAMILIES)}")
    return FAMILIES[name](**params)
