"""One BLAS thread per process, set once at process start (CLI and gateway worker processes).

switchman's matrices are small (one prompt against a few thousand neighbours; a rank-16
factorisation), where a second BLAS thread buys little and, on a busy 2-core machine or next to
other gateway workers, spins: measured here, one factorisation fit took 1.1 s CPU on one thread and
48 s wall on two while other jobs ran. Override with SWITCHMAN_BLAS_THREADS.
"""

from __future__ import annotations

import os

__all__ = ["BLAS_THREADS_ENV", "limit_blas_threads"]

BLAS_THREADS_ENV = "SWITCHMAN_BLAS_THREADS"


def limit_blas_threads() -> int:
    """Apply the limit to the BLAS numpy loaded (loading it first); returns the thread count."""
    import numpy  # noqa: F401  (threadpoolctl limits only libraries already loaded)
    from threadpoolctl import threadpool_limits

    raw = os.environ.get(BLAS_THREADS_ENV, "1")
    threads = int(raw) if raw.isdigit() and int(raw) > 0 else 1
    threadpool_limits(limits=threads, user_api="blas")
    return threads
