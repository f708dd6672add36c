"""End-to-end indexing throughput per engine on Caltech-101 (not a test).

    python benchmarks/encode.py [--limit N] [--engines torch,onnx,onnx-int8]

Indexes the whole folder into a fresh collection per engine (the CLI's code path),
prints a table of images/s and stage times, and for int8 the cosine to the float
embeddings and P@10 of both; writes benchmarks/results/encode.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

from lookalike.runtime import tune_process

tune_process()

import numpy as np  # noqa: E402

from lookalike import Collection  # noqa: E402
from lookalike.evaluate import class_retrieval  # noqa: E402

HERE = Path(__file__).resolve().parent
DATA = Path(os.environ.get("LOOKALIKE_DATA", HERE.parent.parent / "shared" / "data"))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default=str(DATA / "caltech101"))
    ap.add_argument("--engines", default="torch,onnx,onnx-int8")
    ap.add_argument("--limit", type=int, default=0, help="index only a sample of this many images")
    ap.add_argument("--out", default=str(HERE / "results" / "encode.json"))
    args = ap.parse_args()
    src = Path(args.data)
    tmp = Path(tempfile.mkdtemp(prefix="lookalike-bench-"))
    if args.limit:  # a sample of the folder, via symlinks (keeps labels = folder names)
        files = sorted(src.rglob("*.jpg"))
        pick = np.random.default_rng(0).choice(len(files), min(args.limit, len(files)), replace=False)
        for i in sorted(pick):
            dst = tmp / "data" / files[i].relative_to(src)
            dst.parent.mkdir(parents=True, exist_ok=True)
            dst.symlink_to(files[i])
        src = tmp / "data"
    rows, embs = [], {}
    for engine in args.engines.split(","):
        col = Collection.create(tmp / f"db-{engine}", engine=engine)
        if engine != "torch":
            col.encoder.fp32_onnx_path()  # one-time export is not indexing time
        t0 = time.perf_counter()
        rep = col.index(src, progress=sys.stderr.isatty())
        calibrate = rep.times.extra.get("calibrate", 0.0)  # once per collection, reported apart
        wall = time.perf_counter() - t0 - calibrate
        keep = [i for i, lab in enumerate(col.labels) if lab != "Faces_easy"]
        q = class_retrieval(np.asarray(col.embeddings)[keep], [col.labels[i] for i in keep], k=10, expand=0)
        embs[engine] = dict(zip(col.paths, np.asarray(col.embeddings)))
        t = rep.times
        rows.append({"engine": engine, "images": rep.added, "skipped": len(rep.skipped), "seconds": round(wall, 1),
                     "images_per_second": round(rep.added / wall, 1), "decode_cpu_s": round(t.decode, 1),
                     "encode_s": round(t.encode, 1), "write_s": round(t.write, 2), "discover_s": round(t.discover, 2),
                     "calibrate_s": round(calibrate, 1),
                     "p_at_10": round(q["p_at_k"], 4), "map": round(q["map"], 4)})
        print(rows[-1], flush=True)
    if "onnx" in embs and "onnx-int8" in embs:
        common = sorted(set(embs["onnx"]) & set(embs["onnx-int8"]))
        cos = np.array([float(embs["onnx"][p] @ embs["onnx-int8"][p]) for p in common])
        for r in rows:
            if r["engine"] == "onnx-int8":
                r["cosine_to_fp32_median"] = round(float(np.median(cos)), 4)
                r["cosine_to_fp32_p01"] = round(float(np.quantile(cos, 0.01)), 4)
    shutil.rmtree(tmp, ignore_errors=True)
    result = {"benchmark": "encode", "data": str(args.data), "limit": args.limit, "date": time.strftime("%Y-%m-%d"),
              "machine": f"{platform.machine()}, {os.cpu_count()} cores, {platform.processor() or 'cpu'}", "rows": rows}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2))
    print("\n| engine | images | img/s end to end | decode (cpu-s) | encode (s) | P@10 | mAP | cos to fp32 (median / 1st pct) |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        cos = f"{r['cosine_to_fp32_median']} / {r['cosine_to_fp32_p01']}" if "cosine_to_fp32_median" in r else "-"
        print(f"| {r['engine']} | {r['images']} | {r['images_per_second']} | {r['decode_cpu_s']} | {r['encode_s']} "
              f"| {r['p_at_10']} | {r['map']} | {cos} |")


if __name__ == "__main__":
    main()
