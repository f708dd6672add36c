"""``index`` and ``watch``: embed folders into a collection."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from .common import err, exit_on, fail, out
from .options import DEFAULT_DB, BatchSizeOpt, DbOpt, EncoderOpt, HiddenOpt, MaxPixelsOpt, WorkersOpt
from .render import print_json, skipped_table


def index(
    folder: Annotated[Path, typer.Argument(help="Folder of images (recursive) or one image file.")],
    db: DbOpt = DEFAULT_DB,
    encoder: EncoderOpt = None,
    engine: Annotated[
        Optional[str],
        typer.Option(
            help="Inference engine of a new collection: onnx-int8 (the default for the built-in model: ~1.8x "
            "the float speed, same quality; one shared calibration), onnx (float; the default for a model of your "
            "own) or torch (pip install 'lookalike\\[torch]'). An existing collection keeps its own.",
            show_default=False,
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
    rotations: Annotated[
        Optional[bool],
        typer.Option(
            "--rotations/--no-rotations",
            help="Also store each image turned by 90 and 180 degrees, so dupes finds copies turned by 90/180/270 "
            "(about 3x the encode time and embeddings disk; search unchanged). Kept for later runs; turning it on "
            "embeds the images indexed before too. Default: keep the collection's setting.", show_default=False
        ),
    ] = None,
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
    from ..collection import MANIFEST, Collection, CollectionError, display
    from ..encoders import canonical_name

    encoder = canonical_name(encoder) if encoder else None  # onnx:PATH -> absolute, as the collection records it
    if not folder.exists():
        fail(f"No such folder or file: {folder}")
    views = None  # the default pipeline (encoders.DEFAULT_VIEWS)
    if profile is not None:
        from ..encoders import get_profile

        with exit_on(ValueError):
            prof = get_profile(profile)
        if (encoder and encoder != prof.encoder) or flip_average:
            fail(f"--profile {profile} sets the encoder ({prof.encoder}) and mirror averaging "
                 f"({'on' if prof.flip_average else 'off'}); drop --encoder / --flip-average, or --profile.")
        encoder, views, flip_average = prof.encoder, prof.views, prof.flip_average
    existed = not rebuild and (Path(db).expanduser() / MANIFEST).exists()
    with exit_on(CollectionError, FileNotFoundError, ImportError, ValueError,
                 interrupted="the images embedded so far are saved; run the same command to finish."):
        if rebuild:
            col = Collection.create(db, encoder=encoder, engine=engine, flip_average=flip_average, overwrite=True,
                                    views=views)
        else:
            col = Collection.open_or_create(db, encoder=encoder, engine=engine, flip_average=flip_average,
                                            views=views)
        if existed:
            _pipeline_note(col, profile, engine)
        if progress and not as_json and sys.stderr.isatty():
            with err.status(f"preparing the {col.encoder_name} model (the first run builds it once)..."):
                col.encoder  # noqa: B018 (built here, not under the progress bar)
        report = col.index(folder, batch_size=batch_size, workers=workers, max_pixels=max_pixels or None,
                           include_hidden=include_hidden, progress=progress and not as_json and sys.stderr.isatty(),
                           lsh="auto" if lsh is None else lsh, lsh_family=lsh_family, target_recall=target_recall,
                           dba=dba, rotations=rotations)
    lsh_info = report.lsh
    t = report.times
    summary = {
        "db": str(col.path), "images": len(col), "added": report.added, "updated": report.updated,
        "removed": report.removed, "unchanged": report.unchanged, "skipped": len(report.skipped),
        "kept_unlisted": report.stale, "segments": len(col.segments), "merged_segments": report.merged_segments,
        "rotated": report.rotated, "images_per_second": round(report.images_per_second, 1),
        "seconds": {"discover": round(t.discover, 3), "decode_cpu": round(t.decode, 3),
                    "encode": round(t.encode, 3), "write": round(t.write, 3), "total": round(t.total, 3)},
        "lsh": lsh_info,
    }
    if as_json:
        summary["skipped_files"] = [{"path": display(p), "reason": r} for p, r in report.skipped]
        summary["unreadable_folders"] = [display(p) for p in report.unreadable_folders]
        print_json(summary)
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
    if report.rotated:
        out.print(f"added rotation embeddings for {report.rotated} images", highlight=False)
    if lsh_info:
        tables = (f"{lsh_info['indexed_segments']} of {lsh_info['segments']} segments hashed"
                  + (f", {lsh_info['n_tables']} tables x {lsh_info['n_bits']} bits, {lsh_info['n_probes']} probes"
                     if lsh_info["n_tables"] else ", the rest scanned exactly"))
        out.print(f"LSH index ({lsh_info['family']}: {tables}): measured recall@10 = [bold]{lsh_info['recall']:.3f}[/]"
                  f" vs exact, {lsh_info['candidates']:.0f} candidates/query", highlight=False)
    if report.skipped:
        out.print(skipped_table(report.skipped[:show_skipped], title=f"{len(report.skipped)} files skipped"))
        if len(report.skipped) > show_skipped:
            out.print(f"... and {len(report.skipped) - show_skipped} more: lookalike info --db {db} --errors")


def _pipeline_note(col, profile: str | None, engine: str | None = None) -> None:
    """An existing collection keeps its pipeline: refuse another --profile, note an older default."""
    from ..encoders import DEFAULT_PROFILE, LEGACY_VIEWS, PROFILES, default_engine, profile_of

    m = col.manifest
    views = tuple(m.get("views", LEGACY_VIEWS))
    mine = profile_of(m["encoder"], views, m.get("flip_average", False))
    built = m.get("engine", "onnx")
    what = f"profile {mine!r}" if mine else f"{m['encoder']}, views {'+'.join(views)}"
    if profile is not None and profile != mine:
        fail(f"{col.path} was built with {what}, not {profile!r}: embeddings of different pipelines cannot be "
             f"compared. Omit --profile to add to it as it is, or use a new --db (or --rebuild) for {profile!r}.")
    if m["encoder"].startswith("onnx:") or profile is not None:
        return
    default = PROFILES[DEFAULT_PROFILE]
    new_engine = default_engine(default.encoder)
    older_views = "views" not in m  # made before views existed
    # made before the shared int8 model: the float engine, or an int8 model calibrated on its own images
    older_engine = engine is None and m["encoder"] == default.encoder and (
        built != new_engine or (built == "onnx-int8" and (m.get("int8_model") or {}).get("calibration") != "shared"))
    if older_views or older_engine:
        engine_what = ("an int8 model calibrated on its own images" if built == "onnx-int8" else f"engine {built}")
        err.print(f"[yellow]note:[/] {col.path} uses an older pipeline ({what}, {engine_what}); new images are "
                  f"embedded the same way, so its embeddings stay comparable. New collections default to "
                  f"{DEFAULT_PROFILE!r} ({default.summary}) on the {new_engine} engine: index again with --rebuild "
                  "(or a new --db) to switch.", highlight=False)


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

    from ..collection import CollectionError, CorruptCollectionError
    from ..watch import Watcher

    if not folder.is_dir():
        fail(f"No such folder to watch: {folder}")

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
        with exit_on(CollectionError, CorruptCollectionError, FileNotFoundError, ImportError, ValueError,
                     interrupted="committed batches are kept; run watch again to catch up."), watcher:
            out.print(f"watching {folder} -> {db} (batches after {settle:g} s without changes; Ctrl-C to stop)",
                      highlight=False)
            watcher.run()
    finally:
        for s, h in previous.items():
            signal.signal(s, h)
    out.print("stopped", highlight=False)
