"""The attack pass of issue 18 against `lookalike serve` (run through serve_load.py --attacks; not a test).

Each attack gets a fresh server process on 127.0.0.1, so its peak RSS (VmHWM) is its own.
"""

from __future__ import annotations

import io
import json
import os
import platform
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from contextlib import contextmanager
from pathlib import Path

from lookalike.testing import free_port, wait_healthy

HERE = Path(__file__).resolve().parent
MB = 1024 * 1024




def _status_kb(pid: int, key: str) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) / 1024
    return 0.0


@contextmanager
def server(db, env):

    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "lookalike", "serve", "--db", str(db), "--port", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(url, timeout=120, proc=proc)
        yield url, proc
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


class Probe:
    """GET /healthz every 0.2 s in a thread; the worst latency is the server's freeze."""

    def __init__(self, url):
        self.url, self.stop, self.worst, self.n, self.failed = url, threading.Event(), 0.0, 0, 0
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        import httpx

        while not self.stop.is_set():
            t = time.perf_counter()
            try:
                ok = httpx.get(f"{self.url}/healthz", timeout=300).status_code == 200
            except httpx.HTTPError:
                ok = False
            self.worst = max(self.worst, time.perf_counter() - t)
            self.n += 1
            self.failed += not ok
            self.stop.wait(0.2)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        self.thread.join(330)


def _dupes(url, query, deadline_s=900):
    """Time to the first complete answer (polling 202s), its size and status."""
    import httpx

    t0 = time.perf_counter()
    polls = 0
    while True:
        r = httpx.get(f"{url}/api/duplicates?{query}", timeout=deadline_s)
        polls += 1
        if r.status_code != 202 or time.perf_counter() - t0 > deadline_s:
            break
        time.sleep(0.5)
    body = r.json() if r.headers.get("content-type", "").startswith("application/json") else {}
    return {"status": r.status_code, "seconds": round(time.perf_counter() - t0, 2), "bytes": len(r.content),
            "polls": polls, "groups": body.get("total_groups"), "truncated": body.get("truncated")}


def attack_dupes(db, env):
    with server(db, env) as (url, proc):
        rss0 = _status_kb(proc.pid, "VmRSS")
        with Probe(url) as probe:
            res = _dupes(url, "threshold=0.2")
        res |= {"healthz_worst_s": round(probe.worst, 2), "healthz_failed": probe.failed,
                "rss_start_mb": round(rss0), "rss_peak_mb": round(_status_kb(proc.pid, "VmHWM"))}
        res["strict"] = _dupes(url, "threshold=0.9&strict=true")
    return res


def _big_png() -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (9_999, 10_000), (120, 160, 200)).save(buf, format="PNG", optimize=True)
    return buf.getvalue()


def attack_uploads(db, env):
    import httpx

    data = _big_png()
    out = {"png_bytes": len(data)}
    with server(db, env) as (url, proc):
        files = {"image": ("big.png", data, "image/png")}
        httpx.post(f"{url}/api/search", json={"id": 0}, timeout=60)  # warm the id path
        rss0 = _status_kb(proc.pid, "VmRSS")
        with Probe(url) as probe:
            t = time.perf_counter()
            r = httpx.post(f"{url}/api/search", files=files, timeout=300)
            out["one"] = {"status": r.status_code, "seconds": round(time.perf_counter() - t, 2)}
        out["one"] |= {"healthz_worst_s": round(probe.worst, 2), "rss_start_mb": round(rss0),
                       "rss_peak_mb": round(_status_kb(proc.pid, "VmHWM"))}
        statuses = []

        def post():
            try:
                statuses.append(httpx.post(f"{url}/api/search", files=files, timeout=300).status_code)
            except httpx.HTTPError as e:
                statuses.append(type(e).__name__)

        with Probe(url) as probe:
            t = time.perf_counter()
            threads = [threading.Thread(target=post) for _ in range(16)]
            for th in threads:
                th.start()
            for th in threads:
                th.join(600)
            out["sixteen"] = {"seconds": round(time.perf_counter() - t, 2),
                              "statuses": {str(k): statuses.count(k) for k in sorted(set(statuses), key=str)}}
        out["sixteen"] |= {"healthz_worst_s": round(probe.worst, 2),
                           "rss_peak_mb": round(_status_kb(proc.pid, "VmHWM"))}
    return out


def attack_slow_headers(db, env, n=300, wait_s=13):
    with server(db, env) as (url, proc):
        port = int(url.rsplit(":", 1)[1])
        socks = []
        for _ in range(n):
            s = socket.create_connection(("127.0.0.1", port))
            s.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1:%d\r\n" % port)
            socks.append(s)
        time.sleep(wait_s)
        closed = 0
        for s in socks:
            s.setblocking(False)
            try:
                closed += s.recv(1) == b""
            except BlockingIOError:
                pass
            s.close()
        fds = len(os.listdir(f"/proc/{proc.pid}/fd"))
    return {"connections": n, "closed_by_server_after_s": wait_s, "closed": closed, "server_fds_after": fds}


