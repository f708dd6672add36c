"""``serve``: the web page and REST API over a collection."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from .common import exit_on, open_collection, out, require_extra
from .options import DEFAULT_DB, DbOpt


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
    require_extra("server", "fastapi", "uvicorn")
    from ..server import ServeError, run

    open_collection(db, read_only=True)  # fail early, with the friendly message
    with exit_on(ServeError):
        run(db, host=host, port=port, max_upload_bytes=int(max_upload_mb * 1024 * 1024),
            echo=lambda line: out.print(line, highlight=False, soft_wrap=True), token=token, read_only=read_only,
            move_to=move_to)
