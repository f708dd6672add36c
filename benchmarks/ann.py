"""Approximate nearest-neighbour benchmark: lookalike's LSH vs exact search and peers (not a test).

    python benchmarks/ann.py --dataset real        # Caltech-101 + CIFAR-10 embeddings (~18.7k)
    python benchmarks/ann.py --dataset synth100k   # synthetic clustered, 100k x 1280
    python benchmarks/ann.py --dataset synth1m     # synthetic clustered, 1M x 1280 (float16)

Each system runs in its own subprocess (so peak memory is its own) on the same vectors and
1,000 held-out queries: build time, peak RSS, single-query p50/p99 latency (500 queries
one at a time), batch QPS (all queries in one call), recall@10 against exact search.
Results go to benchmarks/results/ann-<dataset>.json and a Markdown table on stdout.
Peers (faiss-cpu, hnswlib, datasketch, pyspark) come from the `bench` extra.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
CACHE = HERE / ".cache"
DATA = Path(os.environ.get("LOOKALIKE_DATA", HERE.parent.parent / "shared" / "data"))
N_QUERIES = 1000
N_SINGLE = 500
K = 10


# ------------------------------------------------------------------------- data
def dataset(name: str):
    """(X, Q, truth) cached as .npy under benchmarks/.cache."""
    CACHE.mkdir(exist_ok=True)
    fx, fq, ft = (CACHE / f"{name}-{p}.npy" for p in ("X", "Q", "truth"))
    if not ft.exists():
        X, Q = _make(name)
        from lookalike.search import exact_topk

        truth = exact_topk(X, Q, K)[1]
        np.save(fx, X)
        np.save(fq, Q)
        np.save(ft, truth)
    return np.load(fx, mmap_mode="r"), np.load(fq), np.load(ft)


def _make(name):
    from lookalike.datasets import clustered_vectors

    if name == "synth100k":
        A = clustered_vectors(100_000 + N_QUERIES, 1280, n_clusters=1000, seed=0)
        return A[N_QUERIES:], A[:N_QUERIES]
    if name == "synth1m":
        A = clustered_vectors(1_000_000 + N_QUERIES, 1280, n_clusters=10_000, seed=0, dtype=np.float16)
        return A[N_QUERIES:], A[:N_QUERIES].astype(np.float32)
    if name == "real":
        A = np.concatenate([_embed(DATA / "caltech101"), _embed(DATA / "cifar10_test")])
        perm = np.random.default_rng(0).permutation(len(A))
        return A[perm[N_QUERIES:]], A[perm[:N_QUERIES]]
    raise SystemExit(f"unknown dataset {name}")


def _embed(folder: Path) -> np.ndarray:
    from lookalike import Collection

    db = CACHE / f"collection-{folder.name}"
    col = Collection.open_or_create(db)
    col.index(folder, progress=sys.stderr.isatty())
    return np.asarray(col.embeddings, np.float32)


# ------------------------------------------------------------------------- systems
def run_system(system: str, params: dict, dataset_name: str) -> dict:
    X, Q, truth = dataset(dataset_name)
    t0 = time.perf_counter()
    index, query = build(system, params, X)
    build_s = time.perf_counter() - t0
    slow = system == "mllib-brp" or (system == "exact" and len(X) > 500_000)
    for q in Q[: 2 if slow else 20]:  # warm up
        query(q[None])
    lat = []
    found = []
    n_single = 20 if slow else N_SINGLE  # MLlib takes ~1 s per query, exact at 1M ~0.5 s
    for q in Q[:n_single]:
        t = time.perf_counter()
        ids = query(q[None])
        lat.append(time.perf_counter() - t)
        found.append(ids[0])
    t = time.perf_counter()
    batch_ids = query(Q) if system != "mllib-brp" else np.array(found)
    batch_s = time.perf_counter() - t
    n_batch = len(batch_ids)
    from lookalike.evaluate import recall_at_k

    rec = recall_at_k(np.asarray(batch_ids), truth[:n_batch])
    extra = index.params() if hasattr(index, "params") else {}
    return {"system": system, "params": params, "n": len(X), "build_s": round(build_s, 2),
            "peak_rss_mb": _peak_rss_mb(),
            "p50_ms": round(float(np.percentile(lat, 50)) * 1000, 3),
            "p99_ms": round(float(np.percentile(lat, 99)) * 1000, 3),
            "batch_qps": round(n_batch / batch_s, 1), "recall_at_10": round(rec, 4),
            "tuned": {k: extra.get(k) for k in ("n_tables", "n_bits", "n_probes", "bucket_length", "recall",
                                                 "candidates")} if extra else None}


def _peak_rss_mb() -> int:
    """This process's peak resident memory (VmHWM; ru_maxrss would include the parent's)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return round(int(line.split()[1]) / 1024)
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)


