import io
import math
import threading
import time

import pytest
from conftest import hard_copy_db, synthetic_image
from fastapi.testclient import TestClient
from PIL import Image

from lookalike import Collection
from lookalike.server import create_app
from lookalike.server.guard import allowed_hosts


@pytest.fixture
def client(tmp_path, image_folder):
    Collection.create(tmp_path / "db").index(image_folder)
    app = create_app(tmp_path / "db", max_upload_bytes=200_000)
    with TestClient(app) as c:
        yield c


def _png(seed=3, size=(160, 120)):
    buf = io.BytesIO()
    synthetic_image(seed, size).save(buf, format="PNG")
    return buf.getvalue()


def _poll(c, url, timeout=30):
    deadline = time.time() + timeout
    while True:
        r = c.get(url)
        if r.status_code != 202 or time.time() > deadline:
            return r
        time.sleep(0.05)


def test_health_stats_and_page(client):
    health = client.get("/healthz").json()
    assert health["status"] == "ok" and health["images"] == 12 and isinstance(health["generation"], int)
    s = client.get("/api/stats").json()
    assert s["images"] == 12 and s["search_method"] == "exact"
    about = client.app.state.live.get().describe()  # what `lookalike info` prints
    assert {k: s[k] for k in about if k in s} == {k: v for k, v in about.items() if k in s}
    assert s["profile"] == "balanced" and s["views"] == ["crop", "full"] and s["dba"] is None and s["skipped"] == 0
    assert s["rotations"] == []
    assert s["lsh_recall"] is None and s["dupes_threshold"] == 0.88 and s["max_upload_bytes"] == 200_000
    page = client.get("/")
    assert page.status_code == 200 and "lookalike" in page.text and "/static/app.js" in page.text
    assert client.get("/static/app.js").status_code == 200
    assert client.get("/docs").status_code == 200


def test_search_by_upload(client):
    r = client.post("/api/search?k=3", files={"image": ("q.png", _png(3), "image/png")})
    assert r.status_code == 200, r.text
    data = r.json()
    assert len(data["results"]) == 3
    top = data["results"][0]
    assert top["name"] == "cats/img_03.png" and top["score"] > 0.99, "folder/name: the shortest unique tail"
    assert top["thumb_url"] == f"/api/thumbs/{top['id']}"
    assert client.get(top["thumb_url"]).headers["content-type"] == "image/jpeg"
    img = client.get(top["image_url"])
    assert img.status_code == 200 and Image.open(io.BytesIO(img.content)).size == (160, 120)


def test_search_by_id(client):
    r = client.post("/api/search", json={"id": 5, "k": 4})
    assert r.status_code == 200
    ids = [h["id"] for h in r.json()["results"]]
    assert 5 not in ids and len(ids) == 4, "the query image itself is left out of its results"
    assert client.post("/api/search", json={"id": 999}).status_code == 404
    assert client.post("/api/search", json={"nope": 1}).status_code == 422
    # JSON Schema's integer: a number without a fraction (5.0 is 5)
    r = client.post("/api/search", content=b'{"id": 5.0, "k": 2e0}', headers={"content-type": "application/json"})
    assert r.status_code == 200 and len(r.json()["results"]) == 2 and 5 not in [h["id"] for h in r.json()["results"]]


def test_limits(client):
    big = b"\xff\xd8" + b"0" * 300_000
    r = client.post("/api/search", files={"image": ("big.jpg", big, "image/jpeg")})
    assert r.status_code == 413 and "limit" in r.json()["detail"]
    r = client.post("/api/search", files={"image": ("x.jpg", b"this is text", "image/jpeg")})
    assert r.status_code == 422 and "not an image" in r.json()["detail"]
    r = client.post("/api/search", files={"image": ("t.png", _png()[:200], "image/png")})
    assert r.status_code == 422
    assert client.post("/api/search?k=0", json={"id": 1}).status_code == 422
    assert client.post("/api/search", content=b"raw", headers={"content-type": "text/plain"}).status_code == 415


