"""`switchman serve` and `switchman init`, as plain functions the CLI wires up."""

from __future__ import annotations

import logging
import shutil
import sys
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import yaml
from sqlalchemy.exc import SQLAlchemyError

from .._config import Config, load_config, parse_config
from .._config_server import check_redis_url
from .._environ import (
    Environment,
    export_bind_host,
    export_config_file,
    export_local_url,
    export_metrics_dir,
    export_redis_url,
)
from .._exceptions import ConfigError, SwitchmanError
from ..gateway import default_config, default_config_data, is_loopback
from ._litellm import Import, from_litellm
from ._serve_setup import check_port_free, check_router_files, local_address, log_config

__all__ = ["app_from_environment", "check_bind", "import_litellm_command", "init_command", "serve_command"]

#: Seconds uvicorn waits for a new worker to serve (at start and on SIGHUP) before giving up on it.
_WORKER_READY_S = 60


def check_bind(host: str, *, auth: str = "auto", has_keys: bool, master_key: bool,
               keys_unread: str | None = None) -> None:
    """Refuse to listen beyond loopback while nothing authenticates requests.

    `has_keys`: authentication was switched on in the keys database (a key was created there once);
    `keys_unread`: why that could not be asked (the ledger is unreachable), so it is unknown.
    """
    if is_loopback(host):
        return
    if auth == "off":
        raise ConfigError(f"refusing to listen on {host} with server.auth: off: anyone who can reach the port could "
                          "spend your provider credits; remove `auth: off` or listen on 127.0.0.1")
    if auth == "auto" and not has_keys and not master_key and keys_unread is not None:
        raise ConfigError(
            f"refusing to listen on {host}: {keys_unread}, so whether a virtual key protects the port is unknown "
            "and no master key is set; fix the ledger "
            "(server.ledger_url), set the master key variable, or listen on 127.0.0.1"
        )
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
    """ASGI app factory for worker processes (reads the environment once: $SWITCHMAN_CONFIG, keys, the local model)."""
    from .._threads import limit_blas_threads
    from ..gateway import ConfigReloader, Gateway, GuardedHttpProtocol, raise_fd_limit
    from ..ui import serving_app  # the command line composes the gateway and the dashboard

    env = Environment.read()
    limit_blas_threads(env)  # a spawned worker did not run the CLI's process setup
    adjust = local_address(env)
    try:
        config, base_dir = _load(env.config_file, env)
        # uvicorn builds the worker's protocol from its import string, so the limits go on that class;
        # this is the worker process's own copy, set once before it accepts a connection.
        GuardedHttpProtocol.limits = config.server.limits.model_copy(
            update={"max_connections": raise_fd_limit(config.server.limits)})
        # The gateway knows where it listens: beyond loopback it never serves a request without a key.
        host = env.bind_host or config.server.host
        config = config.model_copy(update={"server": config.server.model_copy(update={"host": host})})
        gateway = Gateway.from_config(adjust(config), base_dir=base_dir, env=env)
    except SwitchmanError as exc:  # a reload (SIGHUP to the parent) with a bad file: the old workers stay
        from uvicorn.config import STARTUP_FAILURE

        logging.getLogger("switchman.gateway").error("configuration failed, this worker does not start: %s", exc)
        sys.exit(STARTUP_FAILURE)
    reloader = ConfigReloader(gateway, env.config_file, adjust=adjust) if env.config_file else None
    return serving_app(gateway, bind_host=host, base_dir=base_dir, reloader=reloader, settle_heap=True)


def _has_keys(settings: Config) -> tuple[bool, str | None]:
    """Whether authentication was ever switched on in the keys database (a key was created there once), and
    why that could not be asked (None when it was)."""
    from ..ledger import KeyStore, unreadable

    try:
        keys = KeyStore(settings.server.ledger_url)
    except ValueError as exc:  # an unparseable or unsupported URL (server.ledger_url, $SWITCHMAN_LEDGER_URL)
        raise ConfigError(f"the ledger: {exc}") from None
    try:
        return keys.auth_enabled(), None
    except SQLAlchemyError as exc:  # the ledger is unreachable: we cannot tell, so only loopback is safe
        return False, unreadable(keys.url, exc)
    finally:
        keys.close()


