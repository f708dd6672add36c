"""Pooling experiments on the development set (Caltech-101 sample), not a test.

    python benchmarks/pooling.py [--encoders efficientnet-lite0,efficientnet-lite2]

Same sample as benchmarks/quality.py (30 images per class, seeded, Faces_easy dropped).
From one forward pass per input size, compares pooling of the last feature map: average
(what lookalike ships), GeM with p = 2, 3, 4 (Radenovic et al.), max (MAC); each with
horizontal-flip averaging, and multi-scale (input side S and 1.25 S, L2-normalised then
summed). Reports class retrieval P@10 / mAP plain and with the shipped re-ranking
(alpha-DBA 10 + alpha-QE 5). Never run on the Flowers-17 holdout.
Writes benchmarks/results/pooling-dev.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
DATA = Path(os.environ.get("LOOKALIKE_DATA", HERE.parents[1] / "shared" / "data"))
POOLS = ("avg", "gem2", "gem3", "gem4", "max")


def sample():
    root = DATA / "caltech101"
    rng = np.random.default_rng(0)
    paths, labels = [], []
    for d in sorted(p for p in root.iterdir() if p.is_dir() and p.name != "Faces_easy"):
        fs = sorted(d.glob("*.jpg"))
        for i in sorted(rng.choice(len(fs), min(30, len(fs)), replace=False)):
            paths.append(fs[i])
            labels.append(d.name)
    return paths, labels


def pooled(fmap, how):
    """(B, C, h, w) torch feature map -> (B, C) numpy."""
    import torch

    if how == "avg":
        out = fmap.mean(dim=(2, 3))
    elif how == "max":
        out = fmap.amax(dim=(2, 3))
    else:
        p = float(how[3:])
        out = fmap.clamp(min=1e-6).pow(p).mean(dim=(2, 3)).pow(1.0 / p)
    return out.float().numpy() if isinstance(out, torch.Tensor) else out


def features(encoder, images, size, flip):
    """Dict pool -> (n, d) L2-normalised features at input side ``size``."""
    import torch

    from lookalike.encoders.preprocess import preprocess

    model = encoder.load_model()
    out = {p: [] for p in POOLS}
    with torch.inference_mode():
        for i in range(0, len(images), 32):
            x = np.stack([preprocess(im, size, flip=flip) for im in images[i : i + 32]])
            fmap = model.extract_features(torch.from_numpy(x))
            for p in POOLS:
                out[p].append(pooled(fmap, p))
    return {p: _unit(np.concatenate(v)) for p, v in out.items()}


def _unit(X):
    return X / np.maximum(np.linalg.norm(X, axis=1, keepdims=True), 1e-12)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--encoders", default="efficientnet-lite0,efficientnet-lite2")
    ap.add_argument("--single-scale", action="store_true", help="skip the 1.25 S passes (multi-scale)")
    args = ap.parse_args()
    import torch

    from lookalike.encoders import get_encoder
    from lookalike.evaluate import class_retrieval
    from lookalike.images import decode

    torch.set_num_threads(os.cpu_count() or 1)
    paths, labels = sample()
    print(len(paths), "images", flush=True)
    rows = []
    for name in args.encoders.split(","):
        enc = get_encoder(name, "torch")
        S = enc.image_size
        big = int(round(S * 1.25 / 32) * 32)
        ims = [decode(p, draft_size=big + 32).image for p in paths]
        t = time.time()
        sizes = (S,) if args.single_scale else (S, big)
        F = {(z, f): features(enc, ims, z, f) for z in sizes for f in (False, True)}
        print(name, "features in", round(time.time() - t), "s", flush=True)
        for p in POOLS:
            variants = {"single": F[(S, False)][p], "flip": _unit(F[(S, False)][p] + F[(S, True)][p])}
            if not args.single_scale:
                variants[f"flip+{big}"] = _unit(F[(big, False)][p] + F[(big, True)][p])
                variants[f"flip+multiscale {S}+{big}"] = _unit(F[(S, False)][p] + F[(S, True)][p] + F[(big, False)][p]
                                                              + F[(big, True)][p])
            for v, X in variants.items():
                plain = class_retrieval(X, labels, 10, expand=0)
                rr = class_retrieval(X, labels, 10, expand=5, dba=10)
                row = {"encoder": name, "pool": p, "variant": v, "p10": round(plain["p_at_k"], 4),
                       "map": round(plain["map"], 4), "p10_dba10_qe5": round(rr["p_at_k"], 4),
                       "map_dba10_qe5": round(rr["map"], 4)}
                rows.append(row)
                print(f"| {name} | {p} | {v} | {row['p10']:.3f} | {row['map']:.3f} | {row['p10_dba10_qe5']:.3f} | "
                      f"{row['map_dba10_qe5']:.3f} |", flush=True)
    out = HERE / "results" / "pooling-dev.json"
    if out.exists():  # keep other encoders' rows from earlier runs
        done = {r["encoder"] for r in rows}
        rows = [r for r in json.loads(out.read_text())["rows"] if r["encoder"] not in done] + rows
    out.write_text(json.dumps({"benchmark": "pooling", "date": time.strftime("%Y-%m-%d"),
                               "machine": f"{platform.machine()}, {os.cpu_count()} cores", "images": len(paths),
                               "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