def build(system, params, X):
    if system == "exact":
        from lookalike.search import exact_topk

        Xf = np.ascontiguousarray(X, np.float32) if X.dtype != np.float16 else X
        return None, lambda q: exact_topk(Xf, q, K)[1]
    if system.startswith("lookalike"):
        from lookalike.lsh import LSHIndex

        index = LSHIndex(k=K, dtype="float16" if X.dtype == np.float16 else "float32", **params).fit(X)
        return index, lambda q: index.kneighbors(q, K)[1]
    if system.startswith("faiss-lsh"):
        import faiss

        Xf = np.ascontiguousarray(X, np.float32)
        base = faiss.IndexLSH(X.shape[1], params["nbits"])
        index = faiss.IndexRefineFlat(base)
        index.add(Xf)
        index.k_factor = params["rerank"] / K

        def q(v):
            return index.search(np.ascontiguousarray(v, np.float32), K)[1]

        return None, q
    if system == "hnswlib":
        import hnswlib

        index = hnswlib.Index(space="ip", dim=X.shape[1])
        index.init_index(max_elements=len(X), M=params["M"], ef_construction=params["ef_construction"], random_seed=0)
        index.add_items(np.asarray(X, np.float32), np.arange(len(X)), num_threads=os.cpu_count())
        index.set_ef(params["ef"])
        return None, lambda v: index.knn_query(v, k=K, num_threads=1 if len(v) == 1 else os.cpu_count())[0]
    if system == "datasketch":
        return _datasketch(params, X)
    if system == "mllib-brp":
        return _mllib(params, X)
    raise SystemExit(f"unknown system {system}")


def _datasketch(params, X):
    """Seed 002's method: MinHash of the top-50 dimensions, MinHashLSH, re-rank by cosine."""
    from datasketch import MinHash, MinHashLSH

    top, perm = params["top_dims"], params["num_perm"]
    lsh = MinHashLSH(threshold=params["threshold"], num_perm=perm)

    def mh(v):
        m = MinHash(num_perm=perm, seed=1)
        m.update_batch([str(i).encode() for i in np.argpartition(-v, top - 1)[:top]])
        return m

    with lsh.insertion_session() as session:
        for i, v in enumerate(np.asarray(X, np.float32)):
            session.insert(i, mh(v))

    def q(V):
        out = np.full((len(V), K), -1)
        for j, v in enumerate(V):
            cand = np.fromiter(lsh.query(mh(v)), np.int64)
            if len(cand):
                s = np.asarray(X[cand], np.float32) @ v
                best = cand[np.argsort(-s)[:K]]
                out[j, : len(best)] = best
        return out

    return None, q


def _mllib(params, X):
    """Spark MLlib BucketedRandomProjectionLSH with the seeds' settings, approxNearestNeighbors."""
    from pyspark.ml.feature import BucketedRandomProjectionLSH
    from pyspark.ml.linalg import Vectors
    from pyspark.sql import SparkSession

    spark = (SparkSession.builder.master("local[2]").appName("ann-bench")
             .config("spark.ui.enabled", "false").config("spark.driver.memory", "4g").getOrCreate())
    spark.sparkContext.setLogLevel("ERROR")
    n = params.get("n", 10_000)
    rows = [(i, Vectors.dense(v.astype(float))) for i, v in enumerate(np.asarray(X[:n], np.float32))]
    df = spark.createDataFrame(rows, ["id", "features"]).cache()
    df.count()
    model = BucketedRandomProjectionLSH(inputCol="features", outputCol="hashes", bucketLength=params["bucketLength"],
                                        numHashTables=params["numHashTables"], seed=0).fit(df)
    hashed = model.transform(df).cache()
    hashed.count()

    def q(V):
        out = np.full((len(V), K), -1)
        for j, v in enumerate(V):
            res = model.approxNearestNeighbors(hashed, Vectors.dense(v.astype(float)), K).select("id").collect()
            out[j, : len(res)] = [r.id for r in res]
        return out

    return None, q