def attack_inputs(db, env):
    import httpx

    out = {}
    with server(db, env) as (url, proc):
        for body in ['{"id": 1e400}', '{"id": true}', '{"id": " 7 "}', '{"id": 1.9}']:
            r = httpx.post(f"{url}/api/search", content=body, headers={"content-type": "application/json"})
            out[f"POST /api/search {body}"] = r.status_code
        out["HEAD /healthz"] = httpx.head(f"{url}/healthz").status_code
        out["GET /healthz Host: rebind.example"] = httpx.get(f"{url}/healthz",
                                                            headers={"host": "rebind.example"}).status_code
        doc = httpx.get(f"{url}/openapi.json").json()
        search = doc["paths"]["/api/search"]["post"]
        out["openapi /api/search requestBody"] = "requestBody" in search
        out["openapi /api/search responses"] = sorted(search["responses"])
        # SIGTERM while a duplicate search runs
        threading.Thread(target=lambda: _quiet_get(f"{url}/api/duplicates?threshold=0.2"), daemon=True).start()
        time.sleep(2)
        t = time.perf_counter()
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
            out["SIGTERM during duplicates: exit s"] = round(time.perf_counter() - t, 2)
        except subprocess.TimeoutExpired:
            out["SIGTERM during duplicates: exit s"] = "> 30 (killed)"
    # a busy port
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        res = subprocess.run([sys.executable, "-m", "lookalike", "serve", "--db", str(db), "--port",
                              str(s.getsockname()[1])],
                             capture_output=True, text=True, timeout=120, env=env)
    out["busy port"] = {"rc": res.returncode, "stderr_lines": len(res.stderr.strip().splitlines()),
                        "traceback": "Traceback" in res.stderr}
    return out


def _quiet_get(url):
    import httpx

    try:
        httpx.get(url, timeout=60)
    except httpx.HTTPError:
        pass


def attack_reindex(db, env):
    """Serve a copy, add one image with another process, see whether and when the server shows it."""
    import httpx

    tmp = Path(tempfile.mkdtemp(prefix="lookalike-attack-"))
    try:
        copy = tmp / "db"
        shutil.copytree(db, copy)
        data = Path(os.environ.get("LOOKALIKE_DATA", HERE.parent.parent / "shared" / "data"))
        photo = next((data / "oxford_flowers17").rglob("*.jpg"))
        with server(copy, env) as (url, _):
            n0 = httpx.get(f"{url}/healthz").json()["images"]
            t = time.perf_counter()
            subprocess.run([sys.executable, "-c", "import sys; from lookalike import Collection; "
                            "Collection.open(sys.argv[1]).add([sys.argv[2]])", str(copy), str(photo)],
                           check=True, env=env, capture_output=True)
            commit_s = time.perf_counter() - t
            seen, statuses = None, set()
            t = time.perf_counter()
            while time.perf_counter() - t < 15:
                h = httpx.get(f"{url}/healthz")
                statuses.add(httpx.post(f"{url}/api/search", json={"id": 0, "k": 5}).status_code)
                if h.status_code == 200 and h.json()["images"] == n0 + 1:
                    seen = round(time.perf_counter() - t, 2)
                    break
                time.sleep(0.1)
        return {"images_before": n0, "add_one_s": round(commit_s, 2), "visible_after_s": seen or "not in 15 s",
                "search_statuses": sorted(statuses)}
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def attacks(args, db, env):
    import httpx

    with server(db, env) as (url, _):
        n = httpx.get(f"{url}/healthz").json()["images"]
    out = HERE / "results" / f"serve-attacks-{args.label}.json"
    result = json.loads(out.read_text()) if args.only and out.exists() else {}
    result |= {"benchmark": "serve_attacks", "label": args.label, "src": args.src or "this tree",
               "date": time.strftime("%Y-%m-%d"), "machine": f"{platform.machine()}, {os.cpu_count()} cores",
               "collection_images": n}
    for name, fn in [("duplicates", attack_dupes), ("uploads", attack_uploads), ("slow_headers", attack_slow_headers),
                     ("inputs", attack_inputs), ("reindex", attack_reindex)]:
        if args.only and name not in args.only.split(","):
            continue
        t = time.perf_counter()
        try:
            result[name] = fn(db, env)
        except Exception as e:  # noqa: BLE001  an attack that breaks the harness is a result too
            result[name] = {"error": f"{type(e).__name__}: {e}"}
        print(f"{name} ({time.perf_counter() - t:.0f} s): {json.dumps(result[name])}", flush=True)
    out.write_text(json.dumps(result, indent=2))
    print(f"wrote {out}")
