"""BLAS thread limit applied at process start."""

from __future__ import annotations

import os
import subprocess
import sys


def test_blas_is_limited_to_one_thread_unless_overridden() -> None:
    code = (
        "from switchman._threads import limit_blas_threads\n"
        "limit_blas_threads()\n"
        "from threadpoolctl import threadpool_info\n"
        "print(sorted({i['num_threads'] for i in threadpool_info() if i['user_api'] == 'blas'}))\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "SWITCHMAN_BLAS_THREADS"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env).stdout
    assert out.strip() == "[1]"
    env["SWITCHMAN_BLAS_THREADS"] = "2"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env).stdout
    assert out.strip() == "[2]"
