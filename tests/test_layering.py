"""The house's import rules (docs/ARCHITECTURE.md), read from the source with `ast`:

    jobs -> pipeline, actors -> op4ksr;  actors -> pipeline, never the reverse

- op4ksr/ (the model library) imports none of the other packages, nor ray or boto3;
- no import cycle between packages, nor between files (imports inside functions count too).
"""
import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("op4ksr", "pipeline", "actors", "jobs")
# what each package may import of the others
ALLOWED = {"op4ksr": set(), "pipeline": {"op4ksr"}, "actors": {"op4ksr", "pipeline"},
           "jobs": {"op4ksr", "pipeline", "actors"}}
LIBRARY_FORBIDDEN = ("ray", "boto3", "botocore", "moto", "omegaconf")


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path, modules: frozenset[str] = frozenset()) -> set[str]:
    """Every module `path` imports, anywhere in the file, as absolute dotted names; `from pkg import m`
    names the submodule pkg.m when `modules` knows it (the package itself is only passed through)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            for alias in node.names:
                child = f"{node.module}.{alias.name}"
                names.add(child if child in modules else node.module)
    return names


def _graph() -> dict[str, set[str]]:
    """module -> the project modules it imports."""
    files = {_module_name(p): p for pkg in PACKAGES for p in (ROOT / pkg).rglob("*.py")}
    known = frozenset(files)
    return {name: {m for m in _imports(path, known) if m in files and m != name} for name, path in files.items()}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one node (Tarjan)."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(node):
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for succ in graph.get(node, ()):
            if succ not in index:
                visit(succ)
                low[node] = min(low[node], low[succ])
            elif succ in on_stack:
                low[node] = min(low[node], index[succ])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_packages_import_only_downwards():
    wrong = []
    for pkg in PACKAGES:
        for path in (ROOT / pkg).rglob("*.py"):
            for name in _imports(path):
                top = name.split(".")[0]
                if top in PACKAGES and top != pkg and top not in ALLOWED[pkg]:
                    wrong.append(f"{path.relative_to(ROOT)} imports {name}")
                if pkg == "op4ksr" and top in LIBRARY_FORBIDDEN:
                    wrong.append(f"{path.relative_to(ROOT)} imports {name} (the model library stays free of it)")
    assert not wrong, "\n".join(sorted(wrong))


def test_no_import_cycles_between_files():
    cycles = _cycles(_graph())
    assert not cycles, "import cycles: " + "; ".join(" <-> ".join(c) for c in cycles)


def test_the_check_sees_a_cycle():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


@pytest.mark.parametrize("pkg", PACKAGES)
def test_every_package_is_scanned(pkg):
    assert any(name.startswith(pkg) for name in _graph())
