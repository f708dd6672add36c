"""The REST API and web page (FastAPI), a thin shell over :class:`lookalike.Collection`."""

from .app import create_app
from .run import ServeError, run

__all__ = ["ServeError", "create_app", "run"]