@pytest.mark.parametrize("body", [
    b'{"id": 1e400}', b'{"id": true}', b'{"id": " 7 "}', b'{"id": 1.9}', b'{"id": null}',
    b'{"id": [1]}', b'{"id": {"a": 1}}', b'{"id": -Infinity}', b'{"id": NaN}', b'{"id": 1, "k": 0}',
    b'{"id": 1, "k": 101}', b'{"id": 1, "k": 2.5}', b'{"id": 1, "k": "3"}', b'{"id": 1, "k": false}',
    b'{"id": 1, "x": 2}', b'[1]', b'"7"', b'7', b'{"id": 1', b'', b'{"id": ' + b"9" * 5000 + b"}",
    b'[' * 100_000 + b']' * 100_000,
])
def test_ids_and_k_must_be_json_integers(client, body):
    r = client.post("/api/search", content=body, headers={"content-type": "application/json"})
    assert r.status_code == 422, (body[:40], r.status_code, r.text)
    assert isinstance(r.json()["detail"], str) and r.json()["detail"]


@pytest.mark.parametrize("query", ["k=abc", "k=1.5", "k=1e400", "k=true", "k=-1", "k=101", "k=%20"])
def test_k_query_is_a_bounded_integer(client, query):
    r = client.post(f"/api/search?{query}", json={"id": 1})
    assert r.status_code == 422 and isinstance(r.json()["detail"], str)


@pytest.mark.parametrize("url", [
    "/api/images/../../etc/passwd", "/api/images/%2e%2e%2fetc%2fpasswd", "/api/images//etc/passwd",
    "/api/thumbs/..%2F..%2Fetc%2Fpasswd", "/api/images/-1", "/api/thumbs/99999", "/api/images/1.5",
    "/..%2f..%2fetc/passwd", "/%2e%2e/%2e%2e/etc/passwd", "/api/images/%2Fetc%2Fpasswd",
    "/static/../../etc/passwd", "/static/..%2f..%2fetc%2fpasswd", "/api/images/1e400",
    "/api/images/99999999999999999999999999999",
])
def test_traversal_attempts_never_serve_files(client, url):
    r = client.get(url)
    assert r.status_code in (404, 405, 422)
    assert b"root:" not in r.content


def test_head_wherever_get(client):
    for url in ["/healthz", "/api/stats", "/api/images/1", "/api/thumbs/1", "/", "/docs", "/openapi.json",
                "/static/app.js", "/static/style.css"]:
        get, head = client.get(url), client.head(url)
        assert get.status_code == 200 and head.status_code == 200, url
        assert head.headers["content-type"] == get.headers["content-type"], url
    assert client.head("/api/images/999").status_code == 404
    assert client.head("/api/duplicates?threshold=0.99").status_code in (200, 202)
    r = client.delete("/api/search")
    assert r.status_code == 405 and r.headers["allow"] == "POST"
    assert set(client.put("/healthz").headers["allow"].split(", ")) == {"GET", "HEAD"}


def test_openapi_documents_bodies_and_errors(client):
    doc = client.get("/openapi.json").json()
    search = doc["paths"]["/api/search"]["post"]
    body = search["requestBody"]["content"]
    assert body["multipart/form-data"]["schema"]["required"] == ["image"]
    assert body["application/json"]["schema"]["properties"]["id"]["type"] == "integer"
    assert {"200", "404", "409", "413", "415", "422", "429"} <= set(search["responses"])
    assert {"200", "404", "410"} <= set(doc["paths"]["/api/images/{image_id}"]["get"]["responses"])
    assert {"200", "202", "422", "429"} <= set(doc["paths"]["/api/duplicates"]["get"]["responses"])
    assert "head" in doc["paths"]["/healthz"]
    ids = [op["operationId"] for ops in doc["paths"].values() for op in ops.values()]
    assert len(ids) == len(set(ids))


def test_host_header_checked_against_the_bound_address(tmp_path, image_folder):
    Collection.create(tmp_path / "db").index(image_folder)
    app = create_app(tmp_path / "db", allowed_hosts=allowed_hosts("127.0.0.1", 8123))
    with TestClient(app) as c:
        for host in ["127.0.0.1:8123", "localhost:8123", "[::1]:8123", "LOCALHOST:8123"]:
            assert c.get("/healthz", headers={"host": host}).status_code == 200, host
        for host in ["evil.example:8123", "evil.example", "127.0.0.1", "127.0.0.1:80", "localhost:8124",
                     "127.0.0.1.evil.example:8123", ""]:
            r = c.get("/healthz", headers={"host": host})
            assert r.status_code == 400 and "Host header" in r.json()["detail"], host
            assert c.post("/api/search", json={"id": 1}, headers={"host": host}).status_code == 400
    assert allowed_hosts("0.0.0.0", 8000) is None
    assert allowed_hosts("192.168.1.5", 8000) == {"192.168.1.5:8000"}
    assert allowed_hosts("photos.local", 80) == {"photos.local:80", "photos.local"}
    assert allowed_hosts("::1", 8000) == {"127.0.0.1:8000", "localhost:8000", "[::1]:8000"}


