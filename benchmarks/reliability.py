"""Reliability numbers for the README (not a test): messy input, SIGKILL during indexing, flipped bytes.

    python benchmarks/reliability.py [--kills 30] [--flips 10]

1. Builds the damaged corpus (lookalike.testing.build_corpus, as tests/test_damaged.py) from 6 real photos (~350 files) and indexes it:
   files tried, indexed, skipped with a reason, crashes, EXIF-orientation cosine to the original.
2. SIGKILLs `lookalike index` at seeded random moments; after each kill the collection must open
   (checksums verified) with no duplicate or garbled rows, and a re-run must complete exactly.
3. Flips one byte at random positions of every collection file; every flip must be detected
   on open (or on first use of the LSH index) with an error naming the file.
Writes benchmarks/results/reliability.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from lookalike import Collection, CorruptCollectionError
from lookalike.testing import build_corpus, run_and_kill, synthetic_image

HERE = Path(__file__).resolve().parent
DATA = Path(os.environ.get("LOOKALIKE_DATA", HERE.parent.parent / "shared" / "data"))

CLASSES = ("accordion", "pizza", "camera", "soccer_ball", "umbrella", "lotus")


def messy(tmp: Path) -> dict:
    originals = [Image.open(sorted((DATA / "caltech101" / c).glob("*.jpg"))[0]).convert("RGB") for c in CLASSES]
    kinds = build_corpus(tmp / "corpus", originals, seed=0, copies=16)
    col = Collection.create(tmp / "messy-db")
    crashes = 0
    try:
        report = col.index(tmp / "corpus", max_pixels=50_000_000)
    except Exception as e:  # a crash is what we count, not hide
        crashes, report = 1, None
        print("CRASH", e)
    paths, reasons = set(col.paths), dict(col.errors)
    good = [r for r, k in kinds.items() if k.startswith("good:")]
    bad = [r for r, k in kinds.items() if k.startswith("bad:")]
    emb = dict(zip(col.paths, np.asarray(col.embeddings)))
    cos = [float(emb[str(tmp / "corpus" / f"good/exif/orient{o}_{n}.jpg")] @ emb[str(tmp / "corpus" / f"good/orig_{n}.jpg")])
           for n in range(len(originals)) for o in range(1, 9)]
    return {"files": len(kinds), "good": len(good), "bad": len(bad), "either": len(kinds) - len(good) - len(bad),
            "crashes": crashes, "indexed": report.added if report else 0, "skipped_with_reason": len(reasons),
            "good_indexed": sum(str(tmp / "corpus" / r) in paths for r in good),
            "bad_skipped_with_reason": sum(bool(reasons.get(str(tmp / "corpus" / r))) for r in bad),
            "exif_cosine_min": round(min(cos), 4)}


def kills(tmp: Path, trials: int) -> dict:
    root = tmp / "kill-photos"
    for i in range(120):
        (root / f"d{i % 4}").mkdir(parents=True, exist_ok=True)
        synthetic_image(1000 + i).save(root / f"d{i % 4}" / f"{i:03d}.jpg")
    ref = Collection.create(tmp / "kill-ref")
    ref.index(root)
    reference = dict(zip(ref.paths, np.asarray(ref.embeddings)))
    env = dict(os.environ, LOOKALIKE_CHECKPOINT_ROWS="8")
    ok = opened_after_kill = finished_before_kill = 0
    rows_at_kill = []
    failures = []
    for t in range(trials):
        db = tmp / f"kill-db-{t}"
        cmd = [sys.executable, "-m", "lookalike", "index", str(root), "--db", str(db), "--no-progress", "--batch-size", "4"]
        info = run_and_kill(cmd, env, db, len(reference), seed=t)
        finished_before_kill += info["finished_before_kill"]
        try:
            if (db / "manifest.json").exists():
                col = Collection.open(db)
                rows_at_kill.append(len(col))
                assert len(set(col.paths)) == len(col)
                for p, v in zip(col.paths, col.embeddings):
                    assert np.abs(v - reference[p]).max() < 1e-5
                opened_after_kill += 1
            subprocess.run(cmd, env=env, check=True, capture_output=True)
            col = Collection.open(db)
            assert sorted(col.paths) == sorted(reference)
            for p, v in zip(col.paths, col.embeddings):
                assert np.abs(v - reference[p]).max() < 1e-5
            ok += 1
        except Exception as e:
            failures.append(f"trial {t}: {type(e).__name__}: {e}")
        shutil.rmtree(db, ignore_errors=True)
    return {"trials": trials, "survived": ok, "collection_existed_and_opened_after_kill": opened_after_kill,
            "finished_before_kill": finished_before_kill, "rows_committed_at_kill": rows_at_kill,
            "killed_mid_run": sum(r < len(reference) for r in rows_at_kill) + (trials - opened_after_kill),
            "failures": failures}


def merge_kills(tmp: Path, trials: int) -> dict:
    """SIGKILL `lookalike compact --max-segments 1` (a merge of 12 segments) at random moments."""
    from lookalike.datasets import clustered_vectors, write_spark_output

    X = clustered_vectors(6_000, seed=1)
    base = tmp / "merge-base"
    Collection.create(base)
    for b in range(12):
        src = write_spark_output(tmp / f"merge-src-{b}", 500, vectors=X[b * 500 : (b + 1) * 500],
                                 paths=lambda i, b=b: f"/data/{b}/{i}.jpg")
        Collection.open(base).import_parquet(src, lsh=False)
    ref = Collection.open(base)
    reference = dict(zip(ref.paths, np.asarray(ref.embeddings)))
    segments_before = len(ref.segments)
    rng = np.random.default_rng(0)
    ok, merged_at_kill, failures = 0, [], []
    for t in range(trials):
        db = tmp / "merge-db"
        shutil.rmtree(db, ignore_errors=True)
        shutil.copytree(base, db)
        proc = subprocess.Popen([sys.executable, "-m", "lookalike", "compact", "--db", str(db), "--max-segments", "1"],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(float(rng.uniform(0.5, 4.0)))
        finished = proc.poll() is not None
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        try:
            col = Collection.open(db)
            col.verify()
            merged_at_kill.append(None if finished else len(col.segments))
            got = dict(zip(col.paths, np.asarray(col.embeddings)))
            assert len(got) == len(col) == len(reference)
            assert all(np.array_equal(got[p], v) for p, v in reference.items())
            ok += 1
        except Exception as e:
            failures.append(f"trial {t}: {type(e).__name__}: {e}")
    return {"trials": trials, "survived": ok, "segments_before": segments_before,
            "segments_after_kill": merged_at_kill, "failures": failures}


def flips(tmp: Path, per_file: int) -> dict:
    root = tmp / "flip-photos"
    root.mkdir()
    for i in range(20):
        synthetic_image(i).save(root / f"{i}.png")
    base = tmp / "flip-base"
    col = Collection.create(base)
    col.index(root)
    col.build_lsh(k=5, min_segment_rows=2)
    synthetic_image(99).save(root / "extra.png")
    (root / "0.png").unlink()
    col.index(root)  # a second segment and a tombstone file too
    files = [f.name for f in base.iterdir() if f.is_file() and not f.name.startswith(".")]
    rng = np.random.default_rng(0)
    tried = detected = 0
    missed = []
    for name in files:
        for _ in range(per_file):
            db = tmp / "flip-db"
            shutil.rmtree(db, ignore_errors=True)
            shutil.copytree(base, db)
            data = bytearray((db / name).read_bytes())
            pos = int(rng.integers(0, len(data)))
            data[pos] ^= 1 << int(rng.integers(0, 8))
            (db / name).write_bytes(bytes(data))
            tried += 1
            try:
                c = Collection.open(db)  # small files are checked here, large ones at first use:
                c.lsh  # noqa: B018 - loading the LSH index verifies its checksum
                np.asarray(c.embeddings)  # first use of the embeddings verifies theirs
                missed.append(f"{name}@{pos}")
            except CorruptCollectionError as e:
                detected += name in str(e)
            except Exception as e:  # detected, but not with our error: count as a miss
                missed.append(f"{name}@{pos}: {type(e).__name__}")
    return {"files": sorted(files), "flips": tried, "detected_naming_the_file": detected, "missed": missed}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--kills", type=int, default=30)
    ap.add_argument("--flips", type=int, default=10)
    ap.add_argument("--only", default="messy,sigkill,merge-kill,flips")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="lookalike-rel-"))
    try:
        out = HERE / "results" / "reliability.json"
        result = json.loads(out.read_text()) if out.exists() else {}
        result.update({"benchmark": "reliability", "date": time.strftime("%Y-%m-%d"),
                       "machine": f"{platform.machine()}, {os.cpu_count()} cores"})
        only = args.only.split(",")
        if "messy" in only:
            result["messy_input"] = messy(tmp)
        if "sigkill" in only:
            result["sigkill"] = kills(tmp, args.kills)
        if "merge-kill" in only:
            result["sigkill_during_merge"] = merge_kills(tmp, args.kills)
        if "flips" in only:
            result["byte_flips"] = flips(tmp, args.flips)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    (HERE / "results" / "reliability.json").write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
