"""Output shared by the commands: records one per line, the hit table, JSON, CSV, skipped files, sizes."""

from __future__ import annotations

import json
import sys

from rich.table import Table

from .common import out

HIT_HEADER = ["rank", "score", "label", "path"]


def records(header: list[str], rows: list[list[str]], title: str | None = None) -> None:
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


def hit_rows(hits) -> list[list[str]]:
    """Rank, score, label and path of each :class:`~lookalike.search.Hit` (columns of :data:`HIT_HEADER`)."""
    from ..collection import display

    return [[str(h.rank), f"{h.score:.4f}", h.label, display(h.path)] for h in hits]


def print_json(data) -> None:
    """``data`` as indented JSON on stdout."""
    print(json.dumps(data, indent=2))


def write_csv(header: list[str], rows) -> None:
    """A CSV with ``header`` and ``rows`` on stdout."""
    import csv

    w = csv.writer(sys.stdout)
    w.writerow(header)
    w.writerows(rows)


def skipped_table(skipped, title: str | None = None) -> Table:
    """A table of (path, reason) pairs: files that could not be indexed."""
    from ..collection import display

    tab = Table(title=title, title_justify="left")
    tab.add_column("skipped file", overflow="fold")
    tab.add_column("reason", overflow="fold")
    for p, r in skipped:
        tab.add_row(display(p), r)
    return tab


def human_size(n: float) -> str:
    """``n`` bytes as B, KB, MB or GB (powers of 1000)."""
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return ""