@contextmanager
def metrics_directory(env: Environment) -> Iterator[Path]:
    """prometheus_client's multiprocess directory for the workers: emptied before they start, removed after.

    A directory the operator named in $PROMETHEUS_MULTIPROC_DIR is used (its `*.db` files from an
    earlier run deleted, the directory kept); otherwise a fresh temporary one.
    """
    named = env.metrics_dir
    path = Path(named) if named else Path(tempfile.mkdtemp(prefix="switchman-metrics-"))
    path.mkdir(parents=True, exist_ok=True)
    for stale in path.glob("*.db"):
        stale.unlink()
    export_metrics_dir(path)
    try:
        yield path
    finally:
        if named:
            for used in path.glob("*.db"):
                used.unlink(missing_ok=True)
        else:
            shutil.rmtree(path, ignore_errors=True)


def serve_command(
    config: Path | None = None, host: str | None = None, port: int | None = None, workers: int = 1,
    access_log: bool = True, redis_url: str | None = None,
) -> None:
    """Run the gateway (uvicorn) until interrupted; SIGHUP reloads `config`. With one worker (the default), a second
    Ctrl-C still records the running requests and closes the gateway (`GatewayServer`)."""
    import uvicorn

    if redis_url:  # through the environment: worker processes and reloads see it too
        export_redis_url(redis_url)
    env = Environment.read()
    settings, base_dir = _load(config, env)
    try:
        check_redis_url(env.redis_url)  # --redis-url or $SWITCHMAN_REDIS_URL: one line now, not at startup
    except ValueError as exc:
        raise ConfigError(f"--redis-url: {exc}") from None
    pinned = {name: value for name, value in (("host", host), ("port", port)) if value is not None}
    host = host or settings.server.host
    port = settings.server.port if port is None else port
    has_keys, keys_unread = _has_keys(settings)
    check_bind(host, auth=settings.server.auth, has_keys=has_keys, keys_unread=keys_unread,
               master_key=bool(env.get(settings.server.master_key_env)))
    check_port_free(host, port)
    check_router_files(settings, base_dir)
    # The gateway knows where it listens: beyond loopback it never serves a request without a key.
    settings = settings.model_copy(update={"server": settings.server.model_copy(update={"host": host, "port": port})})
    # One access line per request (the ledger is the record); --no-access-log turns it off.
    options: dict[str, Any] = {"host": host, "port": port, "log_level": "info", "access_log": False,
                               "log_config": log_config(access_log=access_log), "timeout_graceful_shutdown": 30}
    from ..local import serving_local_model

    # The local model tier (switchman[local]): its server starts before the gateway and stops after it.
    with serving_local_model(settings) as local:
        if local is not None:  # its port was picked at start: workers and reloads learn it from the environment
            export_local_url(local.base_url)
            env = Environment.read()
        if workers > 1:
            if config is not None:
                export_config_file(Path(config).resolve())
            export_bind_host(host)
            # A fresh worker loads router files and embedders before it serves: give it time to, on a busy machine.
            limits = settings.server.limits
            with metrics_directory(env):  # /metrics on any worker sums every worker's series
                uvicorn.run("switchman.cli._serve:app_from_environment", factory=True, workers=workers,
                            timeout_worker_healthcheck=_WORKER_READY_S, http="switchman.gateway:GuardedHttpProtocol",
                            ws="none", timeout_keep_alive=limits.keepalive_timeout_s,  # type: ignore[arg-type]
                            **options)
            return
        from ..gateway import ConfigReloader, Gateway, GatewayServer, server_config
        from ..ui import serving_app

        adjust = _listening(local_address(env), pinned)
        gateway = Gateway.from_config(adjust(settings), base_dir=base_dir, env=env)
        gateway.decider.warm_up()  # a router file or embedder that fails says so here, in one line
        reloader = ConfigReloader(gateway, config, adjust=adjust) if config is not None else None
        app = serving_app(gateway, bind_host=host, base_dir=base_dir, reloader=reloader, settle_heap=True)
        # One worker only: with --workers, uvicorn's supervisor builds a plain uvicorn.Server in each worker (it
        # takes no server class), so there a second Ctrl-C skips the requests' rows and the ledger's close.
        GatewayServer(server_config(app, settings.server.limits, **options),
                      close_timeout_s=settings.server.ledger_close_timeout_s).run()


