"""The real server in its own process: generation switches, shutdown, port, timeouts, Host, schemathesis."""

import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from contextlib import contextmanager
from pathlib import Path

import httpx
from conftest import synthetic_image

from lookalike import Collection
from lookalike.testing import free_port, wait_healthy


@contextmanager
def serving(db, *, host="127.0.0.1", header_timeout=10.0, body_timeout=30.0, cli=False, token=None):
    """A server process over ``db``; yields (base url, process)."""
    port = free_port()
    if cli:
        cmd = [sys.executable, "-m", "lookalike", "serve", "--db", str(db), "--host", host, "--port", str(port)]
    else:
        cmd = [sys.executable, "-c", "import sys; from lookalike.server import run; "
               "run(sys.argv[1], host=sys.argv[2], port=int(sys.argv[3]), header_timeout=float(sys.argv[4]), "
               "body_timeout=float(sys.argv[5]))", str(db), host, str(port), str(header_timeout), str(body_timeout)]
    env = {k: v for k, v in os.environ.items() if k != "LOOKALIKE_TOKEN"}
    if token:
        env["LOOKALIKE_TOKEN"] = token
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(url, timeout=60, proc=proc)
        yield url, proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def _add_images(folder: Path, seeds):
    for s in seeds:
        synthetic_image(s).save(folder / f"new_{s:03d}.png")


class Hammer:
    """Clients that keep requesting until stopped; every response must have a status in ``ok``."""

    def __init__(self, url, ids, clients=4, ok=(200,)):
        self.url, self.ids, self.stop, self.ok = url, ids, threading.Event(), set(ok)
        self.status: Counter = Counter()
        self.bad: list[str] = []
        self.threads = [threading.Thread(target=self._run, args=(i,), daemon=True) for i in range(clients)]

    def _run(self, n):
        with httpx.Client(base_url=self.url, timeout=30) as c:
            i = n
            while not self.stop.is_set():
                i += 1
                kind = i % 4
                try:
                    if kind == 0:
                        r = c.get("/healthz")
                    elif kind == 1:
                        r = c.get("/api/stats")
                    elif kind == 2:
                        r = c.post("/api/search", json={"id": self.ids[i % len(self.ids)], "k": 5})
                    else:
                        r = c.get(f"/api/thumbs/{self.ids[i % len(self.ids)]}")
                    self.status[r.status_code] += 1
                    if r.status_code not in self.ok:
                        self.bad.append(f"{r.request.method} {r.request.url.path} -> {r.status_code} {r.text[:200]}")
                except httpx.HTTPError as e:
                    self.bad.append(f"{type(e).__name__}: {e}")

    def __enter__(self):
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        for t in self.threads:
            t.join(30)


def _wait_for(url, images, timeout):
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < timeout:
        if httpx.get(f"{url}/healthz", timeout=5).json()["images"] == images:
            return time.perf_counter() - t0
        time.sleep(0.05)
    raise AssertionError(f"the server did not show {images} images within {timeout} s")


def test_server_follows_new_generations_under_load(tmp_path, image_folder):
    db = tmp_path / "db"
    Collection.open_or_create(db).index(image_folder)
    with serving(db) as (url, _):
        ids = list(range(12))
        with Hammer(url, ids) as hammer:
            time.sleep(0.5)
            _add_images(image_folder / "cats", [101, 102, 103])
            Collection.open_or_create(db).index(image_folder)  # another writer, same process tree
            seen = _wait_for(url, 15, timeout=5)
            time.sleep(0.3)
        assert seen <= 2.5, f"new generation visible after {seen:.2f} s"  # checks once a second, then reopens
        assert not hammer.bad, hammer.bad[:5]
        assert hammer.status[200] > 20
        r = httpx.post(f"{url}/api/search", json={"id": 12, "k": 3})  # a new image, by id
        assert r.status_code == 200 and r.json()["query"]["name"].split("/")[-1].startswith("new_")
        # --rebuild: a new collection in the same folder replaces the old one
        other = tmp_path / "other"
        other.mkdir()
        _add_images(other, [201, 202, 203, 204])
        # the rebuild commits an empty collection first, then the new images: 409 / 404 meanwhile
        with Hammer(url, [0, 1, 2, 3], ok=(200, 404, 409)) as hammer:
            Collection.create(db, overwrite=True).index(other)
            seen = _wait_for(url, 4, timeout=5)
            time.sleep(0.3)
        assert seen <= 2.5
        assert not hammer.bad, hammer.bad[:5]
        names = {httpx.post(f"{url}/api/search", json={"id": i, "k": 1}).json()["query"]["name"].split("/")[-1]
                 for i in range(4)}
        assert names == {f"new_{s:03d}.png" for s in (201, 202, 203, 204)}


