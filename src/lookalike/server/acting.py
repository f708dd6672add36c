"""The endpoints that change files: move duplicates, undo a run, remember "not duplicates".

Who may act: a request must carry ``Authorization: Bearer TOKEN`` (the token given to
:func:`lookalike.server.create_app`; compared in constant time). No cookie is read, so a page
of another site cannot make a browser act. Without a token configured, or with
``read_only``, every action answers 403. Moves go to the folder fixed when the server
started (``move_to``), never to one named in a request, and requests name images only by
their ids in this collection (anything else: 422).

Every action goes through :mod:`lookalike.actions`, so it is journaled exactly as
``lookalike dupes --apply`` is, and ``lookalike undo`` (or the ``undo`` endpoint) restores it.
The served collection is read-only; an action opens the collection for writing (which takes
its writer lock) and the server then follows the new generation.
"""

import os
import secrets
import threading
from pathlib import Path
from typing import Annotated

from fastapi import Depends, FastAPI, HTTPException
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.concurrency import run_in_threadpool

from .. import actions
from ..collection import display
from ..images import absolute
from ..storage import CollectionError
from . import action_schemas as s
from .schemas import errors

# Runs listed by GET /api/actions (the newest).
RUNS_SHOWN = 20


def check_move_to(db: str | os.PathLike, move_to: str | os.PathLike | None) -> Path | None:
    """``move_to`` as an absolute path, or ValueError when it is inside the collection folder."""
    if move_to is None:
        return None
    to, col = Path(absolute(move_to)), Path(absolute(db))
    if to == col or col in to.parents:
        raise ValueError(f"--move-to {to} is inside the collection folder {col}; choose a folder outside it")
    return to


