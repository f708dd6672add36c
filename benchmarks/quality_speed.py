"""End-to-end indexing speed of each profile (``lookalike index --profile NAME``), not a test.

    python benchmarks/quality_speed.py FOLDER [--rounds 2] [--int8] [--key speed]

Indexes FOLDER into a fresh collection per profile and round (read, decode, preprocess,
encode, write; no LSH), profiles interleaved so that load from other processes on the shared
VM spreads over all of them; reports the best round's img/s and the 1-minute load average
before and after each run. ``--int8`` adds each profile on the ``onnx-int8`` engine (its
calibration on 64 of the folder's images counts in its time). Adds ``KEY`` (default
``speed``) to benchmarks/results/quality-default.json.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

from lookalike.collection import Collection
from lookalike.encoders import PROFILES

OUT = Path(__file__).resolve().parent / "results" / "quality-default.json"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("folder", type=Path)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--int8", action="store_true", help="also each profile on the onnx-int8 engine")
    ap.add_argument("--profiles", default=",".join(PROFILES), help="comma-separated profile names")
    ap.add_argument("--key", default="speed", help="the key of the JSON results to write")
    args = ap.parse_args()
    best: dict[str, float] = {}
    loads: dict[str, list] = {}
    n = 0
    runs = [(name, engine) for name in args.profiles.split(",") for engine in (("onnx", "onnx-int8") if args.int8
                                                                                 else ("onnx",))]
    for r in range(args.rounds):
        for name, engine in runs:
            p = PROFILES[name]
            key = name if engine == "onnx" else f"{name} int8"
            with tempfile.TemporaryDirectory() as tmp:
                col = Collection.create(Path(tmp) / "db", encoder=p.encoder, views=p.views,
                                        flip_average=p.flip_average, engine=engine)
                if engine == "onnx":
                    col.encoder.engine  # noqa: B018 (the graph is built and loaded outside the timing)
                before = os.getloadavg()[0]
                rep = col.index(args.folder, lsh=False)
                n = rep.embedded
                loads.setdefault(key, []).append([round(before, 1), round(os.getloadavg()[0], 1)])
                best[key] = max(best.get(key, 0.0), rep.images_per_second)
                print(f"round {r}: {key}: {rep.embedded} images, {rep.images_per_second:.1f} img/s "
                      f"(load average {before:.1f} -> {os.getloadavg()[0]:.1f})", flush=True)
    ref = best.get("fast") or max(best.values())
    speed = {"images": n, "rounds": args.rounds, "date": time.strftime("%Y-%m-%d %H:%M"),
             "cores": os.cpu_count(), "img_per_s": {k: round(v, 1) for k, v in best.items()},
             "relative_cost": {k: round(ref / v, 2) for k, v in best.items()}, "load_average": loads}
    print(json.dumps(speed, indent=1))
    data = json.loads(OUT.read_text()) if OUT.exists() else {}
    data[args.key] = speed
    OUT.write_text(json.dumps(data, indent=1))


if __name__ == "__main__":
    main()
