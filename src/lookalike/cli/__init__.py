"""The ``lookalike`` command: a thin shell over the Python API (parsing, progress, output).

One module per command family: :mod:`.indexing` (index, watch), :mod:`.searching` (search),
:mod:`.duplicates` (dupes, undo), :mod:`.inspecting` (info, verify, compact, eval, map),
:mod:`.serving` (serve) and :mod:`.spark` (the spark subcommands); :mod:`.options`, :mod:`.common`
and :mod:`.render` hold what they share. The commands are registered below, in the order help lists them.
"""

from __future__ import annotations

import logging
from typing import Annotated

import typer

from . import duplicates, indexing, inspecting, searching, serving, spark

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="Find similar images in large collections.")


@app.callback()
def _main(verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log progress details.")] = False):
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")


app.command("index")(indexing.index)
app.command("search")(searching.search)
app.command("dupes")(duplicates.dupes)
app.command("undo")(duplicates.undo)
app.command("map")(inspecting.map_)
app.command("eval")(inspecting.evaluate)
app.command("serve")(serving.serve)
app.command("info")(inspecting.info)
app.command("verify")(inspecting.verify)
app.command("compact")(inspecting.compact)
app.command("watch")(indexing.watch)
app.add_typer(spark.app, name="spark")


def main():
    """Console-script entry point."""
    from ..runtime import tune_process

    tune_process()
    app()


__all__ = ["app", "main"]