def add_action_routes(app: FastAPI, *, db, live, dupes, token: str | None, read_only: bool,
                      move_to: str | os.PathLike | None) -> None:
    """Add ``/api/actions`` (GET) and the token-protected ``/api/actions/{plan,apply,undo,ignore}``."""
    move_to = check_move_to(db, move_to)
    bearer = HTTPBearer(auto_error=False, description="The token printed by lookalike serve (or --token, "
                                                      "LOOKALIKE_TOKEN)")
    one_at_a_time = threading.Lock()
    off = ("this server is read-only (serve --read-only)" if read_only else
           "no token is set (serve --token or LOOKALIKE_TOKEN)" if not token else None)

    def who(cred: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]) -> None:
        if cred is None:
            raise HTTPException(401, "Acting needs the token: send Authorization: Bearer TOKEN (open the page URL "
                                     "that lookalike serve printed).", headers={"WWW-Authenticate": "Bearer"})
        if off:
            raise HTTPException(403, f"Actions are off: {off}.")
        if not secrets.compare_digest(cred.credentials.encode(), token.encode()):
            raise HTTPException(403, "Wrong token; use the one lookalike serve printed.")

    def writable():
        from ..collection import Collection

        try:
            return Collection.open(db)
        except CollectionError as err:
            raise HTTPException(423, str(err)) from None

    def plan_of(body: s.ActIn):
        if move_to is None:
            raise HTTPException(403, "Moves are off: start the server with --move-to DIR (the folder duplicates "
                                     "are moved to).")
        if body.all == bool(body.groups):
            raise HTTPException(422, "Send either groups (the ones chosen) or all: true (every group found), "
                                     "not both or neither.")
        if body.all:
            job = dupes.get(live.get(), body.threshold, body.strict)
            if job.state != "done":
                raise HTTPException(409, "The duplicate groups at this threshold are not computed yet; ask "
                                         "/api/duplicates first.")
            choices = [(g.keeper, [i for i in g.ids if i != g.keeper]) for g in job.groups]
            known, check = job.verified, False  # the search checked its members below the threshold
        else:
            choices = [(c.keeper, c.act) for c in body.groups]
            # what the search verified, and members below the threshold not in it checked now (when on)
            known, check = dupes.verified(live.get(), body.threshold, body.strict), None
        col = writable()
        try:
            groups = actions.chosen_groups(col, choices, body.threshold, verified=known, check=check)
        except ValueError as err:
            raise HTTPException(422, str(err)) from None
        plan = actions.make_plan(col, groups, body.action, to=move_to)
        moved = [st for st in plan.steps if Path(st.path).is_relative_to(move_to)]  # moved by an earlier run
        plan.steps = [st for st in plan.steps if st not in moved]
        plan.left_out += [(st.path, f"already in the --move-to folder {move_to}") for st in moved]
        planned = {st.path for st in plan.steps} | {p for p, _ in plan.left_out}
        for g in groups:
            for m in g.members:
                if m.role in ("chained", "ignored") and m.path not in planned:
                    why = ("marked not duplicates with its keeper" if m.role == "ignored" else
                           f"scores {m.score:.3f} to its keeper, below {body.threshold}, and is not verified")
                    plan.left_out.append((m.path, why))
        return col, plan

    def plan_json(plan) -> dict:
        return {"action": plan.action, "to": display(plan.to) if plan.to else None, "files": len(plan.steps),
                "groups": plan.groups, "bytes": plan.bytes,
                "steps": [{"group": st.group, "path": display(st.path), "dest": display(st.dest) if st.dest else None,
                           "size": st.size} for st in plan.steps],
                "left_out": [{"path": display(p), "reason": r} for p, r in plan.left_out]}

    def run_json(res) -> dict:
        return {"run": res.run, "action": res.action, "done": [display(p) for p in res.done], "bytes": res.bytes,
                "skipped": [{"path": display(p), "reason": r} for p, r in res.skipped]}

    def serialized(fn):
        if not one_at_a_time.acquire(blocking=False):
            raise HTTPException(423, "Another action is running; retry when it is done.")
        try:
            return fn()
        except actions.ActionError as err:  # e.g. nothing to undo
            raise HTTPException(409, str(err)) from None
        except CollectionError as err:  # e.g. an index holds the writer lock
            raise HTTPException(423, str(err)) from None
        finally:
            one_at_a_time.release()

    async def in_turn(fn):  # an action runs on a worker thread, one at a time (423 while another runs)
        return await run_in_threadpool(serialized, fn)

    acting = {"dependencies": [Depends(who)], "responses": errors(400, 401, 403, 409, 422, 423)}

    @app.api_route("/api/actions", methods=["GET", "HEAD"], response_model=s.ActionsOut)
    def state():
        """Whether this server may act, the folder moves go to, and the last journaled runs."""
        runs = actions.runs(db)[-RUNS_SHOWN:]
        return {"enabled": off is None, "reason": off, "move_to": display(str(move_to)) if move_to else None,
                "runs": runs[::-1]}

    @app.post("/api/actions/plan", response_model=s.PlanOut, **acting)
    async def plan(body: s.ActIn):
        """What ``apply`` would do with this body: files, destinations, bytes (nothing is changed)."""
        return await in_turn(lambda: plan_json(plan_of(body)[1]))

    @app.post("/api/actions/apply", response_model=s.RunOut, **acting)
    async def apply(body: s.ActIn):
        """Move the chosen duplicates to the server's --move-to folder, journaled (undo restores them)."""
        def work():
            col, plan = plan_of(body)
            res = actions.apply_plan(col, plan)
            live.refresh()
            out = run_json(res)  # files the plan left alone are reported too
            out["skipped"] += [{"path": display(p), "reason": r} for p, r in plan.left_out]
            return out

        return await in_turn(work)

    @app.post("/api/actions/undo", response_model=s.RunOut, **acting)
    async def undo(body: s.UndoIn):
        """Undo a run (default: the last one not undone), exactly as ``lookalike undo`` does."""
        def work():
            res = actions.undo(writable(), body.run)
            live.refresh()
            return run_json(res)

        return await in_turn(work)

    @app.post("/api/actions/ignore", response_model=s.IgnoreOut, **acting)
    async def ignore(body: s.IgnoreIn):
        """Remember that these images are not duplicates of each other (later searches respect it)."""
        def work():
            try:
                hashes = actions.remember_not_duplicates(live.get(), body.ids)
            except ValueError as err:
                raise HTTPException(422, str(err)) from None
            dupes.forget_others(None)  # the cached groups predate the decision
            return {"images": len(hashes)}

        return await in_turn(work)