def test_upload_queue_full_gets_429(tmp_path, image_folder):
    Collection.create(tmp_path / "db").index(image_folder)
    app = create_app(tmp_path / "db", upload_workers=1, upload_queue=1)
    release = threading.Event()
    with TestClient(app) as c:
        blocker = app.state.uploads.submit(lambda: release.wait(30))  # the one slot is taken
        r = c.post("/api/search", files={"image": ("q.png", _png(3), "image/png")})
        assert r.status_code == 429 and r.headers["retry-after"] == "1" and "retry" in r.json()["detail"]
        # id searches need no upload slot
        assert c.post("/api/search", json={"id": 1}).status_code == 200
        release.set()
        blocker.result(timeout=10)
        deadline = time.time() + 5
        while app.state.uploads.pending and time.time() < deadline:
            time.sleep(0.01)
        r = c.post("/api/search?k=2", files={"image": ("q.png", _png(3), "image/png")})
        assert r.status_code == 200 and r.json()["results"][0]["name"] == "cats/img_03.png"


def test_uploads_do_not_block_the_event_loop(tmp_path, image_folder):
    """While an upload is decoded and embedded, /healthz keeps answering at once."""
    Collection.create(tmp_path / "db").index(image_folder)
    app = create_app(tmp_path / "db", upload_workers=1, upload_queue=4)
    started, release = threading.Event(), threading.Event()

    def slow():
        started.set()
        release.wait(30)

    with TestClient(app) as c:
        app.state.uploads.submit(slow)
        assert started.wait(5)
        result = {}
        t = threading.Thread(target=lambda: result.update(
            r=c.post("/api/search", files={"image": ("q.png", _png(3), "image/png")})))
        t.start()
        time.sleep(0.2)
        t0 = time.perf_counter()
        assert c.get("/healthz").status_code == 200
        assert time.perf_counter() - t0 < 1.0
        release.set()
        t.join(30)
        assert result["r"].status_code == 200


def _halfway_gate(monkeypatch, module, name):
    """Replace ``module.name`` (a phase taking a ``progress`` callback) by one that reports half done, then waits
    for the returned event before doing the real work."""
    gate, real = threading.Event(), getattr(module, name)

    def gated(*args, **kwargs):
        kwargs["progress"](0.5)
        gate.wait(30)
        return real(*args, **kwargs)

    monkeypatch.setattr(module, name, gated)
    return gate


def test_duplicates_202_then_paged(dup_db, monkeypatch):
    import lookalike.server.duplicates as sd

    gate = _halfway_gate(monkeypatch, sd, "scan_pairs")
    with TestClient(create_app(dup_db)) as c:
        r = c.get("/api/duplicates?threshold=0.88&limit=2")
        assert r.status_code == 202 and r.headers["retry-after"] == "1"
        # queued (nothing done yet), or running and halfway through the gated scan (its share: before the
        # verification of hard copies, the slow part)
        half = round(sd.SCAN_SHARE * 0.5, 4)
        assert (r.json()["status"], r.json()["progress"]) in (("queued", 0.0), ("running", 0.0), ("running", half))
        assert r.json()["phase"] == "pairs"
        deadline = time.time() + 5
        while c.get("/api/duplicates?threshold=0.88&limit=2").json().get("progress") != half:
            assert time.time() < deadline
            time.sleep(0.02)
        gate.set()
        r = _poll(c, "/api/duplicates?threshold=0.88&limit=2")
        assert r.status_code == 200, r.text
        data = r.json()
        assert data["status"] == "done" and data["total_groups"] == 3 and data["progress"] == 1.0
        assert len(data["groups"]) == 2 and not data["truncated"] and data["pairs"] == 3
        names = sorted(sorted(m["name"].split("/")[-1] for m in g["members"]) for g in data["groups"])
        rest = c.get("/api/duplicates?threshold=0.88&limit=2&offset=2").json()  # cached: 200 at once
        assert rest["status"] == "done" and rest["offset"] == 2 and len(rest["groups"]) == 1
        names += [sorted(m["name"].split("/")[-1] for m in rest["groups"][0]["members"])]
        assert sorted(names) == [[f"copy_{i:02d}.png", n] for i, n in
                                 ((0, "img_00.png"), (1, "img_01.jpg"), (2, "img_02.jpg"))]
        for g in data["groups"] + rest["groups"]:
            keeper = next(m for m in g["members"] if m["keeper"])
            assert keeper["name"].split("/")[-1].startswith("img_")  # most pixels
            assert g["members"][0] is keeper or g["members"][0] == keeper  # the keeper comes first
            assert all(m["name"].count("/") == 1 and m["folder"] in m["path"] for m in g["members"])  # folder/name
            assert keeper["role"] == "keep" and all(m["role"] == "act" for m in g["members"] if m is not keeper)
            assert all(m["size"] > 0 and m["width"] > 0 and m["modified"].startswith("20") for m in g["members"])
        assert c.get("/api/duplicates?threshold=0.88&offset=99").json()["groups"] == []


