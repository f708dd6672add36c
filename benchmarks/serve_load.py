"""Load test of `lookalike serve` on loopback, and the attack pass of issue 18 (not a test).

    python benchmarks/serve_load.py [--clients 32] [--seconds 30] [--abuse] [--commit-during 50]
    python benchmarks/serve_load.py --attacks [--images 2986] [--src OLD/src --label before]

Starts the server in a subprocess on 127.0.0.1 over a collection (by default 600 Caltech-101
images indexed into benchmarks/.cache), then runs N concurrent clients for a fixed time,
mixing image uploads, id searches and thumbnails; with --abuse it also mixes in damaged
uploads, oversized bodies and path-traversal attempts. Reports req/s, p50/p99 latency,
status counts, 5xx (must be 0) and the server's peak RSS; writes benchmarks/results/serve-*.json.
With --commit-during N the server serves a copy of the collection, and a third of the way in
another process adds N more images to it (one commit): the server must switch to the new
generation with no failed request.
With --attacks it runs each attack of issue 18 against a fresh server process (duplicates at
threshold 0.2 while /healthz is probed, strict duplicates, a 100-megapixel PNG upload alone and
16 at once, 300 connections that never finish their headers, malformed ids, HEAD, a foreign
Host header, SIGTERM during a duplicate search, a busy port, and a re-index while serving) and
writes benchmarks/results/serve-attacks-LABEL.json; --src runs the server from another source
tree (e.g. `git archive fa34b84 src | tar -x -C /tmp/old`) for the "before" column.
Traffic goes only to 127.0.0.1; every loop is bounded in time.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import random
import shutil
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import numpy as np

from lookalike.testing import free_port, wait_healthy

HERE = Path(__file__).resolve().parent
DATA = Path(os.environ.get("LOOKALIKE_DATA", HERE.parent.parent / "shared" / "data"))

TRAVERSALS = ["/api/images/../../etc/passwd", "/api/images/%2e%2e%2f%2e%2e%2fetc%2fpasswd",
              "/api/thumbs/..%2F..%2Fetc%2Fpasswd", "/..%2f..%2fetc/passwd", "/api/images/-1",
              "/api/images/%2Fetc%2Fpasswd", "/static/../../etc/passwd"]


def _env(src: str | None) -> dict:
    return {**os.environ, "PYTHONPATH": src} if src else dict(os.environ)


def _collection(n: int, src: str | None = None, label: str = "") -> Path:
    """A collection of n Caltech-101 images (seeded pick), built by the code at ``src`` (default: this one)."""
    db = HERE / ".cache" / (f"serve-db-{n}-{label}" if src else f"serve-db-{n}")
    if not (db / "manifest.json").exists():
        files = sorted((DATA / "caltech101").rglob("*.jpg"))
        pick = np.random.default_rng(0).choice(len(files), n, replace=False)
        listing = db.parent / f"{db.name}.txt"
        db.parent.mkdir(parents=True, exist_ok=True)
        listing.write_text("\n".join(str(files[i]) for i in sorted(pick)))
        subprocess.run([sys.executable, "-c", "import sys; from lookalike import Collection; "
                        "Collection.create(sys.argv[1]).add(open(sys.argv[2]).read().splitlines())",
                        str(db), str(listing)], check=True, env=_env(src))
    return db


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


async def run(args, port, pid, uploads, n_ids):
    import httpx

    lat: dict[str, list[float]] = {}
    status: Counter = Counter()
    unexpected: list[str] = []
    rss = [_rss_mb(pid)]
    deadline = time.monotonic() + args.seconds
    rng = random.Random(0)
    big = b"\xff\xd8" + os.urandom(1024) * (25 * 1024)  # 25 MB > the 20 MB cap

    def pick():
        r = rng.random()
        if args.abuse and r < 0.25:
            return rng.choice(["damaged", "oversized", "traversal", "traversal", "badjson"])
        return "upload" if r < 0.6 else ("id" if r < 0.9 else "thumb")

    async def client(c: httpx.AsyncClient):
        while time.monotonic() < deadline:
            kind = pick()
            t = time.perf_counter()
            try:
                if kind == "upload":
                    name, data = rng.choice(uploads)
                    r = await c.post("/api/search?k=10", files={"image": (name, data, "image/jpeg")})
                    ok = r.status_code == 200
                elif kind == "id":
                    r = await c.post("/api/search", json={"id": rng.randrange(n_ids), "k": 10})
                    ok = r.status_code == 200
                elif kind == "thumb":
                    r = await c.get(f"/api/thumbs/{rng.randrange(n_ids)}")
                    ok = r.status_code == 200
                elif kind == "damaged":
                    name, data = rng.choice(uploads)
                    cut = data[: rng.randrange(10, max(11, len(data) // 2))]
                    r = await c.post("/api/search", files={"image": (name, cut, "image/jpeg")})
                    ok = r.status_code in (200, 422)  # a cut JPEG may still decode
                elif kind == "oversized":
                    r = await c.post("/api/search", files={"image": ("big.jpg", big, "image/jpeg")})
                    ok = r.status_code == 413
                elif kind == "traversal":
                    r = await c.get(rng.choice(TRAVERSALS))
                    ok = r.status_code in (404, 405, 422) and b"root:" not in r.content
                else:
                    r = await c.post("/api/search", content=b"{not json", headers={"content-type": "application/json"})
                    ok = r.status_code == 422
                status[r.status_code] += 1
                if not ok:
                    unexpected.append(f"{kind} -> {r.status_code}")
            except httpx.HTTPError as e:
                status[type(e).__name__] += 1
                unexpected.append(f"{kind} -> {type(e).__name__}")
            lat.setdefault(kind, []).append(time.perf_counter() - t)

    async def sampler():
        while time.monotonic() < deadline:
            rss.append(_rss_mb(pid))
            await asyncio.sleep(0.5)

    limits = httpx.Limits(max_connections=args.clients)
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=60, limits=limits) as c:
        t0 = time.monotonic()
        await asyncio.gather(sampler(), *(client(c) for _ in range(args.clients)))
        wall = time.monotonic() - t0
    return lat, status, unexpected, rss, wall


def _commit_during(args, db: Path, out: dict) -> None:
    """A third of the way into the load test, add images to the served collection from another process."""
    time.sleep(args.seconds / 3)
    files = sorted((DATA / "caltech101").rglob("*.jpg"))[1::89][: args.commit_during]
    t = time.perf_counter()
    res = subprocess.run([sys.executable, "-c", "import sys; from lookalike import Collection; "
                          "Collection.open(sys.argv[1]).add(sys.argv[2:])", str(db), *map(str, files)],
                         capture_output=True, text=True, env=_env(args.src))
    out |= {"seconds": round(time.perf_counter() - t, 2), "rc": res.returncode, "stderr": res.stderr[-300:]}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--clients", type=int, default=32)
    ap.add_argument("--seconds", type=float, default=30)
    ap.add_argument("--images", type=int, default=600)
    ap.add_argument("--abuse", action="store_true")
    ap.add_argument("--attacks", action="store_true", help="run the attack pass instead of the load test")
    ap.add_argument("--src", help="run the server from this source tree (PYTHONPATH), for before/after")
    ap.add_argument("--only", help="comma-separated attacks to run again (merged into the existing results)")
    ap.add_argument("--commit-during", type=int, default=0, metavar="N",
                    help="add N images to the served collection (another process) during the load test")
    ap.add_argument("--label", default="after", help="name of the attack results (serve-attacks-LABEL.json)")
    args = ap.parse_args()
    if args.attacks:
        from serve_attacks import attacks

        return attacks(args, _collection(args.images, args.src, args.label), _env(args.src))
    db = _collection(args.images, args.src, args.label)
    if args.commit_during:
        import tempfile

        tmp = Path(tempfile.mkdtemp(prefix="lookalike-load-"))
        shutil.copytree(db, tmp / "db")
        db = tmp / "db"
    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "lookalike", "serve", "--db", str(db), "--port", str(port)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=_env(args.src))
    try:
        import httpx

        wait_healthy(f"http://127.0.0.1:{port}", timeout=60, proc=server)
        files = sorted((DATA / "caltech101").rglob("*.jpg"))[::97][:40]  # mostly not in the sample
        uploads = [(p.name, p.read_bytes()) for p in files]
        n_ids = int(httpx.get(f"http://127.0.0.1:{port}/api/stats").json()["images"])
        commit = {}
        if args.commit_during:
            commit = {"images": args.commit_during}
            threading.Thread(target=_commit_during, args=(args, db, commit), daemon=True).start()
        lat, status, unexpected, rss, wall = asyncio.run(run(args, port, server.pid, uploads, n_ids))
        if commit:
            commit["served_after"] = int(httpx.get(f"http://127.0.0.1:{port}/api/stats").json()["images"])
    finally:
        server.terminate()
        server.wait(timeout=10)
        if args.commit_during:
            shutil.rmtree(db.parent, ignore_errors=True)
    total = sum(len(v) for v in lat.values())
    all_lat = np.concatenate([np.asarray(v) for v in lat.values()])
    n5xx = sum(v for k, v in status.items() if isinstance(k, int) and k >= 500)
    result = {"benchmark": "serve_load", "date": time.strftime("%Y-%m-%d"),
              "machine": f"{platform.machine()}, {os.cpu_count()} cores", "clients": args.clients,
              "seconds": round(wall, 1), "abuse": args.abuse, "collection_images": n_ids, "requests": total,
              "req_per_s": round(total / wall, 1), "p50_ms": round(float(np.percentile(all_lat, 50)) * 1000, 1),
              "p99_ms": round(float(np.percentile(all_lat, 99)) * 1000, 1),
              "status": {str(k): v for k, v in sorted(status.items(), key=str)}, "5xx": n5xx,
              "unexpected": len(unexpected), "unexpected_examples": unexpected[:10],
              "server_rss_mb_start": round(rss[0]), "server_rss_mb_max": round(max(rss)),
              "server_rss_mb_end": round(rss[-1]), "commit_during": commit or None,
              "per_kind": {k: {"n": len(v), "p50_ms": round(float(np.percentile(v, 50)) * 1000, 1),
                               "p99_ms": round(float(np.percentile(v, 99)) * 1000, 1)} for k, v in lat.items()}}
    label = "" if args.label == "after" and not args.src else f"-{args.label}"
    label += "-commit" if args.commit_during else ""
    out = HERE / "results" / f"serve-{'abuse' if args.abuse else 'normal'}{label}.json"
    out.write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))
    print("\n| mix | clients | s | requests | req/s | p50 ms | p99 ms | 5xx | unexpected | server RSS MB (start/max/end) |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    print(f"| {'with abuse' if args.abuse else 'normal'} | {args.clients} | {result['seconds']} | {total} | "
          f"{result['req_per_s']} | {result['p50_ms']} | {result['p99_ms']} | {n5xx} | {len(unexpected)} | "
          f"{result['server_rss_mb_start']}/{result['server_rss_mb_max']}/{result['server_rss_mb_end']} |")


if __name__ == "__main__":
    main()
