"""Storage precision: do float16 embeddings change retrieval quality? (issue 12, item 2)

Indexes Caltech-101 once into a float32 collection, copies its embeddings into a float16
collection (through the streaming Spark import, so no second CNN pass), and measures on
both: leave-one-out class retrieval (P@10, mAP) and near-duplicate robustness (group mAP
over the same seeded edits). Prints a table, writes benchmarks/results/precision.json.

    python benchmarks/precision.py [--data ../shared/data/caltech101] [--near-dup 200]
"""

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
from lookalike import Collection
from lookalike import evaluate as ev
from lookalike.datasets import write_spark_output

DATA = Path(os.environ.get("LOOKALIKE_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))


def quality(col, near_dup: int) -> dict:
    labels = col.labels
    emb = np.asarray(col.embeddings)
    cr = ev.class_retrieval(emb, labels, k=10, expand=0)
    nd = ev.near_duplicate_robustness(col, n_originals=near_dup, seed=0, k=10)
    return {"p_at_10": cr["p_at_k"], "map": cr["map"], "near_dup_group_map": nd["group_map"]}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default=str(DATA / "caltech101"))
    ap.add_argument("--near-dup", type=int, default=200)
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="lookalike-precision-"))
    t0 = time.perf_counter()
    c32 = Collection.create(work / "f32", dtype="float32")
    c32.index(args.data, lsh=False)
    t_index = time.perf_counter() - t0
    info = {"format": "lookalike-spark-embeddings", "encoder": c32.manifest["encoder"], "engine": "onnx",
            "weights_sha256": c32.manifest["weights_sha256"], "dim": c32.manifest["dim"], "flip_average": False}
    src = write_spark_output(work / "spark", len(c32), vectors=np.asarray(c32.embeddings), paths=c32.paths, info=info)
    c16 = Collection.create(work / "f16", dtype="float16")
    c16.import_parquet(src, lsh=False)
    rows = {}
    for name, col in (("float32", c32), ("float16", c16)):
        rows[name] = quality(col, args.near_dup)
    delta = {k: rows["float16"][k] - rows["float32"][k] for k in rows["float32"]}
    print(f"Caltech-101 ({len(c32)} images, indexed in {t_index:.0f} s), near-dup originals {args.near_dup}")
    print(f"{'storage':<10}{'P@10':>8}{'mAP':>8}{'near-dup group mAP':>20}")
    for name, r in rows.items():
        print(f"{name:<10}{r['p_at_10']:>8.4f}{r['map']:>8.4f}{r['near_dup_group_map']:>20.4f}")
    print(f"{'delta':<10}{delta['p_at_10']:>+8.4f}{delta['map']:>+8.4f}{delta['near_dup_group_map']:>+20.4f}")
    out = Path(__file__).parent / "results" / "precision.json"
    out.write_text(json.dumps({"date": time.strftime("%Y-%m-%d"), "images": len(c32), "results": rows,
                               "delta_float16_minus_float32": delta,
                               "disk_bytes": {n: sum(f.stat().st_size for f in (work / n).glob("seg-*emb.npy"))
                                              for n in ("f32", "f16")}}, indent=2))
    print(f"written {out}")


if __name__ == "__main__":
    main()
