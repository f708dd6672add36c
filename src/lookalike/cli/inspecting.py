"""``info``, ``verify``, ``compact``, ``eval`` and ``map``: look at a collection, check it, measure it, draw it."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.table import Table

from .common import busy, exit_on, fail, open_collection, out
from .options import DEFAULT_DB, DbOpt
from .render import print_json, skipped_table


def info(
    db: DbOpt = DEFAULT_DB,
    errors: Annotated[bool, typer.Option("--errors", help="List every skipped file with its reason.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print as JSON.")] = False,
):
    """Describe a collection: size, encoder, folders, segments, LSH, skipped files."""
    from ..collection import display

    col = open_collection(db, read_only=True)
    data = col.describe()
    if as_json:
        if errors:
            data["skipped_files"] = [{"path": display(p), "reason": r} for p, r in col.errors]
        print_json(data)
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

    width = max(map(len, data))
    for key, val in data.items():
        out.print(f"{key:>{width}}: {show(val)}", highlight=False, soft_wrap=True)
    if errors and not col.errors:
        out.print("no skipped files", highlight=False)
    if errors and col.errors:
        out.print(skipped_table(col.errors))


def verify(db: DbOpt = DEFAULT_DB):
    """Check every file of the collection against its checksum (open checks only the small ones)."""
    from ..collection import CollectionError

    col = open_collection(db, read_only=True)
    with exit_on(CollectionError):
        checked = col.verify()
    out.print(f"{db}: all {len(checked)} files match their checksums ({len(col)} images)", highlight=False)


def compact(
    db: DbOpt = DEFAULT_DB,
    max_segments: Annotated[
        Optional[int], typer.Option(help="Merge until at most this many segments remain (default: tiered policy).")
    ] = None,
):
    """Merge the collection's segments (index runs do this by the tiered policy; this forces it)."""
    from ..collection import CollectionError

    col = open_collection(db)
    before = len(col.segments)
    with exit_on(CollectionError):
        col.maintain(max_segments=max_segments)
    out.print(f"{db}: {before} -> {len(col.segments)} segments ({len(col)} images)", highlight=False)


def map_(
    out_png: Annotated[Path, typer.Argument(help="Where to write the PNG.")],
    db: DbOpt = DEFAULT_DB,
    max_points: Annotated[int, typer.Option(help="Draw at most this many images (seeded sample).")] = 1500,
    size: Annotated[int, typer.Option(help="Map side in pixels.")] = 2400,
):
    """Draw a 2-D map of the collection (PCA -> t-SNE) with thumbnails, coloured by label."""
    from ..viz import embedding_map

    col = open_collection(db, read_only=True)
    with exit_on(ValueError, ImportError):  # ImportError: scikit-learn missing (lookalike[map])
        with busy(f"drawing the map of {min(len(col), max_points)} images (PCA, t-SNE, thumbnails)..."):
            embedding_map(col.embeddings, col.paths, col.labels, out_png, max_points=max_points, size=size)
    out.print(f"map of {min(len(col), max_points)} images written to {out_png}")


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
    import json

    from ..evaluate import measure

    col = open_collection(db, read_only=True)
    if len(col) < 2:
        fail("The collection needs at least 2 images to evaluate.")
    results = measure(col, step=busy, k=k, near_dup=near_dup, ignore_label=ignore_label or [], expand=expand,
                      dba=dba, seed=seed)
    _print_quality(results, k=k, expand=expand, dba=dba)
    if out_json:
        out_json.write_text(json.dumps(results, indent=2))
        out.print(f"results written to {out_json}")


def _print_quality(results: dict, *, k: int, expand: int, dba: int) -> None:
    def scores(r) -> str:
        return f"P@1 {r['p_at_1']:.3f}  P@{k} {r['p_at_k']:.3f}  mAP {r['map']:.3f}"

    if "class_retrieval" in results:
        r = results["class_retrieval"]
        how = ", re-ranked as search does by default" if r.get("reranked") else ""
        out.print(f"class retrieval ({r['n']} images, leave-one-out{how}): {scores(r)}", highlight=False)
    if "class_retrieval_expanded" in results:
        out.print(f"  with query expansion ({expand}): {scores(results['class_retrieval_expanded'])}",
                  highlight=False)
    if "class_retrieval_dba" in results:
        how = f"database augmentation ({dba})" + (f" + query expansion ({expand})" if expand else "")
        out.print(f"  with {how}: {scores(results['class_retrieval_dba'])}", highlight=False)
    if "near_duplicates" in results:
        nd = results["near_duplicates"]
        thr = nd["threshold"]
        tab = Table("edit", "recall@1", f"recall@{k}", f"dupes finds (>= {thr})", "median cosine",
                    title=f"near-duplicate robustness ({nd['originals']} originals); group mAP {nd['group_map']:.3f}; "
                    f"at {thr}: {nd['found']:.1%} of copies found (90/180 degree turns aside), pair precision "
                    f"{nd['pair_precision']:.4f} vs {nd['negatives']} unrelated images", title_justify="left")
        for name, v in nd["edits"].items():
            tab.add_row(name, f"{v['recall_at_1']:.3f}", f"{v[f'recall_at_{k}']:.3f}", f"{v['found']:.3f}",
                        f"{v['median_score']:.3f}")
        out.print(tab)
    if "lsh" in results:
        lsh = results["lsh"]
        out.print(f"LSH recall@{k} vs exact: {lsh['recall_at_k']:.3f} ({lsh['candidates']:.0f} candidates/query)",
                  highlight=False)