SYSTEMS = {
    "exact": {},
    "lookalike-hyperplane": {"family": "hyperplane", "target_recall": 0.95},
    "lookalike-hyperplane-0.9": {"family": "hyperplane", "target_recall": 0.9},
    "lookalike-hyperplane-0.98": {"family": "hyperplane", "target_recall": 0.98},
    "lookalike-brp": {"family": "brp", "target_recall": 0.95},
    "lookalike-minhash": {"family": "minhash", "target_recall": 0.95},
    "faiss-lsh": {"nbits": 256, "rerank": 100},
    "faiss-lsh-r50": {"nbits": 256, "rerank": 50},  # FAISS nearer our recall (equal-recall comparison)
    "faiss-lsh-128": {"nbits": 128, "rerank": 100},
    "hnswlib": {"M": 16, "ef_construction": 100, "ef": 64},
    "datasketch": {"num_perm": 64, "threshold": 0.5, "top_dims": 50},
    "mllib-brp": {"numHashTables": 200, "bucketLength": 2.0, "n": 10_000},
}
DEFAULTS = {
    "real": list(SYSTEMS),
    "synth100k": ["exact", "lookalike-hyperplane", "lookalike-hyperplane-0.9", "lookalike-hyperplane-0.98",
                  "lookalike-brp", "lookalike-minhash", "faiss-lsh", "faiss-lsh-r50", "faiss-lsh-128", "hnswlib"],
    "synth1m": ["exact", "lookalike-hyperplane", "faiss-lsh", "faiss-lsh-r50"],
}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--dataset", default="synth100k", choices=sorted(DEFAULTS))
    ap.add_argument("--systems", default=None, help="comma-separated; default depends on the dataset")
    ap.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:  # inside the subprocess
        sysname = args.worker
        key = sysname if not sysname.startswith("lookalike") else sysname
        params = dict(SYSTEMS[key])
        if sysname.startswith("lookalike-hyperplane"):
            params["family"] = "hyperplane"
        print(json.dumps(run_system(sysname, params, args.dataset)))
        return
    from lookalike.runtime import tune_process

    tune_process()
    dataset(args.dataset)  # build the cache once, outside the timed workers
    systems = args.systems.split(",") if args.systems else DEFAULTS[args.dataset]
    rows = []
    for s in systems:
        t = time.time()
        res = subprocess.run([sys.executable, __file__, "--dataset", args.dataset, "--worker", s],
                             capture_output=True, text=True)
        if res.returncode != 0:
            print(f"{s}: FAILED\n{res.stderr[-2000:]}", file=sys.stderr)
            rows.append({"system": s, "error": res.stderr.strip().splitlines()[-1] if res.stderr else "failed"})
            continue
        rows.append(json.loads(res.stdout.strip().splitlines()[-1]))
        print(f"{s}: {rows[-1]}  ({time.time() - t:.0f} s)", file=sys.stderr, flush=True)
    out = HERE / "results" / f"ann-{args.dataset}.json"
    out.parent.mkdir(exist_ok=True)
    today = time.strftime("%Y-%m-%d")
    for r in rows:
        r["date"] = today
    if args.systems and out.exists():  # a partial re-run keeps the other systems' rows (with their dates)
        old = json.loads(out.read_text())
        ran = {r["system"] for r in rows}
        kept = [{**r, "date": r.get("date", old.get("date"))} for r in old["rows"] if r["system"] not in ran]
        rows = kept + rows
        order = {s: i for i, s in enumerate(SYSTEMS)}
        rows.sort(key=lambda r: order.get(r["system"], len(order)))
    out.write_text(json.dumps({"benchmark": "ann", "dataset": args.dataset, "date": time.strftime("%Y-%m-%d"),
                               "machine": f"{platform.machine()}, {os.cpu_count()} cores", "queries": N_QUERIES,
                               "rows": rows}, indent=2))
    print("\n| system | build s | peak RSS MB | p50 ms | p99 ms | batch QPS | recall@10 | settings |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        if "error" in r:
            print(f"| {r['system']} | failed: {r['error'][:60]} | | | | | | |")
            continue
        tuned = r.get("tuned") or {}
        settings = ", ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in
                             (tuned.items() if tuned else r["params"].items()) if v is not None and k != "recall")
        print(f"| {r['system']} | {r['build_s']} | {r['peak_rss_mb']} | {r['p50_ms']} | {r['p99_ms']} | "
              f"{r['batch_qps']} | {r['recall_at_10']} | {settings} |")


if __name__ == "__main__":
    main()
