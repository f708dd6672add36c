"""Keep a collection in step with a folder while files change (``lookalike watch``).

The watchdog observer thread only queues raw file-system events. The watching thread
drains the queue, remembers which paths were touched, and once the folder has been quiet
for ``settle`` seconds (or ``max_wait`` seconds have passed since the first pending
event) applies them as one batch through the public :class:`~lookalike.Collection` API:
``remove`` for paths that no longer exist, ``add`` for image files that do (new or
changed; unchanged ones cost a ``stat``). What to do with a path is decided from the disk
at that moment, not from the event sequence, so create-then-delete, delete-then-create and
moves (old path gone, new path present) all come out right whatever order events arrive
in. A file whose size or mtime still changes since its last event waits for a later
batch. Before watching, one ``index(folder)`` catches up on what changed while nobody was
watching.

Every ``add``/``remove`` is an atomic commit of the collection, so a kill loses nothing
that was committed; a batch interrupted between its ``remove`` and its ``add`` is made whole
by the catch-up of the next start. Another process writing to the collection makes the
batch wait (the collection's lock) or, if the lock refuses, retry after ``retry`` seconds.

Example
-------
>>> from lookalike.watch import Watcher                                  # doctest: +SKIP
>>> with Watcher("~/Pictures", "photos.lookalike", settle=2.0) as w:     # doctest: +SKIP
...     w.run()                       # until w.stop() from another thread, or Ctrl-C
"""

from __future__ import annotations

import logging
import os
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from . import images
from .collection import Collection, CollectionError, IndexReport

log = logging.getLogger(__name__)

# Default quiet period before a batch is applied: long enough for a copy of a few photos
# to finish, short enough that a running `serve` shows them within seconds.
DEFAULT_SETTLE = 2.0
# A batch is applied at the latest this many settle periods after its first event, even if
# events keep coming (a long copy is then indexed in pieces).
MAX_WAIT_SETTLES = 5
# Seconds between retries when another process holds the collection's write lock.
DEFAULT_RETRY = 5.0
# How often the watching thread wakes up to check for a stop request (seconds).
_POLL = 0.2


@dataclass
class BatchReport(IndexReport):
    """What one applied batch did (or the catch-up ``index`` run, with ``catch_up=True``).

    The counts of an :class:`~lookalike.IndexReport` (added, updated, removed, unchanged,
    skipped, ...), and the watcher's own.
    """

    waiting: int = 0  # files still being written, left for a later batch
    seconds: float = 0.0
    images: int = 0  # images in the collection after the batch
    catch_up: bool = False

    @property
    def changed(self) -> bool:
        """True if the batch changed the collection."""
        return bool(self.added or self.updated or self.removed or self.skipped)

    def line(self) -> str:
        """One human-readable line: time of day, counts, seconds, collection size."""
        what = "catch-up" if self.catch_up else "batch"
        waiting = f", {self.waiting} still being written" if self.waiting else ""
        return (f"{time.strftime('%H:%M:%S')} {what}: +{self.added} added, {self.updated} updated, "
                f"{self.removed} removed, {len(self.skipped)} skipped{waiting} ({self.seconds:.1f} s; "
                f"{self.images:,} images)")


class _Handler:
    """watchdog handler: puts every event on a queue (runs in the observer's thread)."""

    def __init__(self, q: queue.Queue):
        self.q = q

    def dispatch(self, event) -> None:
        self.q.put(event)


def _lock_busy(err: Exception) -> bool:
    """The collection refused a write because another process holds its lock."""
    return isinstance(err, BlockingIOError) or "another process" in str(err).lower()


