"""Rotations for dupes (issue 14, item 6): encode cost and copies found, with and without ``--rotations``.

The set (seeded, written to a temp folder): N Caltech-101 photos (the originals, byte for byte),
each with edited copies from the near-duplicate suite (``lookalike.evaluate.edit_image``):
``rotate_90`` (turned by 90 or 270 degrees, at random), ``rotate_180``, ``flip`` (mirror), plus
``transpose`` (mirror + quarter turn, which no stored variant covers), saved as JPEG q95; and D
other Caltech-101 photos as distractors. Faces_easy is left out (crops of Faces), and a pixel check
(32x32 grey thumbnails correlating >= lookalike.evaluate.TWIN_CORRELATION, the photo or its mirror
image: Caltech-101 holds mirrored copies, e.g. Leopards 0083 and 0183) drops photos that are copies
of one already taken, so two different source photos are really different.

Per collection (default profile, fresh folder): index time (end to end, the model's preparation
not counted), ``find_pairs`` at ``DEFAULT_THRESHOLD`` (exact, and LSH radius search for the
rotations collection), the share of each edit's copies paired with their original, and the pair
precision (a pair is true when both files come from one source photo). Each confusion of two
source photos is counted once too ("false photo pairs"): with rotations one confusion can show
as several file pairs (the copies of both photos pair up as well). Index runs alternate
(plain, rotations, plain, rotations) so that the load of the shared VM hits both alike; the cost
ratio is of the sums. Also timed: turning rotations on for the indexed plain collection
(``index(rotations=True)``: every image read and embedded again, turned) and, with
``--with-rot270``, a collection storing all three turns, to show that rot270 adds nothing.

    python benchmarks/rotations.py [--originals 100] [--distractors 200] [--with-rot270]
"""

import argparse
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from lookalike import Collection  # noqa: E402
from lookalike.dupes import DEFAULT_THRESHOLD, find_pairs  # noqa: E402
from lookalike.evaluate import TWIN_CORRELATION, _thumb, edit_image  # noqa: E402

DATA = Path(os.environ.get("LOOKALIKE_DATA", ROOT.parent / "shared" / "data")) / "caltech101"
EDITS = ("rotate_90", "rotate_180", "flip", "transpose")


def pick_sources(n: int, seed: int) -> list[Path]:
    """``n`` seeded Caltech-101 photos, no two of them pixel twins."""
    rows = [line.split(",")[0] for line in (DATA / "labels.csv").read_text().splitlines()[1:]]
    rows = [r for r in rows if not r.startswith(("Faces_easy/", "BACKGROUND"))]
    rng = np.random.default_rng(seed)
    out, thumbs = [], []
    for i in rng.permutation(len(rows)):
        path = DATA / rows[i]
        try:
            with Image.open(path) as im:
                im = im.convert("RGB")
                t, mirror = _thumb(im), _thumb(im.transpose(Image.Transpose.FLIP_LEFT_RIGHT))
        except OSError:
            continue
        if thumbs and float(np.max(np.stack(thumbs) @ np.stack([t, mirror]).T)) >= TWIN_CORRELATION:
            continue
        out.append(path)
        thumbs.append(t)
        if len(out) == n:
            break
    return out


def build_set(work: Path, n_orig: int, n_dist: int, seed: int) -> dict[str, tuple[int, str]]:
    """Write the set under ``work/photos``; returns {file path: (source photo number, edit or 'original')}."""
    root = work / "photos"
    truth = {}
    sources = pick_sources(n_orig + n_dist, seed)
    rng = np.random.default_rng(seed + 1)
    for k, src in enumerate(sources):
        folder = root / ("originals" if k < n_orig else "distractors")
        folder.mkdir(parents=True, exist_ok=True)
        dst = folder / f"{k:04d}_{src.parent.name}_{src.name}"
        shutil.copyfile(src, dst)
        truth[str(dst)] = (k, "original")
        if k >= n_orig:
            continue
        with Image.open(src) as im:
            im = im.convert("RGB")
            copies = edit_image(im, rng, ["rotate_90", "rotate_180", "flip"])
            copies["transpose"] = im.transpose(Image.Transpose.TRANSPOSE)
        for edit, out in copies.items():
            (root / edit).mkdir(parents=True, exist_ok=True)
            p = root / edit / f"{k:04d}.jpg"
            out.save(p, quality=95)
            truth[str(p)] = (k, edit)
    return truth


def index_once(db: Path, photos: Path, rotations) -> dict:
    shutil.rmtree(db, ignore_errors=True)
    col = Collection.create(db, rotations=rotations)
    col.encoder  # noqa: B018 (the model's preparation is not timed)
    t0 = time.perf_counter()
    report = col.index(photos)
    return {"seconds": time.perf_counter() - t0, "encode_s": report.times.encode, "images": len(col),
            "embeddings_bytes": sum(f.stat().st_size for f in db.glob("*.emb.npy")),
            "variants_bytes": sum(f.stat().st_size for f in db.glob("*.var.npy"))}


