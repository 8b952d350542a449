"""The process environment, read in one place: every variable switchman reads is named here.

    env = Environment.read()                       # one snapshot, when a process part is built
    Gateway.from_config(config, env=env)           # provider keys and the master key, by variable name
    env.ledger_url, env.redis_url, env.cache_dir, env.blas_threads, env.embeddings_api_key, env.config_file

The command line, the gateway (and each of its worker processes) and the SDK's in-process client
take one snapshot when they are built and hand it to what they build; nothing on the request path
reads the environment, and no other module touches `os.environ` (tests/test_layers.py checks).
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from pathlib import Path

__all__ = [
    "BIND_HOST_ENV",
    "BLAS_THREADS_ENV",
    "CACHE_DIR_ENV",
    "CONFIG_ENV",
    "EMBEDDINGS_API_KEY_ENV",
    "LEDGER_URL_ENV",
    "LOCAL_URL_ENV",
    "METRICS_DIR_ENV",
    "REDIS_URL_ENV",
    "Environment",
    "export_bind_host",
    "export_config_file",
    "export_local_url",
    "export_metrics_dir",
    "export_redis_url",
]

#: The ledger's URL when the configuration gives none (else SQLite in the user's data directory).
LEDGER_URL_ENV = "SWITCHMAN_LEDGER_URL"
#: Where embeddings of training and evaluation prompts are cached (default ~/.cache/switchman).
CACHE_DIR_ENV = "SWITCHMAN_CACHE_DIR"
#: BLAS threads per process (default 1; see switchman._threads).
BLAS_THREADS_ENV = "SWITCHMAN_BLAS_THREADS"
#: Bearer token for `openai:<base_url>#<model>` embedders.
EMBEDDINGS_API_KEY_ENV = "SWITCHMAN_EMBEDDINGS_API_KEY"
#: The configuration file `switchman serve --workers N` hands its worker processes.
CONFIG_ENV = "SWITCHMAN_CONFIG"
#: And the address it listens on (the dashboard opens without a key on a loopback bind only).
BIND_HOST_ENV = "SWITCHMAN_BIND_HOST"
#: The Redis replicas share state on (`serve --redis-url`; overrides server.redis_url).
REDIS_URL_ENV = "SWITCHMAN_REDIS_URL"
#: Where the local model server `switchman serve` started listens (its port is picked at start).
LOCAL_URL_ENV = "SWITCHMAN_LOCAL_URL"
#: prometheus_client's multiprocess directory: `serve --workers N` sets it so /metrics sums every worker.
METRICS_DIR_ENV = "PROMETHEUS_MULTIPROC_DIR"


class Environment(Mapping[str, str]):
    """A read-only snapshot of environment variables; provider keys are looked up in it by variable name."""

    def __init__(self, values: Mapping[str, str] | None = None) -> None:
        self._values = dict(values or {})

    @classmethod
    def read(cls) -> Environment:
        """This process's environment, now."""
        return cls(os.environ)

    def __getitem__(self, name: str) -> str:
        return self._values[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)

    def __repr__(self) -> str:  # never the values: they hold keys
        return f"Environment({len(self._values)} variables)"

    @property
    def ledger_url(self) -> str | None:
        """$SWITCHMAN_LEDGER_URL, if set."""
        return self._values.get(LEDGER_URL_ENV) or None

    @property
    def data_home(self) -> Path:
        """$XDG_DATA_HOME, else ~/.local/share."""
        return Path(self._values.get("XDG_DATA_HOME") or Path.home() / ".local" / "share")

    @property
    def state_home(self) -> Path:
        """$XDG_STATE_HOME, else ~/.local/state (what outlives a process but is no user data: the ledger's spill)."""
        return Path(self._values.get("XDG_STATE_HOME") or Path.home() / ".local" / "state")

    @property
    def cache_dir(self) -> Path:
        """$SWITCHMAN_CACHE_DIR, else ~/.cache/switchman."""
        return Path(self._values.get(CACHE_DIR_ENV) or Path.home() / ".cache" / "switchman")

    @property
    def blas_threads(self) -> int:
        """$SWITCHMAN_BLAS_THREADS when a positive integer, else 1."""
        raw = self._values.get(BLAS_THREADS_ENV, "1")
        return int(raw) if raw.isdigit() and int(raw) > 0 else 1

    @property
    def embeddings_api_key(self) -> str | None:
        """$SWITCHMAN_EMBEDDINGS_API_KEY, if set."""
        return self._values.get(EMBEDDINGS_API_KEY_ENV) or None

    @property
    def bind_host(self) -> str | None:
        """$SWITCHMAN_BIND_HOST, if set (where `serve --workers N` listens)."""
        return self._values.get(BIND_HOST_ENV) or None

    @property
    def redis_url(self) -> str | None:
        """$SWITCHMAN_REDIS_URL, if set (overrides server.redis_url: `serve --redis-url`, or set by hand)."""
        return self._values.get(REDIS_URL_ENV) or None

    @property
    def config_file(self) -> str | None:
        """$SWITCHMAN_CONFIG, if set (a `serve --workers N` worker's configuration)."""
        return self._values.get(CONFIG_ENV) or None

    @property
    def local_url(self) -> str | None:
        """$SWITCHMAN_LOCAL_URL, if set (the running local model server, for workers and reloads)."""
        return self._values.get(LOCAL_URL_ENV) or None

    @property
    def metrics_dir(self) -> str | None:
        """$PROMETHEUS_MULTIPROC_DIR, if set (workers write their metrics there; /metrics sums them)."""
        return self._values.get(METRICS_DIR_ENV) or None


def export_bind_host(host: str) -> None:
    """Hand the listening address to worker processes `serve --workers N` spawns (they inherit it)."""
    os.environ[BIND_HOST_ENV] = host


def export_redis_url(url: str) -> None:
    """Hand `serve --redis-url` to worker processes and reloads (they inherit it)."""
    os.environ[REDIS_URL_ENV] = url


def export_config_file(path: Path) -> None:
    """Hand the configuration file to worker processes `serve --workers N` spawns (they inherit it)."""
    os.environ[CONFIG_ENV] = str(path)


def export_local_url(url: str) -> None:
    """Hand the running local model server's address to worker processes (and to this process's reloads)."""
    os.environ[LOCAL_URL_ENV] = url


def export_metrics_dir(path: Path) -> None:
    """Hand prometheus_client's multiprocess directory to worker processes (read when they import it)."""
    os.environ[METRICS_DIR_ENV] = str(path)
