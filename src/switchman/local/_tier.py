"""The local model as part of a configuration: its entries, and the server `switchman serve` runs for it.

A provider named `local` on a loopback address is switchman's own: `switchman serve` (and the SDK's
`Router.chat`) starts the local model server on that address before the gateway and stops it after.
The embedded defaults (and `switchman init`) put it at DEFAULT_LOCAL_BASE_URL, port 0: a free port
is picked when the server starts, so two gateways on one machine never collide, and the address it
got is handed to what calls it (`with_local_url`; `serve --workers` exports it to its workers).
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import httpx

from .._config import Config
from .._hosts import is_loopback
from ._install import INSTALL_HINT, engine_available, gguf_path
from ._server import LOCAL_CONTEXT_WINDOW, LOCAL_MODEL, LocalModelServer

__all__ = [
    "DEFAULT_LOCAL_BASE_URL",
    "LOCAL_PROVIDER",
    "local_model_config",
    "managed_server",
    "serving_local_model",
    "with_local_url",
]

#: The provider name that marks switchman's own local model server.
LOCAL_PROVIDER = "local"
#: Port 0: any free port, chosen when the server starts.
DEFAULT_LOCAL_BASE_URL = "http://127.0.0.1:0/v1"
#: The local model's ability on the LMArena style-controlled scale (see local_model_config).
LOCAL_SCORE = 950.0


def local_model_config(base_url: str = DEFAULT_LOCAL_BASE_URL) -> dict[str, Any]:
    """The `providers` and `models` entries for the local model, shaped like the YAML file."""
    return {
        "providers": {LOCAL_PROVIDER: {"kind": "openai", "base_url": base_url}},
        "models": {
            LOCAL_MODEL: {
                "provider": LOCAL_PROVIDER,
                "input_price": 0.0,
                "output_price": 0.0,
                "context_window": LOCAL_CONTEXT_WINDOW,
                "capabilities": ["json"],
                # Its ability for learned routes: below every model LMArena lists (the weakest, stablelm-
                # tuned-alpha-7b, scores 957; SmolLM2-1.7B 1121), so it takes only prompts any model gets right.
                "score": LOCAL_SCORE,
            }
        },
    }


def managed_server(config: Config) -> LocalModelServer | None:
    """The local model server `config` asks switchman to run (not started), or None when it asks for none."""
    provider = config.providers.get(LOCAL_PROVIDER)
    if provider is None or provider.kind != "openai":
        return None
    if not any(model.provider == LOCAL_PROVIDER for model in config.models.values()):
        return None
    url = httpx.URL(provider.base_url)
    if not is_loopback(url.host):
        return None
    return LocalModelServer(host=url.host, port=url.port if url.port is not None else 80)


def with_local_url(config: Config, base_url: str) -> Config:
    """`config` with its local provider at `base_url` (where the running server listens)."""
    provider = config.providers.get(LOCAL_PROVIDER)
    if provider is None or provider.base_url == base_url:
        return config
    providers = {**config.providers, LOCAL_PROVIDER: provider.model_copy(update={"base_url": base_url})}
    return config.model_copy(update={"providers": providers})


def _to_stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


@contextmanager
def serving_local_model(
    config: Config, *, notify: Callable[[str], None] = _to_stderr
) -> Iterator[LocalModelServer | None]:
    """Run the local model server `config` uses for the duration of the block (`switchman serve`)."""
    server = managed_server(config)
    if server is None:
        if engine_available() and gguf_path() is None:
            notify(f"local model: xllamacpp is installed but the model's weights are not; {INSTALL_HINT}")
        yield None
        return
    with server:
        notify(f"local model: {server.model_name} serving at {server.base_url}")
        yield server