def score_pairs(col, truth, method: str) -> dict:
    t0 = time.perf_counter()
    pairs = find_pairs(col, DEFAULT_THRESHOLD, method=method)
    seconds = time.perf_counter() - t0
    found = {(truth[p.path_a][0], truth[p.path_a][1], truth[p.path_b][1]) for p in pairs}
    found |= {(k, b, a) for k, a, b in found}
    copies = [(k, e) for k, e in truth.values() if e != "original"]
    per_edit = {}
    for edit in EDITS:
        ks = [k for k, e in copies if e == edit]
        hit = sum((k, "original", edit) in found for k in ks)
        per_edit[edit] = {"copies": len(ks), "found": hit, "share": round(hit / len(ks), 4) if ks else None}
    true_pairs = sum(truth[p.path_a][0] == truth[p.path_b][0] for p in pairs)
    false = [(Path(p.path_a).name, Path(p.path_b).name, round(p.score, 4)) for p in pairs
             if truth[p.path_a][0] != truth[p.path_b][0]]
    photos = {tuple(sorted((truth[p.path_a][0], truth[p.path_b][0]))) for p in pairs
              if truth[p.path_a][0] != truth[p.path_b][0]}
    return {"method": method, "pairs": len(pairs), "true_pairs": true_pairs, "false_pairs": len(false),
            "false_photo_pairs": len(photos),
            "precision": round(true_pairs / len(pairs), 4) if pairs else None, "dupes_s": round(seconds, 3),
            "per_edit": per_edit, "false_examples": false[:10]}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--originals", type=int, default=100)
    ap.add_argument("--distractors", type=int, default=200)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--rounds", type=int, default=2, help="alternating plain/rotations index runs")
    ap.add_argument("--with-rot270", action="store_true", help="also a collection storing rot90, rot180 and rot270")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "rotations.json")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="lookalike-rotations-"))
    try:
        truth = build_set(work, args.originals, args.distractors, args.seed)
        photos = work / "photos"
        print(f"set: {len(truth)} files ({args.originals} originals x {len(EDITS)} edits, "
              f"{args.distractors} distractors) in {work}", flush=True)
        load = [os.getloadavg()[0]]
        runs = {"plain": [], "rotations": []}
        for r in range(args.rounds):
            for name, rot in (("plain", False), ("rotations", True)):
                runs[name].append(index_once(work / f"db-{name}", photos, rot))
                load.append(os.getloadavg()[0])
                print(f"round {r + 1} {name}: {runs[name][-1]['seconds']:.1f} s", flush=True)
        plain_s = sum(x["seconds"] for x in runs["plain"])
        rot_s = sum(x["seconds"] for x in runs["rotations"])
        plain, rot = Collection.open(work / "db-plain"), Collection.open(work / "db-rotations")
        results = {
            "plain": score_pairs(plain, truth, "exact"),
            "rotations": score_pairs(rot, truth, "exact"),
        }
        rot.build_lsh(min_segment_rows=2)
        results["rotations_lsh"] = score_pairs(rot, truth, "lsh")
        # turning rotations on for the plain collection: every image embedded again, turned
        t0 = time.perf_counter()
        report = plain.index(photos, rotations=True)
        backfill_s = time.perf_counter() - t0
        load.append(os.getloadavg()[0])
        results["turned_on_later"] = score_pairs(plain, truth, "exact")
        extra = {}
        if args.with_rot270:
            x = index_once(work / "db-rot270", photos, ("rot90", "rot180", "rot270"))
            load.append(os.getloadavg()[0])
            extra = {"index_s": round(x["seconds"], 2), "cost_ratio_vs_plain_run": round(
                x["seconds"] / np.mean([y["seconds"] for y in runs["plain"]]), 2),
                **score_pairs(Collection.open(work / "db-rot270"), truth, "exact")}
            results["rot90_rot180_rot270"] = extra
        summary = {
            "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
            "machine": f"{platform.machine()}, {os.cpu_count()} cores (shared VM)",
            "load_avg_1min": [round(v, 2) for v in load],
            "threshold": DEFAULT_THRESHOLD,
            "set": {"originals": args.originals, "distractors": args.distractors, "edits": list(EDITS),
                    "files": len(truth), "seed": args.seed},
            "index_runs": runs,
            "encode_cost_ratio": round(rot_s / plain_s, 3),
            "index_images_per_s": {"plain": round(len(truth) * len(runs["plain"]) / plain_s, 2),
                                   "rotations": round(len(truth) * len(runs["rotations"]) / rot_s, 2)},
            "disk_ratio": round((runs["rotations"][0]["embeddings_bytes"] + runs["rotations"][0]["variants_bytes"])
                                / runs["plain"][0]["embeddings_bytes"], 3),
            "turn_on_later": {"seconds": round(backfill_s, 2), "images_embedded": report.rotated},
            "results": results,
        }
        args.out.write_text(json.dumps(summary, indent=2) + "\n")
        print(f"\nindex: plain {plain_s / len(runs['plain']):.1f} s, rotations {rot_s / len(runs['rotations']):.1f} s "
              f"per run -> encode cost x{summary['encode_cost_ratio']}  (disk x{summary['disk_ratio']}); "
              f"turning on later {backfill_s:.1f} s; load {summary['load_avg_1min']}")
        print(f"{'edit':<12}" + "".join(f"{k:>22}" for k in results))
        for edit in EDITS:
            print(f"{edit:<12}" + "".join(f"{r['per_edit'][edit]['share']:>22.2f}" for r in results.values()))
        print(f"{'precision':<12}" + "".join(f"{str(r['precision']):>22}" for r in results.values()))
        print(f"{'false pairs':<12}" + "".join(f"{r['false_pairs']:>22}" for r in results.values()))
        print(f"{'false photos':<12}" + "".join(f"{r['false_photo_pairs']:>22}" for r in results.values()))
        print(f"{'dupes s':<12}" + "".join(f"{r['dupes_s']:>22}" for r in results.values()))
        print(f"wrote {args.out}")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
