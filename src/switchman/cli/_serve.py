"""`switchman serve` and `switchman init`, as plain functions the CLI wires up."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from sqlalchemy.exc import SQLAlchemyError

from .._config import Config, load_config
from .._environ import Environment, export_bind_host, export_config_file
from .._exceptions import ConfigError
from ..gateway import default_config, default_config_data, is_loopback

__all__ = ["app_from_environment", "check_bind", "init_command", "serve_command"]

def check_bind(host: str, *, auth: str = "auto", has_keys: bool, master_key: bool) -> None:
    """Refuse to listen beyond loopback while nothing authenticates requests.

    `has_keys`: authentication was switched on in the keys database (a key was created there once).
    """
    if is_loopback(host):
        return
    if auth == "off":
        raise ConfigError(f"refusing to listen on {host} with server.auth: off: anyone who can reach the port could "
                          "spend your provider credits; remove `auth: off` or listen on 127.0.0.1")
    if auth == "auto" and not has_keys and not master_key:
        raise ConfigError(
            f"refusing to listen on {host}: no virtual keys and no master key are configured, so anyone who "
            "can reach the port could spend your provider credits; create a key with `switchman keys create`, "
            "set the master key variable, or listen on 127.0.0.1"
        )


def _load(config_path: str | Path | None, env: Environment) -> tuple[Config, Path]:
    if config_path is None:
        return default_config(env), Path.cwd()
    path = Path(config_path)
    return load_config(path), path.parent


def app_from_environment():  # type: ignore[no-untyped-def]
    """ASGI app factory for worker processes (reads the environment once: $SWITCHMAN_CONFIG, keys)."""
    from .._threads import limit_blas_threads
    from ..gateway import Gateway, GuardedHttpProtocol, raise_fd_limit
    from ..ui import serving_app  # the command line composes the gateway and the dashboard

    env = Environment.read()
    limit_blas_threads(env)  # a spawned worker did not run the CLI's process setup
    config, base_dir = _load(env.config_file, env)
    # uvicorn builds the worker's protocol from its import string, so the limits go on that class;
    # this is the worker process's own copy, set once before it accepts a connection.
    GuardedHttpProtocol.limits = config.server.limits.model_copy(
        update={"max_connections": raise_fd_limit(config.server.limits)})
    # The gateway knows where it listens: beyond loopback it never serves a request without a key.
    host = env.bind_host or config.server.host
    config = config.model_copy(update={"server": config.server.model_copy(update={"host": host})})
    gateway = Gateway.from_config(config, base_dir=base_dir, env=env)
    return serving_app(gateway, bind_host=host, base_dir=base_dir)


def serve_command(
    config: Path | None = None, host: str | None = None, port: int | None = None, workers: int = 1
) -> None:
    """Run the gateway (uvicorn) until interrupted."""
    import uvicorn

    from ..ledger import KeyStore

    env = Environment.read()
    settings, base_dir = _load(config, env)
    host = host or settings.server.host
    port = settings.server.port if port is None else port
    keys = KeyStore(settings.server.ledger_url)
    try:
        has_keys = keys.auth_enabled()
    except SQLAlchemyError:  # the ledger is unreachable: we cannot tell, so only loopback is safe
        has_keys = False
    finally:
        keys.close()
    check_bind(host, auth=settings.server.auth, has_keys=has_keys,
               master_key=bool(env.get(settings.server.master_key_env)))
    # The gateway knows where it listens: beyond loopback it never serves a request without a key.
    settings = settings.model_copy(update={"server": settings.server.model_copy(update={"host": host, "port": port})})
    # The ledger is the request log: no per-request access log line on the hot path.
    options: dict[str, Any] = {"host": host, "port": port, "log_level": "info", "access_log": False,
                               "timeout_graceful_shutdown": 30}
    from ..local import serving_local_model

    # The local model tier (switchman[local]): its server starts before the gateway and stops after it.
    with serving_local_model(settings):
        if workers > 1:
            if config is not None:
                export_config_file(Path(config).resolve())
            export_bind_host(host)
            limits = settings.server.limits
            uvicorn.run("switchman.cli._serve:app_from_environment", factory=True, workers=workers,
                        http="switchman.gateway:GuardedHttpProtocol", ws="none",
                        timeout_keep_alive=limits.keepalive_timeout_s, **options)  # type: ignore[arg-type]
            return
        from ..gateway import Gateway, server_config
        from ..ui import serving_app

        gateway = Gateway.from_config(settings, base_dir=base_dir, env=env)
        app = serving_app(gateway, bind_host=host, base_dir=base_dir)
        uvicorn.Server(server_config(app, settings.server.limits, **options)).run()


def init_command(path: Path = Path("switchman.yaml"), force: bool = False) -> Path:
    """Write the embedded default configuration for this environment to `path`."""
    if path.exists() and not force:
        raise ConfigError(f"{path} already exists; pass --force to overwrite it")
    data = default_config_data(Environment.read())
    data["server"] = {"host": "127.0.0.1", "port": 8080}
    header = (
        "# switchman configuration, written by `switchman init`.\n"
        "# Models come from the providers whose key variables were set; add more under 'models'.\n"
    )
    path.write_text(header + yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return path
