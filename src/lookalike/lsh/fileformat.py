"""The LSH index file: one ``.npz`` holding the tables, the family's random parameters and a JSON header.

Entries: ``family__<name>`` (the hash family's state, :meth:`Family.state`), ``keys`` (CSR
offsets ``(L, 2**bucket_bits + 1)``), ``rows`` (``(L, n)``), ``ids`` (``(n,)``), ``codes``
(hyperplane Hamming codes, only when the index filters on them), ``vectors`` (optional: a
collection keeps them in its own embeddings file) and ``meta`` (UTF-8 JSON:
``format_version`` and the fitted ``params``).

Versions: 1 stored ``codes`` word-major ``(W, n)``; 2 stores them row-major ``(n, W)``.
Files of any version up to :data:`INDEX_FORMAT_VERSION` load; newer ones are refused.
"""

from __future__ import annotations

import io
import json

import numpy as np

INDEX_FORMAT_VERSION = 2  # 2: Hamming codes row-major (n, words)
_FAMILY = "family__"


def dumps(params: dict, family_state: dict, arrays: dict) -> bytes:
    """The ``.npz`` bytes of an index.

    ``arrays`` holds ``keys``, ``rows``, ``ids`` and optionally ``codes`` and ``vectors``
    (None values are left out).
    """
    out = {f"{_FAMILY}{k}": np.asarray(v) for k, v in family_state.items()}
    out.update((k, arrays[k]) for k in ("keys", "rows", "ids", "codes", "vectors") if arrays.get(k) is not None)
    meta = {"format_version": INDEX_FORMAT_VERSION, "params": params}
    out["meta"] = np.frombuffer(json.dumps(meta).encode(), np.uint8)
    buf = io.BytesIO()
    np.savez(buf, **out)
    return buf.getvalue()


def loads(source) -> tuple[dict, dict, dict]:
    """``(params, family_state, arrays)`` of a file written by :func:`dumps` (a path or bytes).

    ``arrays`` has ``keys``, ``rows``, ``ids``, and ``codes`` / ``vectors`` (None when absent);
    codes of version-1 files are returned row-major.
    """
    data = np.load(io.BytesIO(source) if isinstance(source, bytes) else source, allow_pickle=False)
    meta = json.loads(bytes(data["meta"]).decode())
    if meta["format_version"] > INDEX_FORMAT_VERSION:
        raise ValueError(f"LSH index format {meta['format_version']} is newer than this lookalike supports")
    state = {k[len(_FAMILY):]: data[k] for k in data.files if k.startswith(_FAMILY)}
    arrays = {k: data[k] if k in data.files else None for k in ("keys", "rows", "ids", "codes", "vectors")}
    if arrays["codes"] is not None and meta["format_version"] < 2:  # version 1 stored them word-major
        arrays["codes"] = np.ascontiguousarray(arrays["codes"].T)
    return meta["params"], state, arrays