def test_sigterm_stops_within_5_seconds(tmp_path, image_folder):
    db = tmp_path / "db"
    Collection.open_or_create(db).index(image_folder)
    with serving(db) as (url, proc):
        port = int(url.rsplit(":", 1)[1])
        idle = socket.create_connection(("127.0.0.1", port))  # a client that never finishes its headers
        idle.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        kept = httpx.Client(base_url=url)  # and a kept-alive one
        assert kept.get("/healthz").status_code == 200
        httpx.get(f"{url}/api/duplicates?threshold=0.1")  # a duplicate job running in the background
        t0 = time.perf_counter()
        proc.send_signal(signal.SIGTERM)
        proc.wait(10)
        took = time.perf_counter() - t0
        idle.close()
        kept.close()
    assert took < 5.5, f"SIGTERM took {took:.1f} s"


def test_busy_port_is_one_line_and_non_zero(tmp_path, image_folder):
    db = tmp_path / "db"
    Collection.open_or_create(db).index(image_folder)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        res = subprocess.run([sys.executable, "-m", "lookalike", "serve", "--db", str(db), "--port", str(port)],
                             capture_output=True, text=True, timeout=60)
    assert res.returncode != 0
    assert "Traceback" not in res.stderr and "already in use" in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1, res.stderr


def test_headers_deadline_and_host_check(tmp_path, image_folder):
    db = tmp_path / "db"
    Collection.open_or_create(db).index(image_folder)
    with serving(db, header_timeout=1.0, body_timeout=1.0) as (url, _):
        port = int(url.rsplit(":", 1)[1])
        with socket.create_connection(("127.0.0.1", port), timeout=10) as slow:
            slow.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nX-Slow: 1" % port)
            t0 = time.perf_counter()
            assert slow.recv(1024) == b""  # closed by the server
            assert time.perf_counter() - t0 < 5
        with socket.create_connection(("127.0.0.1", port), timeout=10) as silent:  # never sends a byte
            t0 = time.perf_counter()
            assert silent.recv(1024) == b""
            assert time.perf_counter() - t0 < 5
        assert httpx.get(f"{url}/healthz").status_code == 200
        assert httpx.get(f"{url}/healthz", headers={"host": f"localhost:{port}"}).status_code == 200
        r = httpx.get(f"{url}/healthz", headers={"host": "rebind.attacker.example"})
        assert r.status_code == 400 and "Host header" in r.json()["detail"]
        with socket.create_connection(("127.0.0.1", port), timeout=10) as trickle:  # a body that never ends
            trickle.sendall(b"POST /api/search HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nContent-Type: application/json\r\n"
                            b"Content-Length: 100\r\n\r\n{\"id\": " % port)
            t0 = time.perf_counter()
            answer = trickle.recv(4096)
            while b"did not arrive" not in answer and (more := trickle.recv(4096)):  # headers and body may come apart
                answer += more
            assert answer.startswith(b"HTTP/1.1 408") and b"did not arrive" in answer
            assert time.perf_counter() - t0 < 5
        with socket.create_connection(("127.0.0.1", port), timeout=10) as endless:  # headers that never end
            endless.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nX-Big: " % port + b"a" * 40_000)
            assert endless.recv(1024).startswith(b"HTTP/1.1 400")  # not buffered past 16 KiB


