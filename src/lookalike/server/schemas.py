"""Response models and the documented request body and error responses of the REST API (OpenAPI)."""

from __future__ import annotations

from pydantic import BaseModel, Field

MAX_K = 100


class Error(BaseModel):
    """Every error the server sends: what was wrong and, where it helps, what to do."""

    detail: str


class Health(BaseModel):
    """`/healthz`."""

    status: str
    images: int
    generation: int


class Stats(BaseModel):
    """`/api/stats`."""

    images: int
    skipped: int
    encoder: str
    profile: str | None = Field(description="The named pipeline (fast, balanced, best), or null for another one")
    views: list[str]
    dim: int
    engine: str
    int8_calibration: str | None = Field(description="shared (the int8 model built from the shipped ranges), "
                                         "collection (calibrated on its own images) or null (float engine)")
    search_method: str
    generation: int
    segments: int
    dba: int | None = Field(description="Neighbours of database-side augmentation, or null when off")
    rotations: list[str] = Field(description="Turned copies embedded per image for dupes (rot90, rot180, rot270); "
                                 "[] when off")
    lsh_recall: float | None
    max_upload_bytes: int
    dupes_threshold: float


class HitOut(BaseModel):
    """One search result."""

    rank: int
    score: float
    id: int
    path: str
    label: str | None = None
    name: str
    image_url: str
    thumb_url: str


class QueryOut(BaseModel):
    """What was searched with."""

    id: int | None = None
    name: str
    path: str | None = None
    thumb_url: str | None = None
    width: int | None = None
    height: int | None = None


class SearchOut(BaseModel):
    """`POST /api/search`."""

    query: QueryOut
    method: str
    results: list[HitOut]


class Member(BaseModel):
    """One image of a duplicate group, with what a person needs to judge it."""

    id: int
    name: str = Field(description="folder/name: the shortest tail of the path that tells the members apart")
    path: str
    thumb_url: str
    image_url: str
    keeper: bool
    size: int = Field(description="File size in bytes")
    width: int
    height: int
    modified: str = Field(description="Modified time, ISO 8601 (UTC)")
    folder: str
    score: float = Field(description="Cosine similarity to the keeper (1 for the keeper)")
    identical: bool = Field(description="Byte-identical to the keeper")
    role: str = Field(description="keep, act (an action may touch it), chained (below the threshold against the "
                                  "keeper and not verified: never acted on), ignored (marked not duplicates)")
    verified: bool = Field(description="Below the threshold to the keeper, but local features (SIFT + RANSAC) show "
                                       "the same photo: a hard copy (turned, watermarked, thumbnail, deep crop); "
                                       "it may be acted on")


class GroupOut(BaseModel):
    """A group of near-duplicates (members capped)."""

    ids: list[int] = Field(description="Member ids (the first MAX_GROUP_MEMBERS when the group is larger).")
    size: int
    keeper: int
    min_score: float
    pair_count: int
    pairs: list[tuple[int, int, float]] = Field(description="The strongest pairs (id_a, id_b, score), capped.")
    members: list[Member]


class ImageOut(BaseModel):
    """One image of the collection (browsing)."""

    id: int
    name: str = Field(description="folder/name, unique among the images of the page")
    path: str
    thumb_url: str
    image_url: str


class ImagesOut(BaseModel):
    """`/api/images`: one page of the collection, in index order."""

    total: int
    offset: int
    limit: int
    images: list[ImageOut]


class DuplicatesDone(BaseModel):
    """`/api/duplicates` once computed: one page of groups."""

    status: str = Field(description="'done'")
    threshold: float
    strict: bool
    generation: int
    progress: float
    total_groups: int
    offset: int
    limit: int
    groups: list[GroupOut]
    pairs: int
    truncated: bool = Field(description="True when more pairs passed than the server keeps (the best are kept).")
    max_pairs: int
    verified: bool = Field(description="True when pairs below the threshold were verified with local features and "
                                       "the ones that passed joined the groups (as lookalike dupes does by default)")
    verify_note: str | None = Field(description="Why they were not (OpenCV missing: the pip command; too many "
                                                "images), or null")
    verified_pairs: int = Field(description="Pairs below the threshold added by the verification")
    seconds: float


class DuplicatesRunning(BaseModel):
    """`/api/duplicates` while it is computed (202)."""

    status: str = Field(description="'queued' or 'running'; ask again (see Retry-After)")
    threshold: float
    strict: bool
    generation: int
    progress: float = Field(description="Fraction done, 0 to 1.")
    phase: str = Field(description="pairs (the similarity scan), verifying (hard copies below the threshold: "
                                   "the slow part) or grouping")


def errors(*codes: int) -> dict:
    """OpenAPI ``responses`` entries for error ``codes`` (all share the :class:`Error` body)."""
    text = {400: "Bad request (a Host header that is not this server, a body that is not JSON)",
            404: "No image with this id",
            408: "The request body took too long to arrive",
            409: "The collection is empty, or there is nothing to act on or undo",
            410: "The image is indexed but its file is gone or unreadable",
            413: "Upload too large", 415: "Unsupported content type", 422: "Invalid parameters or body",
            429: "Too many uploads or duplicate searches in progress; retry later",
            503: "The computation failed (e.g. the collection changed under it); retry"}
    text.update({401: "No token: send Authorization: Bearer TOKEN (printed by lookalike serve)",
                 403: "Wrong token, or actions are off (serve --read-only, or no --move-to)",
                 423: "The collection or its journal is busy (an index or another action is running); retry"})
    return {c: {"model": Error, "description": text[c]} for c in codes}


IMAGE_BINARY = {"schema": {"type": "string", "format": "binary"}}

SEARCH_BODY = {
    "requestBody": {
        "required": True,
        "description": "An image to search with (multipart field 'image'), or the id of an indexed image.",
        "content": {
            "multipart/form-data": {
                "schema": {"type": "object", "required": ["image"],
                           "properties": {"image": {"type": "string", "format": "binary",
                                                    "description": "JPEG, PNG, WebP, GIF, BMP or TIFF"}}},
            },
            "application/json": {
                "schema": {"type": "object", "required": ["id"], "additionalProperties": False,
                           "properties": {"id": {"type": "integer", "description": "An indexed image's id"},
                                          "k": {"type": "integer", "minimum": 1, "maximum": MAX_K,
                                                "description": "Results wanted (default: the query's k)"}}},
            },
        },
    }
}
