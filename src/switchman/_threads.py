"""One BLAS thread per process, set once at process start (CLI and gateway worker processes).

switchman's matrices are small (one prompt against a few thousand neighbours; a rank-16
factorisation), where a second BLAS thread buys little and, on a busy 2-core machine or next to
other gateway workers, spins: measured here, one factorisation fit took 1.1 s CPU on one thread and
48 s wall on two while other jobs ran. Override with SWITCHMAN_BLAS_THREADS (see switchman._environ).
"""

from __future__ import annotations

from ._environ import BLAS_THREADS_ENV, Environment

__all__ = ["BLAS_THREADS_ENV", "limit_blas_threads"]


def limit_blas_threads(env: Environment | None = None) -> int:
    """Apply the limit to the BLAS numpy loaded (loading it first); returns the thread count."""
    import numpy  # noqa: F401  (threadpoolctl limits only libraries already loaded)
    from threadpoolctl import threadpool_limits

    threads = (env if env is not None else Environment.read()).blas_threads
    threadpool_limits(limits=threads, user_api="blas")
    return threads
