import io

import pytest
from conftest import synthetic_image
from fastapi.testclient import TestClient
from PIL import Image

from lookalike import Collection
from lookalike.server import create_app


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


def test_health_stats_and_page(client):
    assert client.get("/healthz").json() == {"status": "ok", "images": 12}
    s = client.get("/api/stats").json()
    assert s["images"] == 12 and s["search_method"] == "exact"
    page = client.get("/")
    assert page.status_code == 200 and "lookalike" in page.text and "app.js" in page.text
    assert client.get("/app.js").status_code == 200
    assert client.get("/docs").status_code == 200


def test_search_by_upload(client):
    r = client.post("/api/search?k=3", files={"image": ("q.png", _png(3), "image/png")})
    assert r.status_code == 200, r.text
    data = r.json()
    assert len(data["results"]) == 3
    top = data["results"][0]
    assert top["name"] == "img_03.png" and top["score"] > 0.99
    assert top["thumb_url"] == f"/api/thumbs/{top['id']}"
    assert client.get(top["thumb_url"]).headers["content-type"] == "image/jpeg"
    img = client.get(top["image_url"])
    assert img.status_code == 200 and Image.open(io.BytesIO(img.content)).size == (160, 120)


def test_search_by_id(client):
    r = client.post("/api/search", json={"id": 5, "k": 4})
    assert r.status_code == 200
    assert r.json()["results"][0]["id"] == 5
    assert client.post("/api/search", json={"id": 999}).status_code == 404
    assert client.post("/api/search", json={"nope": 1}).status_code == 422


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


@pytest.mark.parametrize("url", [
    "/api/images/../../etc/passwd", "/api/images/%2e%2e%2fetc%2fpasswd", "/api/images//etc/passwd",
    "/api/thumbs/..%2F..%2Fetc%2Fpasswd", "/api/images/-1", "/api/thumbs/99999", "/api/images/1.5",
    "/..%2f..%2fetc/passwd", "/%2e%2e/%2e%2e/etc/passwd", "/api/images/%2Fetc%2Fpasswd",
])
def test_traversal_attempts_never_serve_files(client, url):
    r = client.get(url)
    assert r.status_code in (404, 405, 422)
    assert b"root:" not in r.content


def test_duplicates_endpoint(client):
    r = client.get("/api/duplicates?threshold=0.999")
    assert r.status_code == 200 and r.json()["groups"] == []
    assert client.get("/api/duplicates?threshold=7").status_code == 422


def test_empty_collection(tmp_path):
    Collection.create(tmp_path / "empty")
    with TestClient(create_app(tmp_path / "empty")) as c:
        r = c.post("/api/search", json={"id": 0})
        assert r.status_code == 409 and "empty" in r.json()["detail"]
