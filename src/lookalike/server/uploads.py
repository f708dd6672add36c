"""Uploads are decoded and embedded on worker threads with a bounded queue, never on the event loop."""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from concurrent.futures import Future

# Worker threads decoding and embedding uploads. A 100-megapixel upload (the pixel cap) takes
# ~800 MB while it decodes; with 2 workers 16 such uploads peaked at 1.87 GB instead of 1.0 GB,
# and the CNN runs one upload at a time on every core anyway.
UPLOAD_WORKERS = 1
# Uploads waiting or running at once; one more gets 429. Each holds its body (<= the 20 MB upload
# cap: 640 MB at worst, ~3 MB for 32 phone photos); 32 lets the 32-client load test run without 429s.
UPLOAD_QUEUE = 32


class QueueFull(RuntimeError):
    """The upload queue is full (the server answers 429)."""


class EmbedQueue:
    """Run jobs on ``workers`` daemon threads, at most ``max_pending`` waiting or running.

    Daemon threads: a shutdown never waits for a decode in progress. A job whose future was
    cancelled before it started (the client went away) is skipped.
    """

    def __init__(self, *, workers: int = UPLOAD_WORKERS, max_pending: int = UPLOAD_QUEUE):
        if workers < 1 or max_pending < 1:
            raise ValueError(f"workers and max_pending must be at least 1, got {workers} and {max_pending}")
        self.max_pending = max_pending
        self.model_lock = threading.Lock()  # one CNN call at a time: ONNX Runtime uses every core per call
        self._jobs: queue.SimpleQueue = queue.SimpleQueue()
        self._slots = threading.BoundedSemaphore(max_pending)
        self._pending = 0
        self._count_lock = threading.Lock()
        self._threads = [threading.Thread(target=self._work, name=f"lookalike-upload-{i}", daemon=True)
                         for i in range(workers)]
        for t in self._threads:
            t.start()

    @property
    def pending(self) -> int:
        """Jobs waiting or running."""
        return self._pending

    def submit(self, fn: Callable[[], object]) -> Future:
        """Queue ``fn``; raises :class:`QueueFull` when ``max_pending`` jobs are already pending."""
        if not self._slots.acquire(blocking=False):
            raise QueueFull(f"{self.max_pending} uploads are already being processed; retry in a moment.")
        with self._count_lock:
            self._pending += 1
        fut: Future = Future()
        self._jobs.put((fn, fut))
        return fut

    def _work(self) -> None:
        while True:
            fn, fut = self._jobs.get()
            try:
                if fut.set_running_or_notify_cancel():
                    try:
                        fut.set_result(fn())
                    except BaseException as err:  # noqa: BLE001  handed to the waiting request
                        fut.set_exception(err)
            finally:
                with self._count_lock:
                    self._pending -= 1
                self._slots.release()
