"""Duplicate groups for the server: computed once per generation in a background thread, then cached.

A request for ``(threshold, strict)`` on the generation being served starts the job (or finds
it); while it runs the server answers 202 with its progress, then pages through the cached
groups. Pairs are capped at ``max_pairs`` (the best ones kept; ``truncated`` says so), so the
work and memory are bounded whatever the threshold. A job of a generation that is no longer
served is abandoned at its next progress report.
"""

from __future__ import annotations

import logging
import os
import queue
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field

from ..dupes import Group, group_pairs, scan_pairs
from .uploads import QueueFull

log = logging.getLogger(__name__)

# Pairs kept per job: 100,000 pairs are ~25 MB of Python objects; a lower threshold reports
# the 100,000 strongest pairs with truncated = true instead of growing without bound.
MAX_PAIRS = 100_000
# Finished results kept (per generation: a new generation drops the old ones).
CACHE_ENTRIES = 8
# Jobs queued or running at once; one more request for a new (threshold, strict) gets 429.
MAX_JOBS = 4


class _Abandoned(Exception):
    pass


def _undecided(col, pairs: list, exclude_under: str | None = None) -> list:
    """``pairs`` less those marked "not duplicates" and those with a file under ``exclude_under``.

    Decisions are :mod:`lookalike.actions`'s; ``exclude_under`` is the folder the server moves
    duplicates to (files there are dealt with already).
    """
    from ..actions import load_decisions
    from ..review import ignored_pairs

    if exclude_under is not None:
        top = exclude_under.rstrip(os.sep) + os.sep
        pairs = [p for p in pairs if not (p.path_a.startswith(top) or p.path_b.startswith(top))]
    decisions = load_decisions(col.path)
    if not decisions:
        return pairs
    ignored = ignored_pairs(decisions)
    hashes = col.metadata_columns()["content_hash"]

    def h(i):
        return hashes[col.row_of_id(i)] or ""

    return [p for p in pairs if not ignored(h(p.id_a), h(p.id_b))]


@dataclass
class Job:
    """One duplicate computation and its result."""

    col: object
    threshold: float
    strict: bool
    state: str = "queued"  # queued, running, done, failed
    progress: float = 0.0
    groups: list[Group] = field(default_factory=list)
    pairs: int = 0
    truncated: bool = False
    seconds: float = 0.0
    error: str | None = None
    abandoned: bool = False


class DuplicateJobs:
    """The duplicate jobs of a server (one worker thread, started on first use)."""

    def __init__(self, *, max_pairs: int = MAX_PAIRS, method: str = "auto", exclude_under: str | None = None):
        self.max_pairs, self.method, self.exclude_under = max_pairs, method, exclude_under
        self._jobs: OrderedDict[tuple, Job] = OrderedDict()
        self._lock = threading.Lock()
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._worker: threading.Thread | None = None

    def forget_others(self, col) -> None:
        """Drop the jobs and results of every collection but ``col`` (they would keep its files open)."""
        with self._lock:
            self._forget_others(col)

    def _forget_others(self, col) -> None:
        for k in [k for k, j in self._jobs.items() if j.col is not col]:
            self._jobs.pop(k).abandoned = True

    def get(self, col, threshold: float, strict: bool) -> Job:
        """The job for ``(threshold, strict)`` on ``col``, started if new; :class:`QueueFull` if too many."""
        key = (id(col), float(threshold), bool(strict))
        with self._lock:
            self._forget_others(col)  # an older generation
            job = self._jobs.get(key)
            if job is not None and job.state == "failed":
                del self._jobs[key]  # retry a failed job at the next request
                job = None
            if job is None:
                if sum(j.state in ("queued", "running") for j in self._jobs.values()) >= MAX_JOBS:
                    raise QueueFull(f"{MAX_JOBS} duplicate searches are already running; retry when one is done.")
                job = self._jobs[key] = Job(col, float(threshold), bool(strict))
                self._queue.put(job)
                if self._worker is None:
                    self._worker = threading.Thread(target=self._work, name="lookalike-dupes", daemon=True)
                    self._worker.start()
            self._jobs.move_to_end(key)
            done = [k for k, j in self._jobs.items() if j.state == "done"]
            for k in done[: max(0, len(done) - CACHE_ENTRIES)]:
                del self._jobs[k]
            return job

    def _work(self) -> None:
        while True:
            job = self._queue.get()
            if job.abandoned:
                continue
            job.state = "running"
            t0 = time.perf_counter()

            def report(fraction, job=job):
                if job.abandoned:
                    raise _Abandoned
                job.progress = round(0.95 * float(fraction), 4)  # grouping is the last 5%

            try:
                scan = scan_pairs(job.col, job.threshold, method=self.method, max_pairs=self.max_pairs,
                                  progress=report)
                pairs = _undecided(job.col, scan.pairs, self.exclude_under)
                job.groups = group_pairs(job.col, pairs, strict=job.strict)
                job.pairs, job.truncated = len(scan.pairs), scan.truncated
                job.seconds = round(time.perf_counter() - t0, 3)
                job.progress, job.state = 1.0, "done"
                log.info("duplicates at %.3f: %d groups from %d pairs in %.1f s", job.threshold, len(job.groups),
                         job.pairs, job.seconds)
            except _Abandoned:
                job.state = "failed"
                job.error = "the collection changed while this ran"
            except Exception as err:  # noqa: BLE001  reported to the client, retried at the next request
                log.exception("duplicate search failed")
                job.state, job.error = "failed", f"{type(err).__name__}: {err}"
            finally:
                if job.state != "done" or job.abandoned:
                    job.col, job.groups = None, []