def test_non_loopback_host_needs_a_token_and_warns(tmp_path, image_folder):
    db = tmp_path / "db"
    Collection.open_or_create(db).index(image_folder)
    env = {k: v for k, v in os.environ.items() if k != "LOOKALIKE_TOKEN"}
    refused = subprocess.run([sys.executable, "-m", "lookalike", "serve", "--db", str(db), "--host", "0.0.0.0",
                              "--port", str(free_port())], capture_output=True, text=True, timeout=60, env=env)
    assert refused.returncode != 0 and "--token" in refused.stderr and "Traceback" not in refused.stderr
    with serving(db, host="0.0.0.0", cli=True, token="a-token-of-16-chars-or-more") as (url, proc):
        assert httpx.get(f"{url}/healthz").status_code == 200
        proc.send_signal(signal.SIGTERM)
        stdout, stderr = proc.communicate(timeout=10)
    assert "WARNING" in stderr and "EVERY photo" in stderr and "absolute path" in stderr
    assert "a-token-of-16" not in stdout + stderr, "a token given is never printed"


def test_generated_token_is_printed_in_the_page_url(tmp_path, image_folder):
    db = tmp_path / "db"
    Collection.open_or_create(db).index(image_folder)
    with serving(db, cli=True) as (url, proc):
        proc.send_signal(signal.SIGTERM)
        stdout, _ = proc.communicate(timeout=10)
    line = next(x for x in stdout.splitlines() if "#token=" in x)
    token = line.split("#token=", 1)[1].split()[0]
    assert len(token) >= 40 and "moves are off" in line


SCHEMATHESIS_CONFIG = """\
# A schema-valid multipart body is any bytes in the 'image' field; random bytes are not an image,
# so the server answers 422 (or 413 above the cap). The schema cannot say "a decodable image".
[checks.positive_data_acceptance]
expected-statuses = ["2xx", "401", "403", "404", "409", "410", "413", "422", "423", "429"]
"""


def test_schemathesis_all_checks(tmp_path, image_folder):
    db = tmp_path / "db"
    synthetic_image(0).resize((144, 108)).save(image_folder / "dogs" / "copy_00.png")
    Collection.open_or_create(db).index(image_folder)
    config = tmp_path / "schemathesis.toml"
    config.write_text(SCHEMATHESIS_CONFIG)
    st = shutil.which("st", path=str(Path(sys.executable).parent)) or shutil.which("st")
    assert st, "schemathesis (the dev extra) is not installed"
    token = "schemathesis-token-0123456789"  # actions checked with and without it; no --move-to: nothing moves
    with serving(db, token=token) as (url, proc):
        t0 = time.perf_counter()
        res = subprocess.run([st, "--config-file", str(config), "run", f"{url}/openapi.json", "--checks", "all",
                              "-H", f"Authorization: Bearer {token}",
                              "--max-examples", "10", "--seed", "1", "--no-color", "--generation-database", "none",
                              "--request-timeout", "20"],
                             capture_output=True, text=True, timeout=240, env={**os.environ, "NO_COLOR": "1"},
                             cwd=tmp_path)  # schemathesis writes a .schemathesis/ cache in its working folder
        took = time.perf_counter() - t0
        assert proc.poll() is None, "the server died"
    assert res.returncode == 0, res.stdout[-6000:] + res.stderr[-2000:]
    assert took < 120
    if "No issues found" not in res.stdout:
        # plan and apply take ids of this collection, and moves are off here (no --move-to): a schema-valid body
        # gets 403 or 422, which a schema cannot rule out ("validation mismatch"). Any other warning fails.
        warnings = res.stdout.split("WARNINGS ===", 1)[1].split("=== SUMMARY", 1)[0]
        listed = sorted(line.strip() for line in warnings.splitlines() if line.strip().startswith("- "))
        assert listed == ["- POST /api/actions/apply", "- POST /api/actions/plan"], res.stdout[-3000:]
        assert "validation mismatch" in warnings and warnings.count("💡") == 1, warnings