def test_duplicates_strict_and_bounded(dup_db):
    with TestClient(create_app(dup_db, max_pairs=2)) as c:
        r = _poll(c, "/api/duplicates?threshold=0.88&strict=true")
        assert r.status_code == 200, r.text
        assert r.json()["strict"] is True and r.json()["total_groups"] == 2  # two best pairs of three kept
        assert r.json()["truncated"] is True and r.json()["max_pairs"] == 2
        r = _poll(c, "/api/duplicates?threshold=0.05")
        assert r.status_code == 200 and r.json()["truncated"] and r.json()["pairs"] == 2
        for bad in ["0", "-1", "1.5", "nan", "inf", "abc", "1e400"]:
            r = c.get(f"/api/duplicates?threshold={bad}")
            assert r.status_code == 422 and isinstance(r.json()["detail"], str), bad
        for bad in ["offset=-1", "limit=0", "limit=201", "limit=1.5", "strict=maybe"]:
            assert c.get(f"/api/duplicates?{bad}").status_code == 422, bad


def test_duplicates_strict_several_groups(dup_db):
    """strict=true used to answer 500 (KeyError) whenever there were two groups or more."""
    with TestClient(create_app(dup_db)) as c:
        r = _poll(c, "/api/duplicates?threshold=0.88&strict=true")
        assert r.status_code == 200, r.text
        assert r.json()["total_groups"] == 3 and all(g["size"] == 2 for g in r.json()["groups"])
        assert all(math.isfinite(g["min_score"]) for g in r.json()["groups"])


def test_empty_collection(tmp_path):
    Collection.create(tmp_path / "empty")
    with TestClient(create_app(tmp_path / "empty")) as c:
        r = c.post("/api/search", json={"id": 0})
        assert r.status_code == 409 and "empty" in r.json()["detail"]
        assert _poll(c, "/api/duplicates").json()["total_groups"] == 0


def test_live_collection_keeps_serving_when_a_reopen_fails(tmp_path, image_folder, monkeypatch):
    import lookalike.server.live as live_mod
    from lookalike.collection import CorruptCollectionError

    db = tmp_path / "db"
    Collection.open_or_create(db).index(image_folder)
    live = live_mod.LiveCollection(db, check_interval=3600)  # only refresh() checks here
    old = live.get()
    synthetic_image(77).save(image_folder / "cats" / "new_77.png")
    Collection.open_or_create(db).index(image_folder)
    def racing(*args, **kwargs):
        raise CorruptCollectionError("a commit swapped the files under this open")

    monkeypatch.setattr(live_mod.Collection, "open", racing)
    assert live.refresh() is False
    assert live.get() is old and len(old) == 12 and "swapped" in live.last_error
    monkeypatch.undo()
    assert live.refresh() is True
    assert len(live.get()) == 13 and live.switches == 1 and live.last_error is None
    assert len(old) == 12 and old.search_vectors(old.embeddings[0][None, :], 3)[0][0].id == int(old.ids[0])
    assert live.refresh() is False  # nothing new: no reopen


def test_undecodable_file_names_are_shown_escaped(tmp_path, image_folder):
    """A Latin-1 file name (not UTF-8) is served and shown escaped, never a 500."""
    import os

    synthetic_image(50).save(image_folder / "cats" / os.fsdecode(b"caf\xe9.png"))
    Collection.create(tmp_path / "db").index(image_folder)
    with TestClient(create_app(tmp_path / "db")) as c:
        r = c.post("/api/search?k=1", files={"image": ("q.png", _png(50), "image/png")})
        assert r.status_code == 200, r.text
        top = r.json()["results"][0]
        assert top["name"] == "cats/caf\\xe9.png" and top["path"].endswith("/cats/caf\\xe9.png")
        assert c.get(top["image_url"]).status_code == 200 and c.get(top["thumb_url"]).status_code == 200
        r = c.post("/api/search", json={"id": top["id"], "k": 1})
        assert r.status_code == 200 and r.json()["query"]["name"] == "cats/caf\\xe9.png"
        assert c.post("/api/search", json={"id": 10**30}).status_code == 404


