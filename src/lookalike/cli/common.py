"""What every command uses: the two consoles, the error exit, choices, extras, the spinner, opening a collection."""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path

import typer
from rich.console import Console

out = Console()
err = Console(stderr=True, soft_wrap=True)


def fail(message: str, code: int = 1):
    """Print ``error: message`` on stderr and exit with ``code``."""
    from rich.markup import escape

    err.print(f"[bold red]error:[/] {escape(message)}", highlight=False)  # escaped: "lookalike[server]" is no markup
    raise typer.Exit(code)


@contextmanager
def exit_on(*errors: type[Exception], interrupted: str | None = None):
    """Exit with ``error: <message>`` on the library's ``errors``; with ``interrupted``, Ctrl-C exits 130 saying it."""
    try:
        yield
    except errors as e:
        fail(str(e))
    except KeyboardInterrupt:
        if interrupted is None:
            raise
        err.print(f"[yellow]interrupted:[/] {interrupted}")
        raise typer.Exit(130) from None


def check_choice(option: str, value: str, allowed) -> None:
    """Exit with ``--option must be one of a, b, c, not 'x'`` unless ``value`` is one of ``allowed``."""
    if value not in allowed:
        fail(f"{option} must be one of {', '.join(allowed)}, not {value!r}")


def require_extra(extra: str, *modules: str) -> None:
    """Exit with the ``pip install 'lookalike[extra]'`` hint unless every module imports."""
    from ..extras import MissingExtraError, require

    with exit_on(MissingExtraError):
        for module in modules:
            require(extra, module)


def busy(message: str):
    """A spinner with ``message`` on stderr while a long step runs (nothing when stderr is not a terminal)."""
    from contextlib import nullcontext

    return err.status(message) if err.is_terminal else nullcontext()


def open_collection(db: Path, **kwargs):
    """``Collection.open(db, **kwargs)``, or exit with the collection's own message."""
    from ..collection import Collection, CollectionError, CorruptCollectionError

    with exit_on(CollectionError, CorruptCollectionError):
        return Collection.open(db, **kwargs)


def open_nonempty(db: Path, **kwargs):
    """:func:`open_collection`, or exit when the collection holds no image yet (nothing to search)."""
    col = open_collection(db, **kwargs)
    if len(col) == 0:
        fail(f"The collection at {db} is empty; add images with: lookalike index FOLDER --db {db}")
    return col