def _listening(adjust: Callable[[Config], Config], pinned: dict[str, Any]) -> Callable[[Config], Config]:
    """`adjust`, then the address the command line gave (`--host`, `--port`): a reloaded file that names
    another one does not move the server, so the configuration keeps saying where it listens."""
    if not pinned:
        return adjust

    def listening(config: Config) -> Config:
        config = adjust(config)
        return config.model_copy(update={"server": config.server.model_copy(update=pinned)})

    return listening


def init_command(path: Path = Path("switchman.yaml"), force: bool = False) -> list[str]:
    """Write the embedded default configuration for this environment to `path`; the models it names."""
    if path.exists() and not force:
        raise ConfigError(f"{path} already exists; pass --force to overwrite it")
    data = default_config_data(Environment.read())
    data["server"] = {"host": "127.0.0.1", "port": 8080}
    header = (
        "# switchman configuration, written by `switchman init`.\n"
        "# Models come from the providers whose key variables were set; add more under 'models'.\n"
        "# The default route is learned: the bundled router places each model by its public (LMArena) score\n"
        "# (`switchman models` lists them; a model without one needs `score: N`), calibrated to 95% of the best\n"
        "# candidate's quality. `switchman route \"...\"` shows a decision and why.\n"
    )
    _write(path, header + yaml.dump(data, Dumper=_PlainDumper, sort_keys=False))
    return list(data.get("models") or {})


def _write(path: Path, text: str) -> None:
    """Write the configuration file; a missing folder or a directory in the way is one error line."""
    try:
        path.write_text(text, encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{path}: cannot write the configuration file ({exc.strerror or exc})") from None


class _PlainDumper(yaml.SafeDumper):
    """Writes a list used twice as itself twice: no `&id001` anchors or `*id001` aliases in a file people edit."""

    def ignore_aliases(self, data: object) -> bool:
        return True


def _comment(lines: list[str]) -> str:
    return "".join(f"#   {line}\n" for line in lines)


def import_litellm_command(source: Path, path: Path = Path("switchman.yaml"), force: bool = False) -> Import:
    """Write `source` (a LiteLLM proxy config.yaml) as a switchman configuration at `path`; return the report."""
    if path.exists() and not force:
        raise ConfigError(f"{path} already exists; pass --force to overwrite it")
    try:
        data = yaml.safe_load(source.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{source}: file not found") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{source}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    except OSError as exc:  # a directory, no permission, ...
        raise ConfigError(f"{source}: cannot read the file ({exc.strerror or exc})") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{source}: not valid YAML: {getattr(exc, 'problem', exc)}") from None
    if not isinstance(data, dict) or not isinstance(data.get("model_list"), list):
        raise ConfigError(f"{source}: not a LiteLLM proxy configuration (no model_list)")
    result = from_litellm(data)
    parse_config(result.config, source=f"{path} (imported from {source})")  # what is written loads
    header = f"# switchman configuration, imported from the LiteLLM configuration {source} by `switchman init`.\n"
    if result.not_mapped:
        header += "# Not carried over:\n" + _comment(result.not_mapped)
    if result.unpriced:
        dumped = yaml.dump({"models": result.unpriced}, Dumper=_PlainDumper, sort_keys=False).splitlines()
        header += "# Left out until priced (add input_price and output_price, then move under models):\n" + \
            _comment(dumped)
    _write(path, header + yaml.dump(result.config, Dumper=_PlainDumper, sort_keys=False))
    return result
