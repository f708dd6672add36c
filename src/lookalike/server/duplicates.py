"""Duplicate groups for the server: computed once per generation in a background thread, then cached.

A request for ``(threshold, strict)`` on the generation being served starts the job (or finds
it); while it runs the server answers 202 with its progress, then pages through the cached
groups. Pairs are capped at ``max_pairs`` (the best ones kept; ``truncated`` says so), so the
work and memory are bounded whatever the threshold. A job of a generation that is no longer
served is abandoned at its next progress report.

Like ``lookalike dupes`` (:func:`lookalike.dupes.review_groups`), a job verifies hard copies when
:func:`lookalike.dupes.verification` says so ("auto": OpenCV installed and at most
:data:`lookalike.verify.AUTO_MAX_IMAGES` images): the pairs below the threshold that local features
show to be the same photo (:func:`lookalike.pairs.verified_pairs`) join the groups, and each member
below the threshold to its keeper is checked against it; :attr:`Job.verified` holds the id pairs
that passed, which :func:`lookalike.actions.chosen_groups` lets act.
"""

from __future__ import annotations

import logging
import os
import queue
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field

from ..dupes import Group, group_pairs, scan_pairs, verification, verified_pairs
from .uploads import QueueFull

log = logging.getLogger(__name__)

# Pairs kept per job: 100,000 pairs are ~25 MB of Python objects; a lower threshold reports
# the 100,000 strongest pairs with truncated = true instead of growing without bound.
MAX_PAIRS = 100_000
# Finished results kept (per generation: a new generation drops the old ones).
CACHE_ENTRIES = 8
# Jobs queued or running at once; one more request for a new (threshold, strict) gets 429.
MAX_JOBS = 4
# Progress of a job that verifies: the pair scan up to SCAN_SHARE, the verification (the slow part:
# ~23 ms an image) up to VERIFY_SHARE, then the check of chained members against their keepers.
SCAN_SHARE = 0.1
VERIFY_SHARE = 0.9


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


def _verified_members(col, groups: list[Group], threshold: float, known: frozenset) -> frozenset:
    """``known`` plus the (keeper, member) pairs of ``groups`` below ``threshold`` that verify.

    Each member below the threshold to its keeper and not in ``known`` is checked against the keeper
    by :func:`lookalike.actions.chosen_groups` (the rule of ``lookalike dupes``). Only groups of 3
    or more can hold one: the member of a pair scores at or above the threshold or is in ``known``.
    """
    from ..actions import chosen_groups

    big = [g for g in groups if len(g.ids) > 2]
    if not big:
        return known
    choices = [(g.keeper, [i for i in g.ids if i != g.keeper]) for g in big]
    found = {(min(m.id, rg.keeper), max(m.id, rg.keeper)) for rg in chosen_groups(
        col, choices, threshold, verified=known, check=True) for m in rg.members if m.verified}
    return known | found


@dataclass
class Job:
    """One duplicate computation and its result."""

    col: object
    threshold: float
    strict: bool
    state: str = "queued"  # queued, running, done, failed
    phase: str = "pairs"  # pairs, verifying (hard copies below the threshold), grouping
    progress: float = 0.0
    groups: list[Group] = field(default_factory=list)
    pairs: int = 0
    truncated: bool = False
    verify: bool = False  # hard copies below the threshold were verified (verification "auto" was on)
    verify_note: str | None = None  # why not, when "auto" is off (OpenCV missing, too many images)
    verified_pairs: int = 0  # pairs below the threshold added by the verification
    verified: frozenset = frozenset()  # (low id, high id) pairs below the threshold that verified
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

    def verified(self, col, threshold: float, strict: bool) -> frozenset:
        """The verified id pairs of the done job for ``(threshold, strict)`` on ``col`` (else none); starts nothing."""
        with self._lock:
            job = self._jobs.get((id(col), float(threshold), bool(strict)))
            return job.verified if job is not None and job.state == "done" and job.col is col else frozenset()

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

            def share(lo, hi, job=job):
                def report(fraction):
                    if job.abandoned:
                        raise _Abandoned
                    job.progress = round(lo + (hi - lo) * float(fraction), 4)

                return report

            try:
                plan = verification(job.col)  # "auto", the rule of lookalike dupes
                job.verify, job.verify_note = plan.on, plan.note
                scanned = SCAN_SHARE if plan.on else 0.95  # grouping is the last 5%
                scan = scan_pairs(job.col, job.threshold, method=self.method, max_pairs=self.max_pairs,
                                  progress=share(0.0, scanned))
                pairs = _undecided(job.col, scan.pairs, self.exclude_under)
                known = frozenset()
                if plan.on:
                    job.phase = "verifying"
                    extra = verified_pairs(job.col, job.threshold, method=self.method,
                                           progress=share(scanned, VERIFY_SHARE))
                    extra = _undecided(job.col, extra, self.exclude_under)
                    known = frozenset((min(p.id_a, p.id_b), max(p.id_a, p.id_b)) for p in extra)
                    pairs, job.verified_pairs = pairs + extra, len(extra)
                job.phase = "grouping"
                groups = group_pairs(job.col, pairs, strict=job.strict)
                job.verified = _verified_members(job.col, groups, job.threshold, known) if plan.on else known
                job.groups = groups
                job.pairs, job.truncated = len(scan.pairs), scan.truncated
                job.seconds = round(time.perf_counter() - t0, 3)
                job.progress, job.state = 1.0, "done"
                log.info("duplicates at %.3f: %d groups from %d pairs (%d verified below it) in %.1f s",
                         job.threshold, len(job.groups), job.pairs, job.verified_pairs, job.seconds)
            except _Abandoned:
                job.state = "failed"
                job.error = "the collection changed while this ran"
            except Exception as err:  # noqa: BLE001  reported to the client, retried at the next request
                log.exception("duplicate search failed")
                job.state, job.error = "failed", f"{type(err).__name__}: {err}"
            finally:
                if job.state != "done" or job.abandoned:
                    job.col, job.groups = None, []
