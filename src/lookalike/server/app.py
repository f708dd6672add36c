"""FastAPI app: search by upload or by id, images and thumbnails by id, duplicates, stats.

Safety: the collection is opened read-only; no endpoint takes a filesystem path or URL from the
client (images are addressed by their integer id); uploads are capped in bytes (413) and pixels,
decoded and embedded on worker threads behind a bounded queue (429 when full), and undecodable
uploads get 422 with the reason. Ids and ``k`` must be JSON integers (422 otherwise). Every
GET also answers HEAD. The server follows new generations of the collection (see ``live``).
"""

from __future__ import annotations

import asyncio
import io
import json
import math
import threading
from collections import OrderedDict
from pathlib import Path

import numpy as np
from fastapi import FastAPI, HTTPException, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from .. import images
from ..collection import display
from ..dupes import DEFAULT_THRESHOLD
from ..names import short_names
from . import schemas
from .acting import add_action_routes, check_move_to
from .duplicates import MAX_PAIRS, DuplicateJobs
from .guard import HostCheck
from .live import CHECK_INTERVAL_S, LiveCollection
from .schemas import MAX_K, errors
from .uploads import UPLOAD_QUEUE, UPLOAD_WORKERS, EmbedQueue, QueueFull

STATIC = Path(__file__).parent / "static"
DEFAULT_MAX_UPLOAD = 20 * 1024 * 1024  # 20 MB
# A request body must arrive within this many seconds (408 after): a client trickling its body
# would otherwise hold a connection slot of the 128 for ever. 20 MB in 30 s needs ~5 Mbit/s.
BODY_TIMEOUT_S = 30.0
THUMB_SIDE = 256
# Thumbnails kept in memory: 2,000 x ~15 KB JPEG = ~30 MB.
THUMB_CACHE_ITEMS = 2_000
# Thumbnails decoded at once (each decode of a 100-megapixel PNG takes ~300 MB).
THUMB_WORKERS = 4
# Duplicate groups per page, and members and pairs shown per group (a group may hold thousands).
MAX_GROUPS_PAGE = 200
MAX_GROUP_MEMBERS = 200
MAX_GROUP_PAIRS = 50
# Images per page of /api/images (each is a thumbnail the page then asks for).
MAX_BROWSE = 200
MEDIA_TYPES = {".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".png": "image/png", ".gif": "image/gif",
               ".webp": "image/webp", ".bmp": "image/bmp", ".tif": "image/tiff", ".tiff": "image/tiff"}
GET_HEAD = ["GET", "HEAD"]
# What /api/stats takes of the collection's description (collection.describe); no filesystem path.
STATS_FIELDS = ("images", "skipped", "encoder", "profile", "views", "dim", "engine", "int8_calibration",
                "search_method", "generation", "segments", "dba", "rotations")


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


def _json_id_query(body: bytes, k: int) -> tuple[int, int]:
    """``(id, k)`` from a JSON body ``{"id": 12, "k": 10}``; 422 unless both are JSON integers."""
    try:
        payload = json.loads(body)
    except (ValueError, RecursionError):
        raise HTTPException(422, 'The body is not valid JSON; expected {"id": 12, "k": 10}.') from None
    if not isinstance(payload, dict) or "id" not in payload:
        raise HTTPException(422, 'Expected a JSON object like {"id": 12, "k": 10} ("k" optional).')
    extra = sorted(set(payload) - {"id", "k"})
    if extra:
        raise HTTPException(422, f"Unknown fields {extra}; expected only 'id' and 'k'.")

    def integer(name, value):
        # JSON Schema's "integer" is any number with no fraction (5 and 5.0); true, "7", 1.9 and
        # 1e400 (infinite) are not ones. bool is an int subclass in Python, hence the exact type test.
        if type(value) is float and math.isfinite(value) and value.is_integer() and abs(value) < 2**63:
            return int(value)
        if type(value) is not int:
            raise HTTPException(422, f"{name} must be a JSON integer, got {json.dumps(value)[:40]}.")
        return value

    image_id = integer("id", payload["id"])
    if "k" in payload:
        k = integer("k", payload["k"])
        if not 1 <= k <= MAX_K:
            raise HTTPException(422, f"k must be between 1 and {MAX_K}, got {k}.")
    return image_id, k


