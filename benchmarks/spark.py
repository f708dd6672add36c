"""Spark benchmark: our banded similarity join vs Spark MLlib, and distributed embedding (not a test).

    python benchmarks/spark.py                       # all parts
    python benchmarks/spark.py --part join --dataset caltech101
    python benchmarks/spark.py --part embed --images 1000

join: all pairs with cosine >= --threshold (default 0.9) on (a) Caltech-101's embeddings
(8,677 x 1280, Lite0) and (b) synthetic clustered vectors (10k and 100k x 1280). Each
method runs in its own process with its own Spark session (local[2]); the time reported
is the job's wall time from reading the Parquet to having the pairs on the driver (Spark
start-up, ~10 s here, is not counted, for every method alike). Recall is against the exact
pairs (numpy, blockwise, timed too). MLlib runs get --mllib-timeout seconds.

embed: `spark index` at local[2] vs the single-process indexer on the same images.

Results: benchmarks/results/spark.json and Markdown tables on stdout.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
CACHE = HERE / ".cache"
DATA = Path(os.environ.get("LOOKALIKE_DATA", HERE.parent.parent / "shared" / "data"))
RESULTS = HERE / "results" / "spark.json"

METHODS = {
    "lookalike-lsh": {"method": "lsh"},
    "mllib-brp-seed": {"method": "mllib-brp", "n_tables": 200, "bucket_length": 2.0},
    "mllib-brp-tuned": {"method": "mllib-brp", "n_tables": 10, "bucket_length": 0.02},
    "mllib-minhash": {"method": "mllib-minhash", "n_tables": 5},
}


# ------------------------------------------------------------------------- data
def vectors(name: str) -> tuple[np.ndarray, list[str]]:
    if name == "caltech101":
        from lookalike import Collection

        db = CACHE / "collection-caltech101"
        col = Collection.open_or_create(db)
        col.index(DATA / "caltech101")
        return np.asarray(col.embeddings, np.float32), list(col.paths)
    from lookalike.datasets import clustered_vectors

    n = {"synth10k": 10_000, "synth100k": 100_000}[name]
    X = clustered_vectors(n, 1280, n_clusters=n // 100, seed=7)
    return X, [f"/synthetic/{i:07d}.jpg" for i in range(n)]


def parquet_of(name: str) -> Path:
    """The vectors written like `spark index` output (cached)."""
    out = CACHE / f"spark-{name}"
    if (out / "_lookalike").exists():
        return out
    from lookalike.datasets import write_spark_output

    X, paths = vectors(name)
    shutil.rmtree(out, ignore_errors=True)
    out.parent.mkdir(parents=True, exist_ok=True)
    write_spark_output(out, len(X), vectors=X, paths=paths, files=-(-len(X) // 10_000))
    np.save(CACHE / f"spark-{name}-X.npy", X)
    return out


def exact_truth(name: str, threshold: float) -> tuple[set, float]:
    from lookalike.dupes import exact_pairs

    X = np.load(CACHE / f"spark-{name}-X.npy", mmap_mode="r")
    t = time.perf_counter()
    a, b, _ = exact_pairs(np.asarray(X), threshold)
    return set(zip(a.tolist(), b.tolist())), time.perf_counter() - t


# ------------------------------------------------------------------------- workers
def join_worker(name: str, system: str, threshold: float) -> dict:
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    from lookalike.spark.dupes import spark_dupes
    from lookalike.spark.embed import spark_session

    spark = spark_session("local[2]", "bench", **{"spark.driver.memory": "8g"})
    spark.sparkContext.setLogLevel("ERROR")
    # Warm-up, the same for every method: JVM code paths and Python workers, as on a running cluster.
    spark.range(10_000).mapInArrow(lambda it: it, "id long").count()
    spark.read.parquet(str(parquet_of(name))).select("path").count()
    params = dict(METHODS[system])
    res = spark_dupes(spark, str(parquet_of(name)), threshold=threshold, **params)
    spark.stop()
    idx = {p: i for i, p in enumerate(vectors_paths(name))}
    pairs = [sorted((idx[a.removeprefix("file:")], idx[b.removeprefix("file:")])) for a, b, _ in res.pairs]
    np.save(CACHE / f"spark-pairs-{name}-{system}.npy", np.asarray(pairs, np.int64).reshape(-1, 2))
    return {"seconds": round(res.seconds, 2), "pairs": len(res.pairs), "plan": res.plan}


def vectors_paths(name: str) -> list[str]:
    import pyarrow.dataset as ds

    return [p.removeprefix("file:") for p in ds.dataset(parquet_of(name), format="parquet").to_table(
        columns=["path"]).column("path").to_pylist()]


def embed_worker(n_images: int) -> dict:
    """Single-process indexer vs spark index at local[2] on the same first n images."""
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    from lookalike import Collection
    from lookalike.images import discover

    files = sorted(discover(DATA / "caltech101"))[:n_images]
    src = CACHE / f"embed-{n_images}"
    if not src.exists():
        src.mkdir(parents=True)
        for i, f in enumerate(files):
            os.symlink(f, src / f"{i:05d}{Path(f).suffix}")
    local_db = CACHE / "embed-local-db"
    shutil.rmtree(local_db, ignore_errors=True)
    t = time.perf_counter()
    Collection.create(local_db).index(src)
    local_s = time.perf_counter() - t
    from lookalike.spark.embed import spark_index, spark_session

    t = time.perf_counter()
    spark = spark_session("local[2]", "bench-embed")
    start_s = time.perf_counter() - t
    t = time.perf_counter()
    counts = spark_index(spark, str(src), str(CACHE / "embed-spark-out"), partitions=2)
    spark_s = time.perf_counter() - t
    spark.stop()
    return {"images": n_images, "local_s": round(local_s, 1), "local_img_s": round(n_images / local_s, 1),
            "spark_start_s": round(start_s, 1), "spark_s": round(spark_s, 1),
            "spark_img_s": round(counts["embedded"] / spark_s, 1), "spark_errors": counts["errors"]}


def run_worker(args, timeout: float) -> dict:
    cmd = [sys.executable, __file__, "--worker", json.dumps(args)]
    t = time.time()
    try:
        res = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"timeout_s": timeout}
    if res.returncode != 0:
        return {"error": (res.stderr.strip().splitlines() or ["failed"])[-1]}
    out = json.loads(res.stdout.strip().splitlines()[-1])
    out["process_s"] = round(time.time() - t, 1)
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--part", choices=["join", "embed", "all"], default="all")
    ap.add_argument("--dataset", action="append", help="caltech101, synth10k, synth100k (default: all)")
    ap.add_argument("--systems", default=",".join(METHODS))
    ap.add_argument("--threshold", type=float, default=0.9)
    ap.add_argument("--mllib-timeout", type=float, default=300)
    ap.add_argument("--images", type=int, default=1000)
    ap.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        w = json.loads(args.worker)
        if w["kind"] == "join":
            print(json.dumps(join_worker(w["dataset"], w["system"], w["threshold"])))
        else:
            print(json.dumps(embed_worker(w["images"])))
        return
    results = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    results.update({"benchmark": "spark", "date": time.strftime("%Y-%m-%d"),
                    "machine": f"{platform.machine()}, {os.cpu_count()} cores, local[2]"})
    if args.part in ("join", "all"):
        results.setdefault("join", {})
        for name in args.dataset or ["caltech101", "synth10k", "synth100k"]:
            parquet_of(name)
            truth, exact_s = exact_truth(name, args.threshold)
            n = len(np.load(CACHE / f"spark-{name}-X.npy", mmap_mode="r"))
            rows = {"n": n, "threshold": args.threshold, "exact_pairs": len(truth),
                    "numpy_exact_s": round(exact_s, 2), "systems": {}}
            for system in args.systems.split(","):
                if name == "synth100k" and system != "lookalike-lsh":
                    continue  # MLlib at 100k: hours (see the 10k rows)
                r = run_worker({"kind": "join", "dataset": name, "system": system, "threshold": args.threshold},
                               args.mllib_timeout if system.startswith("mllib") else 3600)
                f = CACHE / f"spark-pairs-{name}-{system}.npy"
                if "seconds" in r and f.exists():
                    got = {tuple(p) for p in np.load(f).tolist()}
                    r["recall"] = round(len(got & truth) / max(1, len(truth)), 4)
                    r["false_pairs"] = len(got - truth)
                    f.unlink()
                rows["systems"][system] = r
                print(f"{name} {system}: {r}", file=sys.stderr, flush=True)
            results["join"][name] = rows
            RESULTS.write_text(json.dumps(results, indent=2))
    if args.part in ("embed", "all"):
        results["embed"] = run_worker({"kind": "embed", "images": args.images}, 3600)
        print(f"embed: {results['embed']}", file=sys.stderr)
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=2))
    print_tables(results)


def print_tables(results: dict) -> None:
    print("\n| data | n | method | wall s | pairs | recall | vs ours | settings |")
    print("|---|---|---|---|---|---|---|---|")
    for name, rows in results.get("join", {}).items():
        ours = rows["systems"].get("lookalike-lsh", {}).get("seconds")
        print(f"| {name} | {rows['n']:,} | numpy exact, 1 process | {rows['numpy_exact_s']} | {rows['exact_pairs']:,} | 1 | | |")
        for system, r in rows["systems"].items():
            if "seconds" not in r:
                what = f"> {r['timeout_s']:.0f} s (stopped)" if "timeout_s" in r else f"failed: {r.get('error', '')[:50]}"
                print(f"| {name} | {rows['n']:,} | {system} | {what} | | | | {_settings(system, r)} |")
                continue
            ratio = f"{r['seconds'] / ours:.1f}x slower" if ours and system != "lookalike-lsh" else ""
            print(f"| {name} | {rows['n']:,} | {system} | {r['seconds']} | {r['pairs']:,} | {r.get('recall', '')} | "
                  f"{ratio} | {_settings(system, r)} |")
    e = results.get("embed")
    if e and "local_s" in e:
        print("\n| images | single process img/s | spark local[2] img/s | spark session start s |")
        print("|---|---|---|---|")
        print(f"| {e['images']} | {e['local_img_s']} | {e['spark_img_s']} | {e['spark_start_s']} |")


def _settings(system: str, r: dict) -> str:
    if system == "lookalike-lsh" and r.get("plan"):
        p = r["plan"]
        return f"{p['n_bands']} bands x {p['n_bits']} bits, {p['compared_pairs']:,} pairs compared"
    m = METHODS[system]
    return ", ".join(f"{k}={v}" for k, v in m.items() if k != "method")


if __name__ == "__main__":
    main()
