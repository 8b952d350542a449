"""The curated public surface: one sorted `__all__` per public package, and private modules behind it."""

from __future__ import annotations

import importlib
import inspect
import pkgutil
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
