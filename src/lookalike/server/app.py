"""FastAPI app: search by upload or by id, images and thumbnails by id, duplicates, stats.

Safety: the collection is opened read-only; no endpoint takes a filesystem path or URL
from the client (images are addressed by their integer id); uploads are capped in bytes
(413) and pixels, and undecodable uploads get 422 with the reason.
"""

from __future__ import annotations

import io
import logging
import threading
from collections import OrderedDict
from pathlib import Path

from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles

from .. import images
from ..collection import Collection

log = logging.getLogger(__name__)

STATIC = Path(__file__).parent / "static"
DEFAULT_MAX_UPLOAD = 20 * 1024 * 1024  # 20 MB
MAX_K = 100
THUMB_SIDE = 256
# Thumbnails kept in memory: 2,000 x ~15 KB JPEG = ~30 MB.
THUMB_CACHE_ITEMS = 2_000
MEDIA_TYPES = {".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".png": "image/png", ".gif": "image/gif",
               ".webp": "image/webp", ".bmp": "image/bmp", ".tif": "image/tiff", ".tiff": "image/tiff"}


class _ThumbCache:
    def __init__(self, size: int):
        self.size, self.items, self.lock = size, OrderedDict(), threading.Lock()

    def get(self, key, make):
        with self.lock:
            if key in self.items:
                self.items.move_to_end(key)
                return self.items[key]
        value = make()
        with self.lock:
            self.items[key] = value
            while len(self.items) > self.size:
                self.items.popitem(last=False)
        return value


