"""``spark index``, ``spark dupes``, ``spark search`` and ``spark import``: jobs on Apache Spark."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.table import Table

from .common import exit_on, out, require_extra
from .options import DEFAULT_DB, DEFAULT_THRESHOLD, DbOpt, FormatOpt, MasterOpt, ThresholdOpt
from .render import print_json

app = typer.Typer(no_args_is_help=True, help="Run lookalike jobs on Apache Spark (local[N] or a cluster).")


def _session(master: str | None, app_name: str, threads: int = 1):
    """A Spark session; in local mode its Python workers use this interpreter (unless PYSPARK_PYTHON is set)."""
    import os

    os.environ["LOOKALIKE_THREADS"] = str(threads)
    if (master or "local").startswith("local") and "PYSPARK_GATEWAY_PORT" not in os.environ:
        os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    require_extra("spark", "pyspark", "pandas")
    from ..spark.embed import spark_session

    return spark_session(master, app_name, **{"spark.executorEnv.LOOKALIKE_THREADS": str(threads)})


def _run_job(master: str | None, app_name: str, job, *args, threads: int = 1, methods=None, **kwargs):
    """Run ``job(spark, *args, **kwargs)`` in a session that is always stopped; bad input -> a clear exit.

    ``methods``: the job's method names, the ``method`` keyword is checked against them before Spark starts.
    """
    from ..spark.data import SparkInputError, check_method

    if methods is not None:
        with exit_on(ValueError):
            check_method(kwargs["method"], methods)
    spark = _session(master, app_name, threads)
    try:
        with exit_on(SparkInputError, ValueError):
            return job(spark, *args, **kwargs)
    finally:
        spark.stop()


@app.command("index")
def index(
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
    import time

    from ..spark.embed import spark_index

    t0 = time.perf_counter()
    counts = _run_job(master, "lookalike-index", spark_index, input_path, out_path, threads=threads,
                      partitions=partitions, encoder=encoder)
    dt = time.perf_counter() - t0
    out.print(
        f"{counts['files']} files: {counts['embedded']} embedded, {counts['errors']} with errors, "
        f"in {dt:.1f} s ({counts['embedded'] / dt:.1f} img/s incl. Spark start-up) -> {out_path}",
        highlight=False,
    )


@app.command("dupes")
def dupes(
    source: Annotated[str, typer.Argument(help="Output folder/URI of `lookalike spark index`.")],
    out_path: Annotated[Optional[str], typer.Option("--out", help="Write pairs/ and groups/ Parquet here.")] = None,
    threshold: ThresholdOpt = DEFAULT_THRESHOLD,
    method: Annotated[str, typer.Option(help="lsh (banded join), mllib-brp or mllib-minhash.")] = "lsh",
    target_recall: Annotated[float, typer.Option(help="lsh: chance to find a pair at the threshold.")] = 0.95,
    bands: Annotated[Optional[int], typer.Option(help="lsh: number of bands (default: planned from a sample).")] = None,
    bits: Annotated[Optional[int], typer.Option(help="lsh: hyperplane bits per band (default: planned).")] = None,
    tables: Annotated[Optional[int], typer.Option(help="mllib-*: numHashTables (brp default 200, minhash 5).")] = None,
    bucket_length: Annotated[Optional[float], typer.Option(help="mllib-brp: bucketLength (default 2.0).")] = None,
    fmt: FormatOpt = "table",
    master: MasterOpt = None,
):
    """All-pairs near-duplicates on Spark: pairs and groups with a suggested keeper. Never deletes files."""
    from ..spark.dupes import METHODS, spark_dupes

    res = _run_job(master, "lookalike-dupes", spark_dupes, source, out_path, methods=METHODS, threshold=threshold,
                   method=method, target_recall=target_recall, n_bands=bands, n_bits=bits, n_tables=tables,
                   bucket_length=bucket_length)
    if fmt == "json":
        print_json({"threshold": threshold, "method": method, "images": res.n_vectors, "seconds": res.seconds,
                    "plan": res.plan, "pairs": res.pairs, "groups": res.groups})
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


@app.command("search")
def search(
    queries: Annotated[str, typer.Argument(help="Folder of query images, or a `spark index` output.")],
    collection: Annotated[str, typer.Option("--collection", help="Output folder/URI of `lookalike spark index`.")],
    out_path: Annotated[
        Optional[str], typer.Option("--out", help="Write (query, rank, path, score) Parquet here.")
    ] = None,
    k: Annotated[int, typer.Option("-k", help="Results per query.")] = 10,
    method: Annotated[str, typer.Option(help="exact (one pass for all queries) or mllib-brp.")] = "exact",
    fmt: FormatOpt = "table",
    master: MasterOpt = None,
):
    """Find the k most similar images for many queries at once, on Spark."""
    from ..spark.search import METHODS, spark_search

    res = _run_job(master, "lookalike-search", spark_search, queries, collection, out_path, methods=METHODS, k=k,
                   method=method)
    if fmt == "json":
        print_json({"k": k, "method": method, "results": res.results, "errors": res.errors})
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


@app.command("import")
def import_(
    source: Annotated[Path, typer.Argument(help="Local output folder of `lookalike spark index`.")],
    db: DbOpt = DEFAULT_DB,
):
    """Load a `spark index` output into a local collection (for search, dupes, serve). No Spark needed."""
    from ..collection import MANIFEST, Collection, CollectionError, CorruptCollectionError
    from ..collection.sync import local_path, spark_meta
    from ..encoders import LEGACY_VIEWS  # an output from before views: centre crop only

    with exit_on(CollectionError, CorruptCollectionError):
        col = Collection.open(db) if (Path(db) / MANIFEST).exists() else None
        if col is None:
            info = spark_meta(Path(local_path(str(source))))
            col = Collection.create(db, encoder=info.get("encoder"), views=info.get("views", LEGACY_VIEWS),
                                    engine=info.get("engine", "onnx"))
        rep = col.import_parquet(source)
    out.print(f"imported {rep.added} new and {rep.updated} updated images, {len(rep.skipped)} files with errors, "
              f"into {db} ({len(col)} images)", highlight=False)
