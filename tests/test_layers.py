"""The house's layers, checked from the source: `agent/` is the domain core and imports neither `bot/` nor
`workers/`; `bot/` reaches `workers/` only through its client and names; no module import cycle anywhere."""

from __future__ import annotations

import ast
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("agent", "bot", "workers")
BOT_DOORS_INTO_WORKERS = {"workers.client", "workers.names"}
MAX_LINES = 400


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for pkg in PACKAGES for p in sorted((ROOT / pkg).rglob("*.py"))}


def _imports(path: Path, modules: dict[str, Path]) -> set[str]:
    """The project modules `path` imports, at any depth (inside functions too: a lazy import is still a layer)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
        else:
            continue
        found |= {name for name in names if name in modules}
    return found


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    return {name: _imports(path, modules) for name, path in modules.items()}


def _edges(importer: str, forbidden: Callable[[str], bool]) -> list[tuple[str, str]]:
    """(module, dependency) pairs where a module of package `importer` imports a forbidden module."""
    graph = _graph()
    return sorted((m, d) for m, deps in graph.items() if m.split(".")[0] == importer for d in deps if forbidden(d))


def test_agent_imports_neither_bot_nor_workers():
    assert not _edges("agent", lambda dep: dep.split(".")[0] in ("bot", "workers"))


def test_bot_reaches_workers_only_through_its_client_and_names():
    assert not _edges("bot", lambda dep: dep.split(".")[0] == "workers" and dep not in BOT_DOORS_INTO_WORKERS)


def test_workers_import_nothing_from_bot():
    assert not _edges("workers", lambda dep: dep.split(".")[0] == "bot")


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle between distinct modules, if any (a package importing its own submodules is not one)."""
    state: dict[str, int] = {}  # 1 on the current path, 2 done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for dep in sorted(graph.get(node, ())):
            if dep == node or node.startswith(dep + ".") or dep.startswith(node + "."):
                continue  # a package and its own submodules
            if state.get(dep) == 1:
                return [*path[path.index(dep) :], dep]
            if dep not in state and (found := visit(dep)):
                return found
        path.pop()
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state and (found := visit(start)):
            return found
    return None


def test_no_import_cycle():
    assert _cycle(_graph()) is None, " -> ".join(_cycle(_graph()) or [])


def test_the_cycle_finder_finds_a_cycle():
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set()}) is None


def test_no_module_over_400_lines():
    long = {name: n for name, path in _modules().items() if (n := len(path.read_text().splitlines())) > MAX_LINES}
    assert not long, long
