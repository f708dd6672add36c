"""Process-level tuning that applications (the CLI, benchmarks) opt into; libraries never call it."""

from __future__ import annotations

import ctypes
import ctypes.util
import os

_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4
# Keep up to 1 GiB of freed heap instead of returning it to the OS after every batch;
# on VMs where page faults are expensive this makes torch and Pillow 1.5-2x faster.
TRIM_THRESHOLD_BYTES = 1 << 30


def tune_process() -> None:
    """Tune glibc malloc and OpenMP for batch inference (call before importing torch)."""
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # spinning OpenMP threads starve decode workers
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.mallopt(_M_MMAP_MAX, 0)
        libc.mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD_BYTES)
    except (OSError, AttributeError):
        pass  # not glibc: nothing to tune