def test_duplicates_recomputed_for_a_new_generation(dup_db, image_folder):
    app = create_app(dup_db, check_interval=3600)  # switched by hand below
    with TestClient(app) as c:
        first = _poll(c, "/api/duplicates?threshold=0.88").json()
        assert first["total_groups"] == 3
        synthetic_image(5).resize((144, 108)).save(image_folder / "cats" / "copy_05.png")
        Collection.open_or_create(dup_db).index(image_folder)
        assert app.state.live.refresh() is True
        assert not app.state.dupes._jobs, "the old generation's results (and its open files) are dropped"
        second = _poll(c, "/api/duplicates?threshold=0.88").json()
        assert second["total_groups"] == 4 and second["generation"] > first["generation"]


@pytest.fixture(scope="module")
def hard_copies(tmp_path_factory):
    return hard_copy_db(tmp_path_factory.mktemp("hard"))


def _names(g):
    return sorted(m["name"].rsplit("/", 1)[-1] for m in g["members"])


def test_duplicates_verify_hard_copies_like_dupes(hard_copies, monkeypatch):
    """The page's groups are lookalike dupes' groups: the copies below the threshold join, marked verified."""
    import lookalike.server.duplicates as sd
    from lookalike import verify as vf
    from lookalike.dupes import review_groups

    db, group = hard_copies
    gate = _halfway_gate(monkeypatch, sd, "verified_pairs")
    with TestClient(create_app(db)) as c:
        half, deadline, seen = round((sd.SCAN_SHARE + sd.VERIFY_SHARE) / 2, 4), time.time() + 30, None
        while seen is None or seen["progress"] != half:  # halfway through the (gated) verification
            assert time.time() < deadline
            r = c.get("/api/duplicates")
            assert r.status_code == 202, r.text
            seen = r.json()
            time.sleep(0.02)
        assert seen["phase"] == "verifying"
        gate.set()
        r = _poll(c, "/api/duplicates")
        assert r.status_code == 200, r.text
        data = r.json()
    assert (data["verified"], data["verify_note"], data["pairs"]) == (True, None, 0)
    assert data["verified_pairs"] >= 1 and data["total_groups"] == 1
    (g,) = data["groups"]
    assert _names(g) == group
    # the keeper is the turned copy (most pixels); the other two verified against it and may be acted on
    assert sorted((m["name"].rsplit("/", 1)[-1], m["role"], m["verified"]) for m in g["members"]) == [
        (group[0], "act", True), ("copy_rotate_20.jpg", "keep", False), ("copy_watermark.jpg", "act", True)]
    assert all(m["score"] < 0.88 for m in g["members"] if not m["keeper"])
    col = Collection.open(db)
    (rg,) = review_groups(col)  # what lookalike dupes reports
    assert sorted(rg.ids) == sorted(g["ids"]) and rg.keeper == g["keeper"]
    assert {m.id: (m.role, m.verified) for m in rg.members} == {m["id"]: (m["role"], m["verified"])
                                                                for m in g["members"]}
    assert vf.plan("auto", len(col)).on


@pytest.mark.parametrize("off", ["no-opencv", "too-many"])
def test_duplicates_without_verification_group_by_the_threshold(hard_copies, monkeypatch, off):
    from lookalike import verify as vf

    if off == "no-opencv":
        import sys

        for name in [m for m in sys.modules if m == "cv2" or m.startswith("cv2.")] + ["cv2"]:
            monkeypatch.setitem(sys.modules, name, None)  # import cv2 fails, as without the verify extra
    else:
        monkeypatch.setattr(vf, "AUTO_MAX_IMAGES", 6)  # the collection has 7 images
    with TestClient(create_app(hard_copies[0])) as c:
        data = _poll(c, "/api/duplicates").json()
    assert (data["status"], data["total_groups"], data["verified"], data["verified_pairs"]) == ("done", 0, False, 0)
    assert ("pip install 'lookalike[verify]'" if off == "no-opencv" else
            "7 images is above the 6 verified by default") in data["verify_note"]
