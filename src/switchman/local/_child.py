"""The child process LocalModelServer runs: `python -m switchman.local._child --model FILE ...`.

It starts xllamacpp's embedded llama.cpp server, prints the address it listens on as its first line
of stdout, and exits when its stdin closes — which happens when the parent stops it or dies, so the
server never outlives switchman.
"""

from __future__ import annotations

import argparse
import os
import sys

__all__ = ["main"]


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m switchman.local._child")
    parser.add_argument("--model", required=True, help="GGUF file")
    parser.add_argument("--alias", required=True, help="model name the server reports")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0: any free port")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--ctx", type=int, default=8192, help="context window in tokens")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Serve until stdin closes; exit status 1 when the server cannot start."""
    args = _parse(argv)
    import xllamacpp

    params = xllamacpp.CommonParams()
    params.model.path = args.model
    params.model_alias = {args.alias}
    params.hostnames = [args.host]
    params.port = args.port
    params.n_ctx = args.ctx
    params.cpuparams.n_threads = args.threads
    params.cpuparams_batch.n_threads = args.threads
    params.verbosity = 1  # errors only: why a model or port failed, not every request
    try:
        server = xllamacpp.Server(params)
    except RuntimeError as exc:
        print(f"xllamacpp: {exc}", file=sys.stderr, flush=True)
        return 1
    print(server.listening_address, flush=True)
    sys.stdin.buffer.read()
    sys.stdout.flush()
    # Skip interpreter teardown: the parent is done with us, and llama.cpp's destructors add nothing.
    os._exit(0)


if __name__ == "__main__":
    sys.exit(main())
