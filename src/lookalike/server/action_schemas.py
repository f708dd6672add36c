"""Request and response models of the acting endpoints (``/api/actions/...``)."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

from ..dupes import DEFAULT_THRESHOLD

# Groups one request may name: the page sends one group, or all of them at once (10,000 groups of
# 10 ids are ~1 MB of JSON, under the body cap).
MAX_CHOICES = 10_000
MAX_CHOICE_MEMBERS = 200
ImageId = Annotated[int, Field(strict=True, ge=0, le=2**63 - 1, description="An id of this collection")]


class Choice(BaseModel):
    """One group as a person decided it: the keeper, and the images to act on."""

    model_config = ConfigDict(extra="forbid")
    keeper: ImageId
    act: list[ImageId] = Field(min_length=1, max_length=MAX_CHOICE_MEMBERS,
                               description="Ids to move; each must score at or above the threshold against the "
                                           "keeper or, when verification is on, show the same photo by local "
                                           "features (verified), or it is left out")


class ActIn(BaseModel):
    """What to act on: the groups named in ``groups``, or with ``all`` every group the server found."""

    model_config = ConfigDict(extra="forbid")
    action: Literal["move"] = Field("move", description="Moves go to the folder fixed at start (serve --move-to)")
    groups: list[Choice] = Field(default_factory=list, max_length=MAX_CHOICES)
    all: bool = Field(False, description="Every group found at this threshold, with its suggested keeper")
    threshold: float = Field(DEFAULT_THRESHOLD, ge=0.5, le=1.0,
                            description="Score to the keeper a member needs to be acted on")
    strict: bool = Field(False, description="With all: the groups of the strict search")


class IgnoreIn(BaseModel):
    """Images that are not duplicates of each other (remembered in the collection)."""

    model_config = ConfigDict(extra="forbid")
    ids: list[ImageId] = Field(min_length=2, max_length=MAX_CHOICE_MEMBERS)


class UndoIn(BaseModel):
    """The run to undo (default: the last run not undone)."""

    model_config = ConfigDict(extra="forbid")
    run: str | None = Field(None, pattern=r"^\d{8}T\d{6}\.\d{6}Z-[0-9a-f]{6}$", description="A run id")


class StepOut(BaseModel):
    """One file a plan touches."""

    group: int
    path: str
    dest: str | None
    size: int


class LeftOut(BaseModel):
    """A file a plan or run leaves alone, and why."""

    path: str
    reason: str


class PlanOut(BaseModel):
    """``/api/actions/plan``: what ``apply`` would do (nothing is changed)."""

    action: str
    to: str | None
    files: int
    groups: int
    bytes: int
    steps: list[StepOut]
    left_out: list[LeftOut]


class RunOut(BaseModel):
    """``/api/actions/apply`` and ``/api/actions/undo``: what was done (journaled; undo restores it)."""

    run: str
    action: str
    done: list[str]
    bytes: int
    skipped: list[LeftOut]


class IgnoreOut(BaseModel):
    """``/api/actions/ignore``."""

    images: int


class RunSummary(BaseModel):
    """One journaled run."""

    run: str
    action: str | None
    to: str | None
    done: int
    finished: bool
    undone: bool


class ActionsOut(BaseModel):
    """``GET /api/actions``: whether this server may act, where moves go, the last runs."""

    enabled: bool
    reason: str | None = Field(description="Why actions are off, when they are")
    move_to: str | None
    runs: list[RunSummary]