def _groups_json(col, page, threshold: float, verified=frozenset()) -> list[dict]:
    """One page of groups, each member with its facts, score and role against the keeper (see ``actions``).

    ``verified``: the id pairs the duplicate search verified (nothing is checked here).
    """
    from datetime import datetime, timezone

    from ..actions import chosen_groups

    choices = []
    for g in page:
        ids = g.ids[:MAX_GROUP_MEMBERS]
        choices.append((g.keeper, [i for i in ids if i != g.keeper]))
    out = []
    for g, rg in zip(page, chosen_groups(col, choices, threshold, verified=verified, check=False)):
        names = short_names([m.path for m in rg.members])

        def member(m, name):
            modified = datetime.fromtimestamp(m.mtime_ns / 1e9, timezone.utc).isoformat(timespec="seconds")
            return {"id": m.id, "name": name, "path": display(m.path), "thumb_url": f"/api/thumbs/{m.id}",
                    "image_url": f"/api/images/{m.id}", "keeper": m.role == "keep", "size": m.size,
                    "width": m.width, "height": m.height, "modified": modified, "folder": display(m.folder),
                    "score": round(m.score, 6), "identical": m.identical, "role": m.role, "verified": m.verified}

        members = sorted((member(m, n) for m, n in zip(rg.members, names)), key=lambda m: not m["keeper"])
        out.append({"ids": g.ids[:MAX_GROUP_MEMBERS], "size": len(g.ids), "keeper": g.keeper,
                    "min_score": g.min_score, "pair_count": len(g.pairs),
                    "pairs": [list(p) for p in g.pairs[:MAX_GROUP_PAIRS]], "members": members})
    return out