class Watcher:
    """Watch ``folder`` and keep the collection at ``db`` up to date with it.

    Parameters
    ----------
    folder : path
        Folder to watch (recursively).
    db : path
        Collection folder (created if missing, with ``encoder``/``engine``).
    settle : float, default ``DEFAULT_SETTLE``
        Seconds without events before a batch is applied.
    max_wait : float, optional
        Apply a batch at the latest this long after its first event (default
        ``MAX_WAIT_SETTLES * settle``).
    include_hidden : bool, default False
        Also index hidden files and folders (name starting with ``.``).
    retry : float, default ``DEFAULT_RETRY``
        Seconds before retrying a batch the collection's lock refused.
    on_batch : callable, optional
        Called with each :class:`BatchReport` that changed something (and the catch-up).
    encoder, engine : str, optional
        For a new collection.
    batch_size, workers, max_pixels
        Passed to :meth:`lookalike.Collection.add`.
    """

    def __init__(self, folder, db, *, settle: float = DEFAULT_SETTLE, max_wait: float | None = None,
                 include_hidden: bool = False, retry: float = DEFAULT_RETRY,
                 on_batch: Callable[[BatchReport], None] | None = None, encoder: str | None = None,
                 engine: str | None = None, batch_size: int = 32, workers: int | None = None,
                 max_pixels: int | None = images.DEFAULT_MAX_PIXELS):
        self.folder = Path(images.absolute(folder))
        self.db = Path(images.absolute(db))
        if settle < 0:
            raise ValueError(f"settle is a number of seconds >= 0, got {settle}")
        self.settle = settle
        self.max_wait = max_wait if max_wait is not None else MAX_WAIT_SETTLES * settle
        self.include_hidden = include_hidden
        self.retry = retry
        self.on_batch = on_batch
        self._create = {"encoder": encoder, "engine": engine}
        self._add_kwargs = {"batch_size": batch_size, "workers": workers, "max_pixels": max_pixels}
        self._events: queue.Queue = queue.Queue()
        self._stop = threading.Event()
        self._observer = None
        self._col = None
        # path -> (stat key at the last look, time of the last event); folders to scan or to drop
        self._files: dict[str, tuple[tuple | None, float]] = {}
        self._dirs: set[str] = set()
        self._first_event: float | None = None
        self._last_event = 0.0
        self._not_before = 0.0  # no batch before this time (retry after a refused lock)

    # ---------------------------------------------------------------- lifecycle
    def __enter__(self) -> Watcher:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.close()

    def start(self) -> Watcher:
        """Start the observer (events are queued from now on); idempotent."""
        if self._observer is None:
            if not self.folder.is_dir():
                raise FileNotFoundError(f"No such folder to watch: {str(self.folder)!r}.")
            from watchdog.observers import Observer

            observer = Observer()
            observer.schedule(_Handler(self._events), str(self.folder), recursive=True)
            observer.start()
            self._observer = observer
        return self

    def stop(self) -> None:
        """Ask :meth:`run` to return after the batch in progress (thread-safe)."""
        self._stop.set()

    def close(self) -> None:
        """Stop the observer thread."""
        if self._observer is not None:
            self._observer.stop()
            self._observer.join(timeout=10)
            self._observer = None

    @property
    def collection(self):
        """The collection (opened, or created, on first use)."""
        if self._col is None:
            self._col = Collection.open_or_create(self.db, **{k: v for k, v in self._create.items() if v})
        return self._col

    def run(self, *, catch_up: bool = True) -> None:
        """Catch up (one ``index`` of the folder), then apply batches until :meth:`stop`."""
        self.start()
        if catch_up and not self._stop.is_set():
            self.catch_up()
        while not self._stop.is_set():
            self.step()

    # ---------------------------------------------------------------- work
    def catch_up(self) -> BatchReport:
        """Index the whole folder once (what changed while nobody watched)."""
        t0 = time.perf_counter()
        col = self.collection
        rep = col.index(self.folder, include_hidden=self.include_hidden, **self._add_kwargs)
        out = BatchReport(**vars(rep), seconds=time.perf_counter() - t0, images=len(col), catch_up=True)
        self._report(out, always=True)
        return out

    def step(self, timeout: float = _POLL) -> BatchReport | None:
        """Wait up to ``timeout`` s for events; apply a batch if one is due. Returns its report."""
        self._drain(timeout)
        now = time.monotonic()
        if not (self._files or self._dirs) or now < self._not_before:
            return None
        quiet = now - self._last_event >= self.settle
        overdue = self._first_event is not None and now - self._first_event >= self.max_wait
        if not (quiet or overdue):
            return None
        return self.apply()

    def apply(self) -> BatchReport:
        """Apply every pending path that is ready now; the others stay pending."""
        t0 = time.perf_counter()
        now = time.monotonic()
        ready, waiting = [], 0
        for path, (key, last) in list(self._files.items()):
            current = _stat_key(path)
            if current is not None and (current != key or now - last < self.settle):
                self._files[path] = (current, last if current == key else now)  # still changing: look again later
                waiting += 1
            else:
                ready.append(path)
        dirs = sorted(self._dirs)
        report = BatchReport(waiting=waiting)
        if not ready and not dirs:
            self._first_event = now if waiting else None
            self._not_before = now + self.settle
            return report
        col = self._fresh_collection()
        gone = [p for p in ready if not os.path.exists(p)]
        present = [p for p in ready if p not in set(gone)]
        for d in dirs:  # a folder appeared, moved or vanished: reconcile everything under it
            under = d + os.sep
            gone += [p for p in col.paths if p.startswith(under) and not os.path.exists(p)]
            try:
                present += [str(p) for p in images.discover(d, include_hidden=self.include_hidden)
                            if self._wanted(str(p))]
            except FileNotFoundError:
                pass  # the folder is gone again: its files are in `gone`
        present = list(dict.fromkeys(present))
        try:
            if gone:
                report.removed = col.remove(gone)
                for p in ready:
                    if p in gone:
                        self._files.pop(p, None)
            if present:
                rep = col.add(present, **self._add_kwargs)
                report.added, report.updated, report.unchanged = rep.added, rep.updated, rep.unchanged
                report.skipped = list(rep.skipped)
        except (CollectionError, OSError) as err:
            if _lock_busy(err):
                log.warning("%s; retrying in %.0f s", err, self.retry)
                self._not_before = time.monotonic() + self.retry
                report.waiting = len(self._files) + len(self._dirs)
                return report
            raise
        for p in ready:
            self._files.pop(p, None)
        self._dirs.difference_update(dirs)
        self._first_event = time.monotonic() if self._files else None
        self._not_before = time.monotonic() + (self.settle if self._files else 0.0)
        report.seconds = time.perf_counter() - t0
        report.images = len(col)
        self._report(report)
        return report

    # ---------------------------------------------------------------- helpers
    def _report(self, report: BatchReport, always: bool = False) -> None:
        if report.changed or always:
            log.info("%s", report.line())
            if self.on_batch is not None:
                self.on_batch(report)

    def _fresh_collection(self):
        """The collection, re-read if another process committed since we last looked."""
        col = self.collection
        col.reload()
        return col

    def _wanted(self, path: str) -> bool:
        """An image file under the folder, not hidden (unless asked), not inside the collection."""
        if _within(path, self.db):
            return False
        if not images.is_image_name(path):
            return False
        return self.include_hidden or not _hidden(path, self.folder)

    def _wanted_dir(self, path: str) -> bool:
        if path == str(self.folder) or _within(path, self.db):
            return False
        return _within(path, self.folder) and (self.include_hidden or not _hidden(path, self.folder))

    def _drain(self, timeout: float) -> None:
        """Move queued events into the pending sets (waits up to ``timeout`` for the first)."""
        try:
            event = self._events.get(timeout=timeout) if timeout > 0 else self._events.get_nowait()
        except queue.Empty:
            return
        while True:
            self._note(event)
            try:
                event = self._events.get_nowait()
            except queue.Empty:
                return

    def _note(self, event) -> None:
        kind = event.event_type
        if kind in ("opened", "closed_no_write"):
            return
        paths = [_text(event.src_path)]
        if kind == "moved":
            paths.append(_text(event.dest_path))
        now = time.monotonic()
        touched = False
        for p in paths:
            if event.is_directory:
                if kind != "modified" and self._wanted_dir(p):
                    self._dirs.add(p)
                    touched = True
            elif self._wanted(p):
                self._files[p] = (_stat_key(p), now)
                touched = True
        if touched:
            self._last_event = now
            if self._first_event is None:
                self._first_event = now


def _stat_key(path: str) -> tuple | None:
    """(size, mtime_ns, inode) of a regular file, or None if there is none at ``path``."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_size, st.st_mtime_ns, st.st_ino) if os.path.isfile(path) else None


def _within(path: str, root: Path) -> bool:
    """``path`` is ``root`` or under it."""
    return path == str(root) or path.startswith(str(root) + os.sep)


def _hidden(path: str, root: Path) -> bool:
    rel = os.path.relpath(path, root)
    return any(part.startswith(".") for part in Path(rel).parts)


def _text(p) -> str:
    return os.fsdecode(p) if isinstance(p, bytes) else str(p)
