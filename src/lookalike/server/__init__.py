"""The REST API and web page (FastAPI), a thin shell over :class:`lookalike.Collection`."""

from .app import create_app

__all__ = ["create_app"]
