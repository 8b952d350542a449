"""The import graph of src/switchman keeps the layers of DESIGN.md one-way.

Read from the source with `ast` (every import, including those inside functions and under
TYPE_CHECKING), grouped into units: each subpackage (`gateway`, `learn`, ...) is one unit, each
top-level module (`_config`, `_decider`, ...) another, and the root `__init__` with `_router` is
the SDK. The rules:

1. A unit imports only units on lower rows of LAYERS (ground-floor modules may also import each
   other; other units sharing a row are independent).
2. No cycle between units.
3. Across units, a subpackage is reached only through its `__init__`, never a private `_module`.
4. Only the command line imports Rich and Typer.
5. Only `switchman/_environ.py` reads or writes the process environment.

A new package or top-level module must be placed in LAYERS before its first import passes.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import switchman

SRC = Path(switchman.__file__).parent
ROOT = "switchman"

#: Top to bottom, as DESIGN.md draws them; `sdk` is `switchman/__init__.py` with `switchman/_router.py`.
LAYERS: tuple[tuple[str, ...], ...] = (
    ("__main__",),
    ("cli",),
    ("sdk",),
    ("ui",),
    ("gateway",),
    ("local", "testing"),
    ("state",),
    ("evaluate",),
    ("ledger",),
    ("_decider",),
    ("learn",),
    ("routing",),
    ("__version__", "_catalog", "_config", "_config_hints", "_config_server", "_context_values", "_environ",
     "_exceptions", "_hosts",
     "_limits", "_money", "_slashes", "_slots", "_streaks", "_threads", "_tokens", "_urls"),
)
GROUND = LAYERS[-1]
LEVEL = {unit: row for row, units in enumerate(LAYERS) for unit in units}
#: Third-party packages only some units may import.
RESTRICTED = {"rich": {"cli"}, "typer": {"cli"}}


@dataclass(frozen=True)
class Import:
    """One import statement's target, as a dotted module name."""

    source: str  # importing module, e.g. switchman.gateway._dispatcher
    target: str  # imported module, e.g. switchman.routing
    line: int
    file: Path

    def __str__(self) -> str:
        return f"{self.file.relative_to(SRC.parent)}:{self.line}: {self.source} imports {self.target}"


def module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def is_module(name: str) -> bool:
    """Whether a dotted switchman name is a module or package in the source tree."""
    relative = Path(*name.split("."))
    return (SRC.parent / relative).with_suffix(".py").is_file() or (SRC.parent / relative / "__init__.py").is_file()


def imports(path: Path) -> Iterator[Import]:
    """Every import in one file, relative ones resolved; `from pkg import _mod` names the submodule."""
    source = module_name(path)
    package = source if path.name == "__init__.py" else source.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield Import(source, alias.name, node.lineno, path)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                target = ".".join([*base, node.module] if node.module else base)
            else:
                target = node.module or ""
            for alias in node.names:
                submodule = f"{target}.{alias.name}"
                yield Import(source, submodule if is_module(submodule) else target, node.lineno, path)


def unit_of(module: str) -> str:
    """The unit a switchman module belongs to."""
    parts = module.split(".")
    if len(parts) == 1 or parts[1] == "_router":
        return "sdk"
    return parts[1]


def is_package(unit: str) -> bool:
    return (SRC / unit / "__init__.py").is_file()


def all_imports() -> list[Import]:
    return [imp for path in sorted(SRC.rglob("*.py")) for imp in imports(path)]


def internal(found: list[Import]) -> list[Import]:
    """Imports of another unit of switchman."""
    return [i for i in found if i.target.split(".")[0] == ROOT and unit_of(i.source) != unit_of(i.target)]


def test_the_graph_is_read() -> None:
    found = internal(all_imports())
    # Guard against a walk that silently finds nothing: the gateway uses the routing core.
    assert any(unit_of(i.source) == "gateway" and unit_of(i.target) == "routing" for i in found)


def test_every_unit_has_a_place_in_the_layers() -> None:
    units = {unit_of(module_name(path)) for path in SRC.rglob("*.py")}
    unplaced = sorted(units - set(LEVEL))
    assert unplaced == [], f"place these in LAYERS (tests/test_layers.py) and the README's Layout table: {unplaced}"


def test_layers_are_one_way() -> None:
    wrong = []
    for imp in internal(all_imports()):
        here, there = unit_of(imp.source), unit_of(imp.target)
        if LEVEL[there] > LEVEL[here] or (here in GROUND and there in GROUND):
            continue
        wrong.append(f"{imp}  ({here} is not above {there})")
    assert wrong == [], "imports against the layers:\n" + "\n".join(wrong)


def test_no_cycle_between_units() -> None:
    graph: dict[str, set[str]] = {}
    for imp in internal(all_imports()):
        graph.setdefault(unit_of(imp.source), set()).add(unit_of(imp.target))
    done: set[str] = set()

    def visit(unit: str, path: list[str]) -> list[str] | None:
        if unit in path:
            return [*path[path.index(unit):], unit]
        if unit in done:
            return None
        for following in sorted(graph.get(unit, ())):
            cycle = visit(following, [*path, unit])
            if cycle:
                return cycle
        done.add(unit)
        return None

    for start in sorted(graph):
        cycle = visit(start, [])
        assert cycle is None, "import cycle between units: " + " -> ".join(cycle)


def test_packages_are_entered_through_their_init() -> None:
    private = [
        str(imp) for imp in internal(all_imports())
        if is_package(unit_of(imp.target)) and imp.target != f"{ROOT}.{unit_of(imp.target)}"
    ]
    assert private == [], "import through the package's __init__ instead:\n" + "\n".join(private)


def test_only_the_command_line_imports_rich_and_typer() -> None:
    wrong = [
        str(imp) for imp in all_imports()
        if imp.target.split(".")[0] in RESTRICTED and unit_of(imp.source) not in RESTRICTED[imp.target.split(".")[0]]
    ]
    assert wrong == [], "\n".join(wrong)


def test_only_environ_touches_the_environment() -> None:
    """`os.environ` / `os.getenv` appear in switchman/_environ.py alone (everything else gets an Environment)."""
    touching = []
    for path in sorted(SRC.rglob("*.py")):
        if path == SRC / "_environ.py":
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            by_attribute = isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) \
                and node.value.id == "os" and node.attr in ("environ", "environb", "getenv", "putenv", "unsetenv")
            by_name = isinstance(node, ast.ImportFrom) and node.module == "os" \
                and any(a.name in ("environ", "environb", "getenv", "putenv", "unsetenv") for a in node.names)
            if by_attribute or by_name:
                touching.append(f"{path.relative_to(SRC.parent)}:{node.lineno}")
    assert touching == [], "read the environment through switchman._environ.Environment:\n" + "\n".join(touching)
