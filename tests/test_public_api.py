"""The curated public surface: one sorted `__all__` per public package, and private modules behind it."""

from __future__ import annotations

import importlib
import inspect
import pkgutil
import re
from types import ModuleType

import pytest

import switchman


def _public_packages() -> list[str]:
    found = [m.name for m in pkgutil.walk_packages(switchman.__path__, "switchman.") if m.ispkg]
    return [name for name in found if not any(part.startswith("_") for part in name.split("."))]


SUBPACKAGES = _public_packages()


def public_names(module: ModuleType) -> set[str]:
    """Names a user can import from `module` that are not private and not submodules."""
    return {name for name, value in vars(module).items() if not name.startswith("_") and not inspect.ismodule(value)}


def test_the_subpackages_are_found() -> None:
    # Guard against the discovery silently finding nothing.
    assert {"switchman.evaluate", "switchman.learn", "switchman.routing"} <= set(SUBPACKAGES)


def test_top_level_all_is_sorted_and_is_exactly_the_public_names() -> None:
    assert switchman.__all__ == sorted(switchman.__all__)
    assert len(set(switchman.__all__)) == len(switchman.__all__)
    assert set(switchman.__all__) == public_names(switchman) | {"__version__"}


#: The SDK's surface, pinned: a change here is a change to the public API (and belongs in the README).
TOP_LEVEL = [
    "ArtifactError", "AsyncReplyStream", "BudgetExceededError", "BudgetLimitError", "CallerLimitError", "ConfigError",
    "ContentPolicyViolationError", "ContextWindowExceededError", "DatasetError", "Decision", "DeploymentLimitError",
    "EmbedderUnavailableError", "InvalidRequestError", "LedgerTimeoutError", "LedgerUnavailableError",
    "LocalModelError", "ModelSpec", "NoCapableModelError", "PolicyDeniedError", "RateLimitError", "Reply",
    "ReplyStream", "RouteRequest", "Router", "RouterClosedError", "RoutingError", "SwitchmanError",
    "UnknownEmbedderError", "UnknownModelError", "UpstreamBadRequestError", "UpstreamConnectionError", "UpstreamError",
    "UpstreamServerError", "UpstreamTimeout", "__version__",
]


def all_modules() -> list[str]:
    """Every module of the package, imported (so every class it defines exists)."""
    names = ["switchman", *(m.name for m in pkgutil.walk_packages(switchman.__path__, "switchman."))]
    for name in names:
        importlib.import_module(name)
    return names


def test_top_level_all_is_pinned() -> None:
    assert switchman.__all__ == TOP_LEVEL


#: The gateway's surface, plus `ledger_call`: the one piece of its plumbing another unit needs (the dashboard's
#: timeout wrapper; ui may not import gateway's private modules). The ledger threads' limiter and runner stay
#: private: only the gateway and its tests use them. Errors come from the top level.
GATEWAY = [
    "ACCESS_LOGGER", "AccessLineFormatter", "AccessLineHandler", "Balancer", "CancelledByShutdown", "ChatStream",
    "Completion", "ConfigReloader", "Deployment", "DeploymentStatus", "Dispatcher", "Gateway", "GatewayServer",
    "GuardedHttpProtocol", "HealthBoard", "InProcessClient",
    "KNOWN_PROVIDERS", "Lease", "Provider", "RequestContext", "Scrubber", "StreamFeed", "build_app",
    "build_middleware_stack", "default_config", "default_config_data", "guarded_protocol", "is_loopback", "ledger_call",
    "local_models", "raise_fd_limit", "server_config", "submit_feedback",
]


def test_gateway_all_is_pinned() -> None:
    import switchman.gateway

    assert switchman.gateway.__all__ == GATEWAY


def test_every_error_class_is_exported_from_the_top_level() -> None:
    all_modules()
    found: set[type] = set()
    pending = [switchman.SwitchmanError]
    while pending:
        cls = pending.pop()
        found.add(cls)
        pending.extend(cls.__subclasses__())
    assert len(found) >= 20
    missing = sorted(c.__name__ for c in found if getattr(switchman, c.__name__, None) is not c)
    assert missing == [], f"SwitchmanError subclasses not exported from switchman: {missing}"
    tree = importlib.import_module("switchman._exceptions").__doc__ or ""
    undrawn = sorted(c.__name__ for c in found if not re.search(rf"(─ |^    ){c.__name__}\b", tree, re.MULTILINE))
    assert undrawn == [], f"add these to the tree in switchman/_exceptions.py's docstring: {undrawn}"


@pytest.mark.parametrize("name", ["switchman", *SUBPACKAGES])
def test_every_exported_name_is_documented_where_it_is_defined(name: str) -> None:
    module = importlib.import_module(name)
    for attribute in module.__all__:
        value = getattr(module, attribute)
        if inspect.isclass(value) or inspect.isfunction(value):
            assert inspect.getdoc(value), f"{name}.{attribute} has no docstring"
            defined_in = value.__module__
            assert defined_in.startswith("switchman."), f"{name}.{attribute} comes from {defined_in}"
            # Defined in a private module (the public path is the package), never a public one.
            assert defined_in.rsplit(".", 1)[1].startswith("_"), f"{name}.{attribute} is defined in {defined_in}"


def test_top_level_exports_the_sdk() -> None:
    for name in ("Router", "RouteRequest", "Decision", "ModelSpec", "SwitchmanError", "ConfigError",
                 "NoCapableModelError", "__version__"):
        assert name in switchman.__all__
    assert isinstance(switchman.__version__, str) and switchman.__version__.count(".") >= 1


@pytest.mark.parametrize("name", SUBPACKAGES)
def test_subpackage_all_is_sorted_and_resolves(name: str) -> None:
    module = importlib.import_module(name)
    exported = getattr(module, "__all__", None)
    assert isinstance(exported, list) and exported, f"{name} has no __all__"
    # Plain code-point order, as in switchman.__all__ (capitalised names before lowercase ones).
    assert exported == sorted(exported), f"{name}.__all__ is not sorted"
    assert len(set(exported)) == len(exported)
    for attribute in exported:
        assert getattr(module, attribute, None) is not None, f"{name}.{attribute} does not resolve"
    assert set(exported) == public_names(module), f"{name} exposes names outside __all__ (or the reverse)"


def test_star_import_gives_exactly_all() -> None:
    namespace: dict[str, object] = {}
    exec("from switchman import *", namespace)  # noqa: S102 - the behaviour under test
    assert set(namespace) - {"__builtins__"} == set(switchman.__all__)


def test_implementation_modules_are_private() -> None:
    modules = [m.name for m in pkgutil.walk_packages(switchman.__path__, "switchman.") if not m.ispkg]
    assert modules
    public = [name for name in modules if not name.rsplit(".", 1)[1].startswith("_")]
    assert public == [], f"implementation modules should start with '_': {public}"


def test_errors_share_one_root() -> None:
    errors = [getattr(switchman, n) for n in switchman.__all__ if n.endswith(("Error", "Timeout"))]
    assert len(errors) >= 10
    assert all(issubclass(e, switchman.SwitchmanError) for e in errors)