def create_app(db: str | Path, *, max_upload_bytes: int = DEFAULT_MAX_UPLOAD,
               max_pixels: int | None = images.DEFAULT_MAX_PIXELS, allowed_hosts: set[str] | None = None,
               upload_workers: int = UPLOAD_WORKERS, upload_queue: int = UPLOAD_QUEUE, max_pairs: int = MAX_PAIRS,
               check_interval: float = CHECK_INTERVAL_S, body_timeout: float = BODY_TIMEOUT_S,
               token: str | None = None, read_only: bool = False, move_to: str | Path | None = None) -> FastAPI:
    """Build the app over the collection at ``db`` (opened read-only; new generations followed).

    Parameters
    ----------
    db : path
    max_upload_bytes : int
        Larger uploads get 413.
    max_pixels : int or None
        Larger images get 422 (decompression bombs).
    allowed_hosts : set of str, optional
        ``Host`` header values answered (others get 400); None answers any (see
        :func:`lookalike.server.guard.allowed_hosts`, which :func:`lookalike.server.run` uses).
    upload_workers, upload_queue : int
        Threads decoding and embedding uploads, and uploads pending at once (one more: 429).
    max_pairs : int
        Duplicate pairs kept per ``/api/duplicates`` computation (the best; ``truncated`` says so).
    check_interval : float
        Seconds between two checks for a new generation of the collection.
    body_timeout : float
        Seconds a request body may take to arrive (408 after).
    token : str, optional
        The bearer token the acting endpoints require (see :mod:`lookalike.server.acting`);
        None turns actions off.
    read_only : bool, default False
        Turns every action off, token or not.
    move_to : path, optional
        The folder duplicates are moved to (fixed here, never taken from a request); None
        turns moves off. ValueError if it is inside the collection folder.
    """
    live = LiveCollection(db, check_interval=check_interval)
    uploads = EmbedQueue(workers=upload_workers, max_pending=upload_queue)
    move_to = check_move_to(db, move_to)
    dupes = DuplicateJobs(max_pairs=max_pairs, exclude_under=str(move_to) if move_to else None)
    live.on_switch.append(dupes.forget_others)  # old generations' results must not keep their files open
    app = FastAPI(title="lookalike", version="0.2", description="Find similar images in a collection.",
                  docs_url=None, redoc_url=None, openapi_url=None)
    app.state.live, app.state.uploads, app.state.dupes = live, uploads, dupes
    thumbs = _ThumbCache(THUMB_CACHE_ITEMS)
    thumb_slots = threading.BoundedSemaphore(THUMB_WORKERS)

    def hit_json(h, name):  # file names are data: undecodable bytes shown escaped (display), never a 500
        return {**h.to_dict(), "path": display(h.path), "label": display(h.label) if h.label else h.label,
                "name": name, "image_url": f"/api/images/{h.id}", "thumb_url": f"/api/thumbs/{h.id}"}

    def record_or_404(col, image_id: int) -> dict:
        try:
            return col.record(image_id)
        except (KeyError, OverflowError):
            raise HTTPException(404, f"No image with id {image_id} in this collection.") from None

    async def read_capped(request: Request) -> bytes:
        length = request.headers.get("content-length")
        if length and length.isdigit() and int(length) > max_upload_bytes:
            raise HTTPException(413, f"Upload too large: {int(length):,} bytes; the limit is {max_upload_bytes:,}.")
        chunks, total = [], 0
        try:
            async with asyncio.timeout(body_timeout):
                async for chunk in request.stream():
                    total += len(chunk)
                    if total > max_upload_bytes:
                        raise HTTPException(413, f"Upload too large: over the limit of {max_upload_bytes:,} bytes.")
                    chunks.append(chunk)
        except TimeoutError:
            raise HTTPException(408, f"The request body did not arrive within {body_timeout:g} s.",
                                headers={"Connection": "close"}) from None
        return b"".join(chunks)

    @app.api_route("/healthz", methods=GET_HEAD, response_model=schemas.Health)
    async def healthz():
        """Liveness, the number of images and the generation being served."""
        col = live.get()
        return {"status": "ok", "images": len(col), "generation": col.manifest["generation"]}

    @app.api_route("/api/stats", methods=GET_HEAD, response_model=schemas.Stats)
    async def stats():
        """The collection being served (as ``lookalike info`` describes it) and this server's limits."""
        about = live.get().describe()
        return {**{key: about[key] for key in STATS_FIELDS}, "lsh_recall": (about["lsh"] or {}).get("recall"),
                "max_upload_bytes": max_upload_bytes, "dupes_threshold": DEFAULT_THRESHOLD}

    @app.post("/api/search", response_model=schemas.SearchOut, openapi_extra=schemas.SEARCH_BODY,
              responses=errors(404, 408, 409, 413, 415, 422, 429))
    async def search(request: Request, k: int = Query(12, ge=1, le=MAX_K, description="Results wanted")):
        """The k most similar images to an uploaded image, or to an indexed image given by id."""
        col = live.get()
        ctype = request.headers.get("content-type", "")
        is_json, is_form = ctype.startswith("application/json"), ctype.startswith("multipart/form-data")
        if not (is_json or is_form):
            raise HTTPException(415, "Send multipart/form-data with an 'image' file, or JSON {\"id\": ...}.")
        body = await read_capped(request)
        if len(col) == 0:
            raise HTTPException(409, "The collection is empty; index some images first (lookalike index FOLDER).")
        if is_json:
            image_id, k = _json_id_query(body, k)
            rec = record_or_404(col, image_id)
            self_row = col.row_of_id(image_id)
            vector = col.embeddings[self_row]
            query = {"id": image_id, "name": display(Path(rec["path"]).name), "thumb_url": f"/api/thumbs/{image_id}",
                     "path": display(rec["path"])}
        else:
            request._body = body  # starlette parses the form from the cached body
            try:
                form = await request.form(max_files=2, max_fields=10)
            except Exception as err:  # noqa: BLE001  python-multipart's errors for a malformed body
                raise HTTPException(422, f"Cannot parse the multipart body: {getattr(err, 'detail', err)}") from None
            upload = form.get("image") or form.get("file")
            if upload is None or not hasattr(upload, "read"):
                raise HTTPException(422, "Expected a multipart file field named 'image'.")
            data = await upload.read()

            def embed():
                enc = live.encoder()
                decoded = images.decode(data, max_pixels=max_pixels, draft_size=enc.draft_size)
                with uploads.model_lock:
                    return decoded, enc.embed_images([decoded.image])[0]

            try:
                decoded, vector = await asyncio.wrap_future(uploads.submit(embed))
            except QueueFull as err:
                raise HTTPException(429, str(err), headers={"Retry-After": "1"}) from None
            except images.DecodeError as e:
                raise HTTPException(422, f"Cannot read the uploaded image: {e}") from None
            query = {"name": getattr(upload, "filename", None) or "upload", "width": decoded.width,
                     "height": decoded.height}

        def rank():  # an indexed image is left out of its own results: no card wasted on the query
            method = col.resolve_method("auto")
            exclude = np.array([self_row], np.int64) if is_json else None
            return method, col.search_vectors(vector[None, :], k, method=method, exclude_rows=exclude)[0]

        method, hits = await run_in_threadpool(rank)
        names = short_names([h.path for h in hits] + ([rec["path"]] if is_json else []))
        if is_json:
            query["name"] = names[-1]
        return {"query": query, "method": method, "results": [hit_json(h, n) for h, n in zip(hits, names)]}

    @app.api_route("/api/images", methods=GET_HEAD, response_model=schemas.ImagesOut, responses=errors(422))
    def browse(offset: int = Query(0, ge=0, le=2**62, description="Images to skip (index order)"),
               limit: int = Query(48, ge=1, le=MAX_BROWSE, description="Images per page")):
        """One page of the collection's images, in index order: the start page's browsing."""
        col = live.get()
        cols = col.metadata_columns()
        ids, paths = cols["id"][offset : offset + limit].tolist(), cols["path"][offset : offset + limit].tolist()
        return {"total": len(col), "offset": offset, "limit": limit,
                "images": [{"id": i, "name": n, "path": display(p), "thumb_url": f"/api/thumbs/{i}",
                            "image_url": f"/api/images/{i}"} for i, p, n in zip(ids, paths, short_names(paths))]}

    image_content = {mt: schemas.IMAGE_BINARY for mt in sorted(set(MEDIA_TYPES.values()))}
    image_content["application/octet-stream"] = schemas.IMAGE_BINARY

    @app.api_route("/api/images/{image_id}", methods=GET_HEAD, response_class=FileResponse,
                   responses={200: {"content": image_content, "description": "The indexed file"},
                              **errors(404, 410, 422)})
    def image(image_id: int):
        """The original file of an indexed image."""
        rec = record_or_404(live.get(), image_id)
        path = Path(rec["path"])
        if not path.is_file():
            raise HTTPException(410, f"Image {image_id} is indexed but its file is gone; re-run lookalike index.")
        return FileResponse(path, media_type=MEDIA_TYPES.get(path.suffix.lower(), "application/octet-stream"))

    @app.api_route("/api/thumbs/{image_id}", methods=GET_HEAD, response_class=Response,
                   responses={200: {"content": {"image/jpeg": schemas.IMAGE_BINARY}, "description": "A JPEG"},
                              **errors(404, 410, 422)})
    def thumb(image_id: int):
        """A JPEG thumbnail (at most 256 px a side) of an indexed image."""
        rec = record_or_404(live.get(), image_id)

        def make():
            with thumb_slots:
                try:
                    dec = images.decode(rec["path"], max_pixels=max_pixels, draft_size=THUMB_SIDE)
                except images.DecodeError:
                    return None
            im = dec.image
            im.thumbnail((THUMB_SIDE, THUMB_SIDE))
            buf = io.BytesIO()
            im.save(buf, format="JPEG", quality=85)
            return buf.getvalue()

        data = thumbs.get((image_id, rec["path"], rec.get("mtime_ns")), make)
        if data is None:
            raise HTTPException(410, f"Image {image_id} can no longer be read; re-run lookalike index.")
        return Response(data, media_type="image/jpeg", headers={"Cache-Control": "max-age=3600"})

    @app.api_route("/api/duplicates", methods=GET_HEAD, response_model=schemas.DuplicatesDone,
                   responses={202: {"model": schemas.DuplicatesRunning, "description": "Still computing"},
                              **errors(422, 429, 503)})
    async def duplicates(threshold: float = Query(DEFAULT_THRESHOLD, gt=0.0, le=1.0, description="Cosine similarity"),
                         strict: bool = Query(False, description="Groups in which every pair passes"),
                         offset: int = Query(0, ge=0, description="Groups to skip"),
                         limit: int = Query(50, ge=1, le=MAX_GROUPS_PAGE, description="Groups per page")):
        """Near-duplicate groups, computed once per generation in the background (202 with progress first).

        As ``lookalike dupes`` does by default, hard copies below the threshold are verified with local
        features (when OpenCV is installed and the collection is not too large; ``verify_note`` says why
        not) and join the groups.
        """
        col = live.get()
        try:
            job = dupes.get(col, threshold, strict)
        except QueueFull as err:
            raise HTTPException(429, str(err), headers={"Retry-After": "2"}) from None
        head = {"threshold": job.threshold, "strict": job.strict, "generation": col.manifest["generation"],
                "progress": job.progress}
        if job.state in ("queued", "running"):
            return JSONResponse({"status": job.state, **head, "phase": job.phase}, status_code=202,
                                headers={"Retry-After": "1"})
        if job.state == "failed":
            raise HTTPException(503, f"The duplicate search failed ({job.error}); ask again to retry.")
        page = job.groups[offset : offset + limit]
        groups = await run_in_threadpool(_groups_json, col, page, job.threshold, job.verified)
        return {"status": "done", **head, "total_groups": len(job.groups), "offset": offset, "limit": limit,
                "groups": groups, "pairs": job.pairs, "truncated": job.truncated,
                "max_pairs": dupes.max_pairs, "verified": job.verify, "verify_note": job.verify_note,
                "verified_pairs": job.verified_pairs, "seconds": job.seconds}

    @app.api_route("/", methods=GET_HEAD, include_in_schema=False)
    def page():
        return FileResponse(STATIC / "index.html", media_type="text/html")

    @app.api_route("/openapi.json", methods=GET_HEAD, include_in_schema=False)
    def openapi_json():
        return JSONResponse(app.openapi())

    @app.api_route("/docs", methods=GET_HEAD, include_in_schema=False)
    def docs():  # Swagger UI is not shipped with fastapi: this page lists the API offline, Swagger UI on request
        return FileResponse(STATIC / "docs.html", media_type="text/html")

    add_action_routes(app, db=db, live=live, dupes=dupes, token=token, read_only=read_only, move_to=move_to)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    def openapi():
        if app.openapi_schema is None:
            import warnings

            from fastapi.openapi.utils import get_openapi

            with warnings.catch_warnings():  # "Duplicate Operation ID": GET and HEAD routes share one; renamed below
                warnings.simplefilter("ignore", UserWarning)
                doc = get_openapi(title=app.title, version=app.version, description=app.description,
                                  routes=app.routes)
            for ops in doc["paths"].values():  # GET and HEAD share a route: give each its own id
                for method, op in ops.items():
                    op["operationId"] = f"{op['operationId'].rsplit('_', 1)[0]}_{method}"
            app.openapi_schema = doc
        return app.openapi_schema

    app.openapi = openapi

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request, exc):
        return JSONResponse({"detail": str(exc.detail)}, status_code=exc.status_code, headers=exc.headers)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request, exc):
        parts = []
        for e in exc.errors():
            where = ".".join(str(x) for x in e.get("loc", ()) if x not in ("query", "path", "body"))
            parts.append(f"{where}: {e.get('msg')} (got {str(e.get('input'))[:40]!r})")
        return JSONResponse({"detail": "; ".join(parts) or "Invalid request."}, status_code=422)

    if allowed_hosts is not None:
        app.add_middleware(HostCheck, allowed=allowed_hosts)
    return app
