"""The shape of backend/: layers that point one way, no import cycle, each task action spelled
once, modules small enough to read in one sitting. Pure reads of the source: no database."""

from __future__ import annotations

import ast
import inspect
from pathlib import Path

import grimp
from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute
from importlinter import api as _configured  # noqa: F401  (configures import-linter)
from importlinter.application.use_cases import lint_imports

from backend.main import create_app
from backend.tasks.registry import ACTIONS
from tests.support import ROOT
from tests.support.app import make_settings

BACKEND = ROOT / "backend"
# Where an action's name may be written: its declaration, and the system prompt the model reads.
NAMES_ALLOWED_IN = {BACKEND / "tasks" / "registry.py", BACKEND / "agent" / "prompts.py"}


def test_import_linter_contracts_hold() -> None:
    assert lint_imports(config_filename=str(ROOT / "pyproject.toml"), no_logo=True)


def _cycles(graph: grimp.ImportGraph) -> list[set[str]]:
    """Strongly connected groups of modules (Tarjan), TYPE_CHECKING imports included."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[set[str]] = []

    def visit(module: str) -> None:
        index[module] = low[module] = len(index)
        stack.append(module)
        for other in graph.find_modules_directly_imported_by(module):
            if other not in index:
                visit(other)
                low[module] = min(low[module], low[other])
            elif other in stack:
                low[module] = min(low[module], index[other])
        if low[module] == index[module]:
            group = set()
            while True:
                member = stack.pop()
                group.add(member)
                if member == module:
                    break
            if len(group) > 1:
                found.append(group)

    for module in sorted(graph.modules):
        if module.startswith("backend") and module not in index:
            visit(module)
    return found


def test_no_import_cycle_anywhere_in_backend() -> None:
    graph = grimp.build_graph("backend", exclude_type_checking_imports=False)
    assert _cycles(graph) == []


def test_the_cycle_finder_finds_a_cycle() -> None:
    graph = grimp.ImportGraph()
    for name in ("backend", "backend.a", "backend.b", "backend.c"):
        graph.add_module(name)
    graph.add_import(importer="backend.a", imported="backend.b")
    graph.add_import(importer="backend.b", imported="backend.a")
    graph.add_import(importer="backend.b", imported="backend.c")
    assert _cycles(graph) == [{"backend.a", "backend.b"}]


def _strings(path: Path) -> list[tuple[int, str]]:
    """Every string literal in a module (docstrings and f-string parts included)."""
    tree = ast.parse(path.read_text(), str(path))
    return [
        (node.lineno, node.value)
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant) and isinstance(node.value, str)
    ]


def test_an_action_name_is_written_only_in_the_registry_and_the_prompt() -> None:
    """A new action is one declaration: no other backend file names one, in code or in text
    (REST handlers' function names are REST operations, not actions)."""
    spelled = [
        f"{path.relative_to(ROOT)}:{line}: {name}"
        for path in sorted(BACKEND.rglob("*.py"))
        if path not in NAMES_ALLOWED_IN
        for line, value in _strings(path)
        for name in ACTIONS
        if name in value
    ]
    static = BACKEND / "web" / "static"
    spelled += [
        f"{path.relative_to(ROOT)}: {name}"
        for path in sorted(static.iterdir())
        if path.suffix in (".js", ".html")
        for name in ACTIONS
        if name in path.read_text()
    ]
    assert spelled == []


def test_modules_are_small() -> None:
    sizes = {
        path.relative_to(ROOT): len(path.read_text().splitlines())
        for folder in ("backend", "bench")
        for path in (ROOT / folder).rglob("*.py")
    }
    assert {path: n for path, n in sizes.items() if n > 450} == {}
    offline = sum(n for path, n in sizes.items() if path.name.startswith("offline"))
    assert offline <= 300


def _runs_on_the_loop(call: object) -> bool:
    target = call if inspect.isfunction(call) or inspect.ismethod(call) else type(call).__call__  # type: ignore[misc]
    return inspect.iscoroutinefunction(target) or inspect.isasyncgenfunction(target)


def test_no_route_or_dependency_hops_to_a_thread(tmp_path: Path) -> None:
    """FastAPI runs a plain `def` endpoint or dependency in a worker thread: a thread hop per
    request and, with the event loop busy, a wait of up to 5 ms for the GIL each way (W10 saw
    it). Every endpoint and dependency of every route is `async def`."""
    app = create_app(make_settings("postgresql://nowhere/none", tmp_path))
    blocking: set[str] = set()

    def visit(dependant: Dependant) -> None:
        if dependant.call is not None and not _runs_on_the_loop(dependant.call):
            blocking.add(getattr(dependant.call, "__qualname__", repr(dependant.call)))
        for sub in dependant.dependencies:
            visit(sub)

    routes = [r for r in app.routes if isinstance(r, APIRoute)]
    assert len(routes) >= 15
    for route in routes:
        visit(route.dependant)
    assert blocking == set()
