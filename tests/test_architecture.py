"""The architecture is checked, not just drawn: the import graph of ``src/evflow`` (built
from the source with ``ast``) has no cycles, keeps the layers of docs/architecture.md, and
no module reaches another module's underscored names.

Imports at module level and inside functions both count. Imports under
``if TYPE_CHECKING:`` are left out of the module graph (they never run, and a module may
name a sibling's type that way), but not of the graph of units (each top-level module, and
each subpackage as one): no unit names another that depends on it, not even for the
checker, so a layer knows the layers above it only through protocols of its own.

``EVFLOW_ARCH_SRC`` points the test at another tree (``/path/to/src/evflow``) to see what
it says about it.
"""

from __future__ import annotations

import ast
import itertools
import os
from dataclasses import dataclass, field
from pathlib import Path

import pytest

SRC = Path(os.environ.get("EVFLOW_ARCH_SRC", Path(__file__).parent.parent / "src" / "evflow"))

#: Private names that are someone's public API all the same (namedtuple's methods).
PUBLIC_UNDERSCORED = {"_replace", "_asdict", "_fields", "_make"}


@dataclass
class Module:
    name: str
    path: Path
    is_package: bool
    tree: ast.Module
    #: Imported evflow module -> line of the first import.
    imports: dict[str, int] = field(default_factory=dict)
    #: The same with the imports under ``if TYPE_CHECKING:``.
    all_imports: dict[str, int] = field(default_factory=dict)
    #: ``from X import _private`` of a name that is not a module: (line, "X._private").
    private_imports: list[tuple[int, str]] = field(default_factory=list)