def create_app(db: str | Path, *, max_upload_bytes: int = DEFAULT_MAX_UPLOAD,
               max_pixels: int | None = images.DEFAULT_MAX_PIXELS) -> FastAPI:
    """Build the app over the collection at ``db`` (opened read-only once, shared by requests)."""
    col = Collection.open(db, read_only=True)
    app = FastAPI(title="lookalike", version="0.1", description="Find similar images in a collection.")
    thumbs = _ThumbCache(THUMB_CACHE_ITEMS)
    encode_lock = threading.Lock()  # one model call at a time; ORT uses all cores per call

    def hit_json(h):
        return {**h.to_dict(), "name": Path(h.path).name, "image_url": f"/api/images/{h.id}",
                "thumb_url": f"/api/thumbs/{h.id}"}

    def record_or_404(image_id: int) -> dict:
        try:
            return col.record(image_id)
        except KeyError:
            raise HTTPException(404, f"No image with id {image_id} in this collection.") from None

    async def read_capped(request: Request) -> bytes:
        length = request.headers.get("content-length")
        if length and length.isdigit() and int(length) > max_upload_bytes:
            raise HTTPException(413, f"Upload too large: {int(length):,} bytes; the limit is {max_upload_bytes:,}.")
        chunks, total = [], 0
        async for chunk in request.stream():
            total += len(chunk)
            if total > max_upload_bytes:
                raise HTTPException(413, f"Upload too large: over the limit of {max_upload_bytes:,} bytes.")
            chunks.append(chunk)
        return b"".join(chunks)

    @app.get("/healthz")
    def healthz():
        return {"status": "ok", "images": len(col)}

    @app.get("/api/stats")
    def stats():
        m = col.manifest
        lsh = m.get("lsh") or {}
        return {"images": len(col), "skipped": len(col.errors), "encoder": m["encoder"], "dim": m["dim"],
                "engine": m.get("engine", "onnx"), "search_method": col.resolve_method("auto"),
                "lsh_recall": lsh.get("recall") if lsh.get("generation") == m["generation"] else None,
                "max_upload_bytes": max_upload_bytes}

    @app.post("/api/search")
    async def search(request: Request, k: int = 12):
        if not 1 <= k <= MAX_K:
            raise HTTPException(422, f"k must be between 1 and {MAX_K}, got {k}.")
        if len(col) == 0:
            raise HTTPException(409, "The collection is empty; index some images first (lookalike index FOLDER).")
        ctype = request.headers.get("content-type", "")
        body = await read_capped(request)
        if ctype.startswith("application/json"):
            import json

            try:
                payload = json.loads(body or b"{}")
                image_id = int(payload["id"])
                k = int(payload.get("k", k))
            except (ValueError, KeyError, TypeError):
                raise HTTPException(422, 'Expected JSON like {"id": 12, "k": 10}.') from None
            if not 1 <= k <= MAX_K:
                raise HTTPException(422, f"k must be between 1 and {MAX_K}, got {k}.")
            rec = record_or_404(image_id)
            vector = col.embeddings[col.row_of_id(image_id)]
            query = {"id": image_id, "name": Path(rec["path"]).name, "thumb_url": f"/api/thumbs/{image_id}"}
        elif ctype.startswith("multipart/form-data"):
            request._body = body  # starlette parses the form from the cached body
            form = await request.form()
            upload = form.get("image") or form.get("file")
            if upload is None or not hasattr(upload, "read"):
                raise HTTPException(422, "Expected a multipart file field named 'image'.")
            data = await upload.read()
            try:
                decoded = images.decode(data, max_pixels=max_pixels, draft_size=col.encoder.draft_size)
            except images.DecodeError as e:
                raise HTTPException(422, f"Cannot read the uploaded image: {e}") from None
            with encode_lock:
                vector = col.encoder.embed_images([decoded.image])[0]
            query = {"name": getattr(upload, "filename", None) or "upload", "width": decoded.width,
                     "height": decoded.height}
        else:
            raise HTTPException(415, "Send multipart/form-data with an 'image' file, or JSON {\"id\": ...}.")
        method = col.resolve_method("auto")
        hits = col.search_vectors(vector[None, :], k, method=method)[0]
        return {"query": query, "method": method, "results": [hit_json(h) for h in hits]}

    @app.get("/api/images/{image_id}")
    def image(image_id: int):
        rec = record_or_404(image_id)
        path = Path(rec["path"])
        if not path.is_file():
            raise HTTPException(410, f"Image {image_id} is indexed but its file is gone; re-run lookalike index.")
        return FileResponse(path, media_type=MEDIA_TYPES.get(path.suffix.lower(), "application/octet-stream"))

    @app.get("/api/thumbs/{image_id}")
    def thumb(image_id: int):
        rec = record_or_404(image_id)

        def make():
            try:
                dec = images.decode(rec["path"], max_pixels=max_pixels, draft_size=THUMB_SIDE)
            except images.DecodeError:
                return None
            im = dec.image
            im.thumbnail((THUMB_SIDE, THUMB_SIDE))
            buf = io.BytesIO()
            im.save(buf, format="JPEG", quality=85)
            return buf.getvalue()

        data = thumbs.get(image_id, make)
        if data is None:
            raise HTTPException(410, f"Image {image_id} can no longer be read; re-run lookalike index.")
        return Response(data, media_type="image/jpeg", headers={"Cache-Control": "max-age=3600"})

    @app.get("/api/duplicates")
    def duplicates(threshold: float = 0.92, strict: bool = False, limit: int = 200):
        if not 0.0 < threshold <= 1.0:
            raise HTTPException(422, f"threshold must be in (0, 1], got {threshold}.")
        groups = col.duplicates(threshold, strict=strict)
        out = []
        for g in groups[: max(0, limit)]:
            out.append({**g.to_dict(), "members": [
                {"id": i, "name": Path(p).name, "path": p, "thumb_url": f"/api/thumbs/{i}", "keeper": i == g.keeper}
                for i, p in zip(g.ids, g.paths)]})
        return {"threshold": threshold, "groups": out, "total_groups": len(groups)}

    @app.exception_handler(HTTPException)
    async def http_error(request, exc):
        return JSONResponse({"detail": exc.detail}, status_code=exc.status_code)

    app.mount("/", StaticFiles(directory=STATIC, html=True), name="static")
    return app
