"""``search``: the images most similar to a query image or to each image of a folder."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from .common import err, fail, open_nonempty, out
from .options import DEFAULT_DB, DbOpt
from .render import HIT_HEADER, hit_rows, print_json, records


def search(
    query: Annotated[Path, typer.Argument(help="Query image (indexed or not), or a folder of query images.")],
    db: DbOpt = DEFAULT_DB,
    k: Annotated[int, typer.Option("-k", "--k", help="Number of results.")] = 10,
    as_json: Annotated[bool, typer.Option("--json", help="Print results as JSON.")] = False,
    paths: Annotated[bool, typer.Option("--paths", help="Print only result paths, one per line.")] = False,
    grid: Annotated[Optional[Path], typer.Option(help="Write a PNG of the query beside its results.")] = None,
    engine: Annotated[Optional[str], typer.Option(help="Inference engine (default: the collection's).")] = None,
    exact: Annotated[bool, typer.Option("--exact", help="Force exact search, ranked by plain cosine (no re-ranking).")
                     ] = False,
    use_lsh: Annotated[bool, typer.Option("--lsh", help="Force the LSH index.")] = False,
    expand: Annotated[int, typer.Option(
        help="Query-expansion neighbours: of the default re-ranking (0 = its default, 5), or with --exact/--lsh "
        "plain query expansion (0 = off).")] = 0,
    include_self: Annotated[
        bool, typer.Option("--include-self", help="Keep an indexed query image itself among its results.")
    ] = False,
):
    """Find the K images most similar to QUERY.

    Collections of 1,000-20,000 images are re-ranked (DBA + query expansion over an exact shortlist of 100).

    Larger ones use the LSH index, smaller ones exact search. Scores shown are always the plain cosine.

    An indexed query image is left out of its own results unless --include-self.
    """
    from ..collection import CollectionError, display
    from ..images import DecodeError, discover

    if k < 1:
        fail(f"-k must be at least 1, got {k}")
    if as_json and paths:
        fail("--json and --paths exclude each other; pick one output format")
    if exact and use_lsh:
        fail("--exact and --lsh exclude each other")
    if not (query.is_dir() or query.is_file()):
        fail(f"No such query image: {query}")
    col = open_nonempty(db, read_only=True, engine=engine)
    try:
        method = col.resolve_method("exact" if exact else "lsh" if use_lsh else "auto")
        if query.is_dir():
            results = col.search_many(list(discover(query)), k=k, method=method, expand=expand,
                                      exclude_self=not include_self)
            return _show_folder(results, method, as_json, paths, grid)
        hits = col.search(query, k=k, method=method, expand=expand, exclude_self=not include_self)
    except CollectionError as e:
        fail(str(e))
    except DecodeError as e:
        fail(f"cannot read query image {query}: {e}")
    except FileNotFoundError:
        fail(f"No such query image: {query}")
    if grid is not None:
        from ..viz import result_grid

        result_grid(str(query), hits, grid)
    if as_json:
        print_json({"query": str(query), "method": method, "results": [h.to_dict() for h in hits]})
    elif paths:
        for h in hits:
            print(display(h.path))
    else:
        records(HIT_HEADER, hit_rows(hits),
                title=f"{len(hits)} most similar to {display(str(query))} ({method} search)")
    if grid is not None and not (as_json or paths):
        out.print(f"grid written to {grid}")


def _show_folder(results, method: str, as_json: bool, paths: bool, grid: Path | None) -> None:
    """The hits of every query of a folder: grids, JSON, paths, or records (a skipped query on stderr)."""
    from ..collection import display

    grids = []
    if grid is not None:  # one grid per query: GRID-001-<query name>.png, ...
        from ..viz import result_grid

        for n, (q, hits, _) in enumerate(results, 1):
            if hits is not None:
                grids.append(grid.with_name(f"{grid.stem}-{n:03d}-{Path(q).stem}{grid.suffix or '.png'}"))
                result_grid(q, hits, grids[-1])
    if as_json:
        print_json({"method": method, "queries": [
            {"query": q, "results": [h.to_dict() for h in hits] if hits is not None else None, "error": reason}
            for q, hits, reason in results]})
        return
    for q, hits, reason in results:
        if paths:
            for h in hits or []:
                print(f"{display(q)}\t{display(h.path)}")
            continue
        if hits is None:
            err.print(f"[yellow]skipped[/] {display(q)}: {reason}", highlight=False)
            continue
        if sys.stdout.isatty():
            records(HIT_HEADER, hit_rows(hits), title=f"{display(q)} ({method} search)")
        else:  # one line per hit, the query first
            records(["query", *HIT_HEADER], [[display(q), *row] for row in hit_rows(hits)])
    if grids and not paths:
        err.print(f"{len(grids)} grids written: {grids[0]} ...", highlight=False)