def _module_name(path: Path) -> tuple[str, bool]:
    parts = list(path.relative_to(SRC.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        return ".".join(parts[:-1]), True
    return ".".join(parts), False


def _load() -> dict[str, Module]:
    modules = {}
    for path in sorted(SRC.rglob("*.py")):
        name, is_package = _module_name(path)
        modules[name] = Module(name, path, is_package, ast.parse(path.read_text(), str(path)))
    return modules


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _runtime_nodes(node: ast.AST) -> list[ast.AST]:
    """Every node under ``node`` except the bodies of ``if TYPE_CHECKING:``."""
    out = []
    todo = [node]
    while todo:
        current = todo.pop()
        out.append(current)
        if isinstance(current, ast.If) and _is_type_checking(current.test):
            todo.extend(current.orelse)
            continue
        todo.extend(ast.iter_child_nodes(current))
    return out


def _resolve(modules: dict[str, Module]) -> None:
    for module in modules.values():
        _resolve_one(modules, module, _runtime_nodes(module.tree), module.imports, record_private=True)
        _resolve_one(modules, module, list(ast.walk(module.tree)), module.all_imports, record_private=False)


def _resolve_one(
    modules: dict[str, Module],
    module: Module,
    nodes: list[ast.AST],
    imports: dict[str, int],
    *,
    record_private: bool,
) -> None:
    package = module.name if module.is_package else module.name.rpartition(".")[0]
    for node in nodes:
        targets: list[tuple[str, int]] = []
        if isinstance(node, ast.Import):
            for alias in node.names:
                name = alias.name
                while name and name not in modules:
                    name = name.rpartition(".")[0]
                if name:
                    targets.append((name, node.lineno))
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base_parts = package.split(".")
                base_parts = base_parts[: len(base_parts) - (node.level - 1)]
                base = ".".join(base_parts + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                if sub in modules:
                    targets.append((sub, node.lineno))
                elif base in modules:
                    targets.append((base, node.lineno))
                    if record_private and alias.name.startswith("_") and not alias.name.startswith("__"):
                        module.private_imports.append((node.lineno, sub))
        for target, line in targets:
            if target != module.name:
                imports.setdefault(target, line)


@pytest.fixture(scope="module")
def modules() -> dict[str, Module]:
    found = _load()
    assert "evflow" in found, f"no evflow package under {SRC}"
    _resolve(found)
    return found


def _find_cycle(modules: dict[str, Module]) -> list[str] | None:
    """One import cycle (a list of modules, the first repeated at the end), or None."""
    WHITE, GREY, BLACK = 0, 1, 2
    colour = dict.fromkeys(modules, WHITE)
    for start in sorted(modules):
        if colour[start] != WHITE:
            continue
        stack: list[tuple[str, list[str]]] = [(start, sorted(modules[start].imports))]
        path = [start]
        colour[start] = GREY
        while stack:
            node, todo = stack[-1]
            if not todo:
                colour[node] = BLACK
                stack.pop()
                path.pop()
                continue
            nxt = todo.pop(0)
            if colour[nxt] == GREY:
                return [*path[path.index(nxt) :], nxt]
            if colour[nxt] == WHITE:
                colour[nxt] = GREY
                path.append(nxt)
                stack.append((nxt, sorted(modules[nxt].imports)))
    return None


def test_the_import_graph_has_no_cycle(modules: dict[str, Module]) -> None:
    cycle = _find_cycle(modules)
    if cycle is not None:
        steps = " -> ".join(f"{a} (line {modules[a].imports[b]})" for a, b in itertools.pairwise(cycle))
        pytest.fail(f"import cycle: {steps} -> {cycle[-1]}")


def _unit(name: str) -> str:
    """The layer unit of a module: ``evflow.engine._core`` -> ``evflow.engine``."""
    return ".".join(name.split(".")[:2])


def test_no_unit_depends_on_one_that_depends_on_it(modules: dict[str, Module]) -> None:
    units: dict[str, Module] = {}
    for module in modules.values():
        unit = _unit(module.name)
        merged = units.setdefault(unit, Module(unit, module.path, True, module.tree))
        for target, line in module.all_imports.items():
            if _unit(target) != unit:
                merged.imports.setdefault(_unit(target), line)
                merged.all_imports.setdefault(_unit(target), line)
    for unit in units.values():
        unit.imports = {t: line for t, line in unit.imports.items() if t in units}
    cycle = _find_cycle(units)
    if cycle is not None:
        pytest.fail(f"units that name each other, TYPE_CHECKING imports included: {' -> '.join(cycle)}")


def _in(name: str, package: str) -> bool:
    return name == package or name.startswith(package + ".")


#: (who, what it must not import, why)
LAYER_RULES = [
    (
        "evflow.engine",
        ["evflow.actors", "evflow.waiting", "evflow.schedules", "evflow.cli", "evflow.otel"],
        "the core never imports what plugs into it",
    ),
    ("evflow._projection", ["evflow.engine", "evflow.actors", "evflow.stores", "evflow.cli"], "pure fold"),
    ("evflow._events", ["evflow.engine", "evflow.actors", "evflow.stores", "evflow.cli"], "the schema"),
    ("evflow._codec", ["evflow.engine", "evflow.actors", "evflow.stores", "evflow.cli"], "encoding"),
    ("evflow._errors", ["evflow.engine", "evflow.actors", "evflow.stores", "evflow.cli"], "the error tree"),
    ("evflow.stores", ["evflow.engine", "evflow.actors", "evflow.cli"], "stores know events, not engines"),
    ("evflow.stores.file", ["evflow.stores.postgres"], "each store stands alone"),
    ("evflow.stores.postgres", ["evflow.stores.file"], "each store stands alone"),
    ("evflow.stores._group_commit", ["evflow.stores.file", "evflow.stores.postgres"], "shared by the stores"),
]

#: What a store may use of evflow outside ``stores/``: the layers below it.
STORE_DEPENDENCIES = {"evflow._codec", "evflow._errors", "evflow._events", "evflow._signal"}


def test_layers(modules: dict[str, Module]) -> None:
    broken = []
    for who, forbidden, why in LAYER_RULES:
        for module in modules.values():
            if not _in(module.name, who):
                continue
            for target, line in module.imports.items():
                if any(_in(target, f) for f in forbidden):
                    broken.append(f"{module.name}:{line} imports {target} ({why})")
    for module in modules.values():
        if module.name == "evflow.__main__" or _in(module.name, "evflow.cli"):
            continue
        for target, line in module.imports.items():
            if _in(target, "evflow.cli"):
                broken.append(f"{module.name}:{line} imports {target} (only __main__ runs the CLI)")
    assert not broken, "\n".join(broken)


def test_stores_import_nothing_above_them(modules: dict[str, Module]) -> None:
    broken = [
        f"{module.name}:{line} imports {target}"
        for module in modules.values()
        if _in(module.name, "evflow.stores")
        for target, line in module.imports.items()
        if not _in(target, "evflow.stores") and target not in STORE_DEPENDENCIES
    ]
    assert not broken, "\n".join(broken)


def test_only_the_disk_module_calls_the_file_stores_io_seam(modules: dict[str, Module]) -> None:
    """``tests/test_crash_states.py`` records every change to the disk by replacing
    ``_disk._io``: a call to the seam from anywhere else would escape it."""
    callers = sorted(m.name for m in modules.values() if "evflow.stores.file._io" in m.imports)
    assert callers == ["evflow.stores.file._disk"], callers


def test_no_module_imports_another_modules_private_names(modules: dict[str, Module]) -> None:
    found = [f"{m.name}:{line} imports {what}" for m in modules.values() for line, what in m.private_imports]
    assert not found, "\n".join(found)


def _defined_private_names(tree: ast.Module) -> set[str]:
    """Underscored names a module defines: functions, classes, attributes set on anything."""
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            names.add(node.name)
        elif isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store):
            names.add(node.attr)
        elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            names.add(node.id)
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value.startswith("_"):
            names.add(node.value)  # __slots__ entries
    return names


def _receiver(node: ast.expr) -> str:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return f"{_receiver(node.value)}.{node.attr}"
    if isinstance(node, ast.Call):
        return f"{_receiver(node.func)}()"
    return type(node).__name__


def test_no_module_reaches_another_modules_underscored_attributes(modules: dict[str, Module]) -> None:
    """``x._name`` on anything but ``self``/``cls`` is allowed only when this very module
    defines ``_name`` (a class of the module used by its own functions, as the fold does
    with ``WorkflowState``): so ``engine._emit`` from the actors, or ``core._runs`` from
    the Engine, fail."""
    found = []
    for module in modules.values():
        own = _defined_private_names(module.tree)
        for node in ast.walk(module.tree):
            if not isinstance(node, ast.Attribute):
                continue
            attr = node.attr
            if not attr.startswith("_") or attr.startswith("__") or attr in PUBLIC_UNDERSCORED:
                continue
            receiver = _receiver(node.value)
            if receiver in ("self", "cls", "super()"):
                continue
            if attr in own:
                continue
            found.append((module.name, node.lineno, f"{receiver}.{attr}"))
    assert not found, "\n".join(f"{name}:{line} {what}" for name, line, what in sorted(found))


def test_the_engine_core_reaches_no_step_kind_or_service_by_name(modules: dict[str, Module]) -> None:
    """The core knows step kinds and services only through the registries."""
    assert "evflow.engine._core" in modules, "no engine core (evflow/engine/_core.py)"
    core = modules["evflow.engine._core"]
    text = ast.unparse(core.tree)
    for word in ("ACTOR_METHOD", "ActorService", "resolve_step_function", "SLEEP", "TimerService"):
        assert word not in text, f"evflow.engine._core mentions {word}"
