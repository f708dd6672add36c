"""``dupes`` and ``undo``: report duplicate groups, act on them, take the actions back."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from .common import check_choice, err, exit_on, fail, open_collection, out, require_extra
from .options import DEFAULT_DB, DEFAULT_THRESHOLD, VERIFY_MAX_IMAGES, DbOpt, ThresholdOpt
from .render import human_size, print_json, records, write_csv


def dupes(
    db: DbOpt = DEFAULT_DB,
    threshold: ThresholdOpt = DEFAULT_THRESHOLD,
    fmt: Annotated[str, typer.Option("--format", help="table, json or csv.")] = "table",
    strict: Annotated[
        bool, typer.Option(help="Groups where every pair passes (default: connected components).")
    ] = False,
    against: Annotated[Optional[Path], typer.Option(help="Another collection: report images duplicated there.")] = None,
    sheet: Annotated[Optional[Path], typer.Option(help="Write a PNG with one row of thumbnails per group.")] = None,
    exact: Annotated[bool, typer.Option("--exact", help="Force the exact all-pairs scan.")] = False,
    tier: Annotated[str, typer.Option(help="exact (byte-identical files), near (similar images) or all.")] = "all",
    keep: Annotated[str, typer.Option(
        help="Which file of a group to keep: pixels (most pixels, then oldest, then path), largest (bytes), oldest, "
        "newest or shortest-path.")] = "pixels",
    reference: Annotated[Optional[list[Path]], typer.Option(
        metavar="DIR", help="Folder whose files are always kept, never acted on (repeatable).")] = None,
    ignore: Annotated[Optional[list[str]], typer.Option(
        metavar="ID,ID", help="Remember that these image ids are not duplicates (--ignore 3,7); later runs respect it."
    )] = None,
    apply: Annotated[Optional[str], typer.Option(
        help="Act on the duplicates: move (with --to), trash, hardlink, symlink or delete. A dry run unless --yes.")
    ] = None,
    to: Annotated[Optional[Path], typer.Option(
        help="--apply move: the folder the duplicates go to (each keeps its path under its indexed folder).")] = None,
    yes: Annotated[bool, typer.Option("--yes", help="Do the --apply plan (without it: print the plan only).")] = False,
    verify: Annotated[Optional[bool], typer.Option(
        "--verify/--no-verify", show_default=False,
        help="Check each image's nearest neighbours below the threshold with local features + RANSAC and group "
        "those that are the same photo (hard edits: blur, turns, watermarks, thumbnails, screenshots, deep crops). "
        f"Default: on when the verify extra (OpenCV) is installed and the collection has at most "
        f"{VERIFY_MAX_IMAGES:,} images (about 2-3 s per 100 images); --verify at any size, --no-verify off.")] = None,
):
    """Report duplicate groups (exact copies first, then near duplicates) with a keeper; act on them with --apply.

    Only members that score at or above the threshold against the keeper itself are acted on. Every action is
    journaled in the collection first; `lookalike undo` restores moves, trash and links (deletes are final).
    """
    from .. import actions
    from ..dupes import KEEP_RULES, TIERS, review_groups, verification
    from ..images import absolute

    if fmt not in ("table", "json", "csv"):
        fail(f"--format must be table, json or csv, not {fmt!r}")
    check_choice("--tier", tier, TIERS)
    check_choice("--keep", keep, KEEP_RULES)
    if apply is not None:
        check_choice("--apply", apply, actions.ACTIONS)
    if (to is not None or yes) and apply is None:
        fail("--to and --yes go with --apply (e.g. --apply move --to DIR --yes)")
    if apply is not None and fmt == "csv":
        fail("--apply prints its plan as a table or --format json, not csv")
    if verify and against is not None:
        fail("--verify checks pairs inside one collection; it does not go with --against")
    if verify:
        require_extra("verify", "cv2")
    col = open_collection(db, read_only=not (apply and yes))
    other = open_collection(against, read_only=True) if against else None
    plan = verification(col, verify, against=other)
    if plan.note and tier != "exact":
        from rich.markup import escape

        err.print(f"[dim]note:[/] {escape(plan.note)}", highlight=False, soft_wrap=True)
    with exit_on(ValueError, actions.ActionError), _verify_progress(plan.on and tier != "exact" and fmt != "json") \
            as progress:
        if ignore:
            ids = [int(x) for part in ignore for x in part.replace(",", " ").split()]
            hashes = actions.remember_not_duplicates(col, ids)
            err.print(f"remembered: images {', '.join(map(str, ids))} are not duplicates "
                      f"({len(hashes)} distinct files; stored in {col.path / actions.DECISIONS_FILE})", highlight=False)
        groups = review_groups(col, threshold, tier=tier, keep=keep, strict=strict,
                               reference=[absolute(r) for r in reference or []],
                               ignored=actions.load_decisions(col.path), method="exact" if exact else "auto",
                               against=other, verify=plan.on, progress=progress)
        action_plan = actions.make_plan(col, groups, apply, to=to) if apply else None
    if sheet is not None:
        from ..viz import duplicate_sheet

        duplicate_sheet(groups, sheet)
    if action_plan is not None:
        return _apply(col, action_plan, yes, fmt)
    _report(groups, threshold, strict, fmt, against, plan if tier != "exact" else None)
    if sheet is not None and fmt == "table":
        out.print(f"sheet written to {sheet}")


def _verify_progress(show: bool):
    """A progress bar for the verification phase on stderr (a context giving the callback; None when not shown)."""
    from contextlib import contextmanager, nullcontext

    if not (show and sys.stderr.isatty()):
        return nullcontext(None)

    @contextmanager
    def bar():
        from tqdm import tqdm

        with tqdm(total=100, desc="verifying", unit="%", dynamic_ncols=True,
                  bar_format="{desc}: {percentage:3.0f}%|{bar}| [{elapsed}<{remaining}]") as b:
            def update(fraction: float) -> None:
                b.update(max(0.0, round(100 * fraction, 1) - b.n))

            yield update

    return bar()


def _report(groups, threshold, strict, fmt, against, plan=None) -> None:
    from datetime import datetime

    from ..collection import display

    def when(m) -> str:
        return datetime.fromtimestamp(m.mtime_ns / 1e9).strftime("%Y-%m-%d %H:%M")

    if fmt == "json":
        print_json({"threshold": threshold, "strict": strict, "against": str(against) if against else None,
                    "verify": plan.mode if plan else None, "verified": bool(plan and plan.on),
                    "verify_note": plan.note if plan else None, "groups": [g.to_dict() for g in groups]})
        return
    if fmt == "csv":
        write_csv(["group", "id", "path", "keeper", "min_score", "tier", "role", "score_to_keeper", "identical",
                   "size", "width", "height", "modified", "folder", "in_other", "verified"],
                  ([n, m.id, display(m.path), int(m.role == "keep"), f"{g.min_score:.6f}", g.tier, m.role,
                    f"{m.score:.6f}", int(m.identical), m.size, m.width, m.height, m.to_dict()["modified"],
                    display(m.folder), int(m.in_other), int(m.verified)] for n, g in enumerate(groups, 1)
                   for m in g.members))
        return
    n_act = sum(m.role == "act" for g in groups for m in g.members)
    n_exact = sum(g.tier == "exact" for g in groups)
    (out if sys.stdout.isatty() else err).print(
        f"{len(groups)} duplicate groups ({n_exact} exact, {len(groups) - n_exact} near; {n_act} files could go) at "
        f"threshold {threshold}" + (f", against {against}" if against else "")
        + ("; hard copies below it verified" if plan and plan.on else ""), highlight=False)
    for n, g in enumerate(groups, 1):
        rows = [[str(n), g.tier, m.role + ("=" if m.identical and m.role != "keep" else ""), str(m.id),
                 f"{m.score:.4f}" + (" verified" if m.verified else ""), human_size(m.size),
                 f"{m.width}x{m.height}", when(m),
                 ("other: " if m.in_other else "") + display(m.path)] for m in g.members]
        if sys.stdout.isatty():
            what = "byte-identical" if g.tier == "exact" else f"weakest link {g.min_score:.3f}"
            records(["role", "id", "to keeper", "size", "pixels", "modified", "path"], [r[2:] for r in rows],
                    title=f"group {n}: {g.tier} ({len(g.ids)} images, {what})")
        else:
            records(["group", "tier", "role", "id", "to keeper", "size", "pixels", "modified", "path"], rows)
    if groups and sys.stdout.isatty():
        out.print("[dim]roles: keep · act: --apply may touch it (act=: byte-identical to the keeper) · kept: "
                  "reference, chained (below the threshold against the keeper), ignored (not duplicates) · "
                  "verified: below the threshold, the same photo by local features[/]",
                  highlight=False, soft_wrap=True)


def _apply(col, plan, yes: bool, fmt: str) -> None:
    from .. import actions
    from ..collection import CollectionError, display

    what = {"move": f"move to {plan.to}", "trash": "move to the trash", "hardlink": "replace by a hard link to the "
            "keeper (the original goes to the trash)", "symlink": "replace by a symbolic link to the keeper (the "
            "original goes to the trash)", "delete": "DELETE"}[plan.action]
    note = ("deletes are final: undo cannot bring them back" if plan.final else
            "undo with: lookalike undo" + ("" if plan.action == "move" else "; space is freed when the trash is "
                                           "emptied"))
    if not yes:
        if fmt == "json":
            print_json(dict(plan.to_dict(), dry_run=True))
            return
        where = {"move": "goes to", "hardlink": "link to", "symlink": "link to"}.get(plan.action, "keeper")
        records(["group", where, "file"], [[str(s.group), display(s.dest or s.keeper), display(s.path)]
                                           for s in plan.steps], title=f"plan (dry run): {what}")
        for p, r in plan.left_out:
            err.print(f"[dim]left out[/] {display(p)}: {r}", highlight=False, soft_wrap=True)
        out.print(f"{len(plan.steps)} files of {plan.groups} groups, {human_size(plan.bytes)} to free; {note}. "
                  "Nothing was changed: add --yes to do it.", highlight=False, soft_wrap=True)
        return
    with exit_on(CollectionError, actions.ActionError,
                 interrupted="every action done so far is journaled; lookalike undo restores them."):
        res = actions.apply_plan(col, plan)
    if fmt == "json":
        print_json(res.to_dict())
        return
    _print_skipped("skipped", res.skipped)
    out.print(f"run {res.run}: {plan.action} done for {len(res.done)} files ({human_size(res.bytes)}), "
              f"{len(res.skipped)} skipped; {note}", highlight=False, soft_wrap=True)


def _print_skipped(what: str, skipped) -> None:
    from ..collection import display

    for p, r in skipped:
        err.print(f"[yellow]{what}[/] {display(p)}: {r}", highlight=False, soft_wrap=True)


def undo(
    run_id: Annotated[Optional[str], typer.Argument(help="The run to undo (default: the last one not undone).")] = None,
    db: DbOpt = DEFAULT_DB,
    list_runs: Annotated[bool, typer.Option("--list", help="List the journaled runs instead.")] = False,
):
    """Undo a `dupes --apply` run: moved, trashed and linked files come back byte-identical (deletes are final)."""
    from .. import actions
    from ..collection import CollectionError

    if list_runs:
        col = open_collection(db, read_only=True)
        records(["run", "action", "files", "state", "to"],
                [[r["run"], str(r["action"]), str(r["done"]),
                  "undone" if r["undone"] else "done" if r["finished"] else "interrupted", str(r["to"] or "")]
                 for r in actions.runs(col.path)], title=f"runs journaled in {col.path}")
        return
    col = open_collection(db)
    with exit_on(CollectionError, actions.ActionError):
        res = actions.undo(col, run_id)
    _print_skipped("not restored", res.skipped)
    out.print(f"run {res.run} undone: {len(res.done)} files restored, {len(res.skipped)} not", highlight=False,
              soft_wrap=True)
