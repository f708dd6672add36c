"""End-to-end indexing speed of each profile (``lookalike index --profile NAME``), not a test.

    python benchmarks/quality_speed.py FOLDER [--rounds 2]

Indexes FOLDER into a fresh collection per profile and round (read, decode, preprocess,
encode, write; no LSH), profiles interleaved so that load from other processes on the shared
VM spreads over all of them; reports the best round's img/s. Adds ``speed`` to
benchmarks/results/quality-default.json.
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
    args = ap.parse_args()
    best: dict[str, float] = {}
    n = 0
    for r in range(args.rounds):
        for name, p in PROFILES.items():
            with tempfile.TemporaryDirectory() as tmp:
                col = Collection.create(Path(tmp) / "db", encoder=p.encoder, views=p.views,
                                        flip_average=p.flip_average)
                col.encoder.engine  # noqa: B018 (the graph is built and loaded outside the timing)
                rep = col.index(args.folder, lsh=False)
                n = rep.embedded
                best[name] = max(best.get(name, 0.0), rep.images_per_second)
                print(f"round {r}: {name}: {rep.embedded} images, {rep.images_per_second:.1f} img/s", flush=True)
    speed = {"images": n, "rounds": args.rounds, "date": time.strftime("%Y-%m-%d %H:%M"),
             "cores": os.cpu_count(), "img_per_s": {k: round(v, 1) for k, v in best.items()},
             "relative_cost": {k: round(best["fast"] / v, 2) for k, v in best.items()}}
    print(json.dumps(speed, indent=1))
    data = json.loads(OUT.read_text()) if OUT.exists() else {}
    data["speed"] = speed
    OUT.write_text(json.dumps(data, indent=1))


if __name__ == "__main__":
    main()
