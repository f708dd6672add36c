"""The collection a server answers from, following new generations without a restart.

A commit always replaces ``manifest.json`` by an atomic rename (``index --rebuild`` too), so
its ``(st_ino, st_mtime_ns)`` changes. :meth:`LiveCollection.get` stats it at most once per
``check_interval`` seconds; on a change a background thread opens the new generation
read-only, loads what is otherwise loaded lazily (LSH index, DBA vectors, id map) while the
files are certainly there, and swaps one reference. Requests keep the collection object they
started with, so none fails in flight; a reopen that fails (a commit racing it) keeps the old
one serving and is retried at the next check (Lucene's ``DirectoryReader.openIfChanged``).
"""

from __future__ import annotations

import logging
import os
import threading
import time
from pathlib import Path

from ..collection import MANIFEST, Collection

log = logging.getLogger(__name__)

# Seconds between two stats of the manifest (one syscall; at most once per interval, whatever the load).
CHECK_INTERVAL_S = 1.0
# Manifest keys that decide whether the loaded encoder still fits a new generation.
_ENCODER_KEYS = ("encoder", "engine", "flip_average", "weights_sha256", "dim")


def _model_of(manifest: dict) -> tuple:
    """What decides the loaded encoder: the pipeline, and which int8 model file (by checksum)."""
    return (*(manifest.get(k) for k in _ENCODER_KEYS), tuple(manifest.get("views") or ()),
            (manifest.get("int8_model") or {}).get("sha256"))


def _stamp(path: Path):
    try:
        st = os.stat(path / MANIFEST)
    except OSError:
        return None
    return st.st_ino, st.st_mtime_ns, st.st_size


def _warm(col: Collection) -> None:
    """Load what a collection otherwise loads lazily, so no request needs a file of it later."""
    col.resolve_method("auto")  # the LSH index (checksummed) when it will be used
    col.search_matrix  # noqa: B018  DBA vectors when enabled
    if len(col):
        col.row_of_id(int(col.metadata_columns()["id"][0]))  # builds the id -> row map


class LiveCollection:
    """The current read-only generation of the collection at ``db``.

    Parameters
    ----------
    db : path
    check_interval : float, default ``CHECK_INTERVAL_S``
        Seconds between two checks of the manifest.

    Examples
    --------
    >>> live = LiveCollection("photos.lookalike")   # doctest: +SKIP
    >>> col = live.get()   # use this one object for the whole request
    """

    def __init__(self, db: str | os.PathLike, *, check_interval: float = CHECK_INTERVAL_S):
        self.path = Path(db).expanduser()
        self.check_interval = check_interval
        self._lock = threading.Lock()
        self._stamp = _stamp(self.path)
        self._col = Collection.open(self.path, read_only=True)
        _warm(self._col)
        self._encoder = None
        self._encoder_lock = threading.Lock()
        self._next_check = time.monotonic() + check_interval
        self._reopening: threading.Thread | None = None
        self.switches = 0
        self.last_error: str | None = None
        self.on_switch: list = []  # callables given the new collection after each switch

    def get(self) -> Collection:
        """The collection to answer a request from (checks for a new generation, cheaply)."""
        now = time.monotonic()
        if now >= self._next_check:
            with self._lock:
                if now >= self._next_check:
                    self._next_check = now + self.check_interval
                    self._check()
        return self._col

    def current(self) -> Collection:
        """The collection being served, without checking for a new one."""
        return self._col

    def _check(self) -> None:
        stamp = _stamp(self.path)
        if stamp is None or stamp == self._stamp:
            return
        if self._reopening is not None and self._reopening.is_alive():
            return
        self._reopening = threading.Thread(target=self._reopen, args=(stamp,), name="lookalike-reopen", daemon=True)
        self._reopening.start()

    def refresh(self, timeout: float = 30.0) -> bool:
        """Check now and wait for a reopen to finish; True when a new generation is served."""
        before = self._col
        with self._lock:
            self._next_check = time.monotonic() + self.check_interval
            self._check()
            thread = self._reopening
        if thread is not None:
            thread.join(timeout)
        return self._col is not before

    def _reopen(self, stamp) -> None:
        t0 = time.perf_counter()
        try:
            col = Collection.open(self.path, read_only=True)
            _warm(col)
        except Exception as err:  # noqa: BLE001  a commit racing the open; keep serving the old one
            self.last_error = f"{type(err).__name__}: {err}"
            log.warning("could not open the new generation of %s yet (%s); still serving the old one",
                        self.path, self.last_error)
            return
        old = self._col
        if _model_of(old.manifest) != _model_of(col.manifest):  # e.g. --rebuild with another pipeline
            self._encoder = None
        # a commit landing while this one opened changes the stamp again: the next check reopens
        self._col, self._stamp = col, stamp
        self.switches += 1
        self.last_error = None
        for hook in self.on_switch:
            try:
                hook(col)
            except Exception:  # noqa: BLE001  a hook must not stop the switch
                log.exception("a generation-switch hook failed")
        log.info("now serving generation %s of %s (%d images; opened in %.2f s)",
                 col.manifest.get("generation"), self.path, len(col), time.perf_counter() - t0)

    def encoder(self):
        """The encoder for uploads: loaded once, kept across generations with the same model."""
        enc = self._encoder
        if enc is None:
            with self._encoder_lock:  # two upload workers must not both load the model
                enc = self._encoder
                if enc is None:
                    enc = self._encoder = self._col.encoder
        return enc
