"""The shape of the package, checked: no import cycles, no reach-ins, no oversized units.

These walk the source with `ast`, so they hold for imports inside functions too (a lazy import
is still a dependency; hiding a cycle in a function does not remove it).
"""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "rockroll"
MAX_FUNCTION_LINES = 80
MAX_MODULE_LINES = 500


def _modules() -> dict[str, Path]:
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = list(path.relative_to(ROOT).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return found


MODULES = _modules()


def _type_checking_nodes(tree: ast.AST) -> set[int]:
    hidden: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            hidden.update(id(n) for n in ast.walk(node))
    return hidden


def _imports(module: str, path: Path) -> list[tuple[int, str, str]]:
    """(line, imported module, imported name or '') for every rockroll import in a module."""
    tree = ast.parse(path.read_text())
    hidden = _type_checking_nodes(tree)
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    out = []
    for node in ast.walk(tree):
        if id(node) in hidden:
            continue
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name, "") for a in node.names if a.name.startswith("rockroll")]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                parts = parts[: len(parts) - node.level + 1]
                base = ".".join(parts + ([node.module] if node.module else []))
            if base.startswith("rockroll"):
                out += [(node.lineno, base, a.name) for a in node.names]
    return out


def _owner(name: str) -> str | None:
    while name and name not in MODULES:
        name = name.rpartition(".")[0]
    return name or None


def _graph() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = defaultdict(set)
    for module, path in MODULES.items():
        for _, base, name in _imports(module, path):
            target = _owner(f"{base}.{name}" if name else base)
            if target and target != module and not module.startswith(target + "."):
                graph[module].add(target)
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    for start in MODULES:
        if start in index:
            continue
        work = [(start, iter(sorted(graph.get(start, ()))))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is None:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    component = []
                    while True:
                        top = stack.pop()
                        on_stack.discard(top)
                        component.append(top)
                        if top == node:
                            break
                    if len(component) > 1:
                        found.append(sorted(component))
            elif child not in index:
                index[child] = low[child] = len(index)
                stack.append(child)
                on_stack.add(child)
                work.append((child, iter(sorted(graph.get(child, ())))))
            elif child in on_stack:
                low[node] = min(low[node], index[child])
    return found


def test_the_walk_sees_the_package():
    # The checks below pass trivially on an empty walk; make sure it found the real package.
    assert len(MODULES) > 80 and "rockroll.sandbox.sdk" in MODULES
    assert "rockroll.sandbox.runtime" in _graph()["rockroll.sandbox.local"]


def test_cycle_finder_finds_a_planted_cycle():
    planted = {"rockroll.a": {"rockroll.b"}, "rockroll.b": {"rockroll.a"}}
    MODULES.setdefault("rockroll.a", PACKAGE)
    MODULES.setdefault("rockroll.b", PACKAGE)
    try:
        assert _cycles(planted) == [["rockroll.a", "rockroll.b"]]
    finally:
        del MODULES["rockroll.a"], MODULES["rockroll.b"]


def test_no_import_cycles():
    assert _cycles(_graph()) == []


def _private_imports(roots: list[Path]) -> list[str]:
    bad = []
    for root in roots:
        for path in sorted(root.rglob("*.py")):
            rel = path.relative_to(ROOT)
            parts = list(rel.with_suffix("").parts)
            module = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            for line, base, name in _imports(module, path):
                if name.startswith("_") and not name.startswith("__") and base != module:
                    bad.append(f"{rel}:{line} from {base} import {name}")
    return bad


def test_no_module_imports_another_modules_private_names():
    assert _private_imports([PACKAGE, ROOT / "benchmarks", ROOT / "tests"]) == []


def test_functions_are_short():
    long = []
    for path in MODULES.values():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                length = node.end_lineno - node.lineno + 1  # type: ignore[operator]
                if length > MAX_FUNCTION_LINES:
                    long.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.name} ({length})")
    assert long == []


def test_modules_are_small():
    big = [
        f"{path.relative_to(ROOT)} ({n})"
        for path in MODULES.values()
        if (n := len(path.read_text().splitlines())) > MAX_MODULE_LINES
    ]
    assert big == []


# A peer's own internals that a benchmark times on the peer's side (TRL's generation steps).
PEER_HOOKS = {"super()._generate_single_turn", "super()._generate_and_score_completions"}


def _reach_ins(source: str) -> list[str]:
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Attribute) and node.attr.startswith("_"):
            text = ast.unparse(node)
            owner = ast.unparse(node.value)
            if node.attr.startswith("__") and node.attr != "__new__":
                continue
            if owner in ("self", "cls") or text in PEER_HOOKS:
                continue
            found.append(f"line {node.lineno}: {text}")
        elif isinstance(node, ast.Call) and ast.unparse(node.func) in ("setattr", "delattr"):
            found.append(f"line {node.lineno}: {ast.unparse(node)[:60]}")
    return found


def test_reach_in_finder_finds_patches():
    planted = "trainer._update = fake\nx = Trainer.__new__(Trainer)\nsetattr(mod, 'f', g)\n"
    assert len(_reach_ins(planted)) == 3
    assert _reach_ins("self._x = 1\nsuper()._generate_single_turn()\n") == []


@pytest.mark.parametrize("script", sorted((ROOT / "benchmarks").glob("*.py")), ids=lambda p: p.name)
def test_benchmarks_use_public_paths(script: Path):
    """No benchmark builds an object around its __init__, patches a name or calls a private
    one: each drives the public path a user runs."""
    assert _reach_ins(script.read_text()) == []


# Layers, lowest first: a package may import from its own rank or below, never above.
LAYERS = {
    "errors": 0,
    "strict": 0,
    "progress": 0,
    "jsonl": 0,
    "sandbox": 1,
    "models": 2,
    "tasks": 3,
    "safety": 3,
    "agent": 4,
    "envs": 5,
    "bench": 5,
    "train": 5,
    "service": 5,
    "data": 6,
    "demo": 6,
    "cli": 7,
}


def _layer_breaks() -> list[str]:
    bad = []
    for module, path in MODULES.items():
        parts = module.split(".")
        if len(parts) < 2 or parts[1] == "__main__":
            continue  # the package's own __init__ re-exports the public faces
        rank = LAYERS[parts[1]]
        for line, base, _ in _imports(module, path):
            target = base.split(".")
            if len(target) > 1 and target[1] != parts[1] and LAYERS[target[1]] > rank:
                bad.append(f"{path.relative_to(ROOT)}:{line} {parts[1]} imports {target[1]}")
    return bad


def test_every_package_has_a_layer():
    packages = {m.split(".")[1] for m in MODULES if m.count(".") >= 1} - {"__main__"}
    assert packages == set(LAYERS)


def test_layers_only_look_down():
    assert _layer_breaks() == []
