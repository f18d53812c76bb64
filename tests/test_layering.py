"""The house's import rules (docs/ARCHITECTURE.md), read from the source with `ast`:

    jobs -> pipeline, actors -> op4ksr;  actors -> pipeline, never the reverse

- op4ksr/ (the model library) imports none of the other packages, nor ray or boto3;
- inside op4ksr/ and pipeline/, a room (a folder, or a module at the package's root) imports only
  the rooms before it in ROOMS, so no two rooms import each other;
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
# the rooms of a package in dependency order: each may import only the rooms before it
ROOMS = {
    "op4ksr": ("errors", "extras", "imageops", "images", "provenance", "sizing", "presets", "rope", "transformer",
               "vae", "checkpoint", "tensorfile", "quantize", "offload", "fidelity", "quality", "model", "loading",
               "inference", "video", "importing", "evaluation", "training"),
    "pipeline": ("storage", "manifest", "ledger", "listing", "fleet", "run", "training"),
}


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


def _room(module: str) -> str | None:
    """The room of a module inside its package (op4ksr.quality.niqe -> quality, op4ksr.model -> model);
    None for the package's own __init__."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else None


def _room_violations(graph: dict[str, set[str]], pkg: str, order: tuple[str, ...]) -> list[str]:
    """Each import inside `pkg` from a room to a room not before it in `order`, and each room not in `order`."""
    wrong = []
    for module, imported in sorted(graph.items()):
        room = _room(module)
        if not module.startswith(pkg + ".") or room is None:
            continue
        if room not in order:
            wrong.append(f"{module}: its room {pkg}/{room} has no place in ROOMS[{pkg!r}]")
            continue
        for target in sorted(imported):
            other = _room(target)
            if target.startswith(pkg + ".") and other not in (None, room) and \
                    (other not in order or order.index(other) > order.index(room)):
                wrong.append(f"{module} imports {target}: {pkg}/{other} comes after {pkg}/{room}")
    return wrong


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


@pytest.mark.parametrize("pkg", sorted(ROOMS))
def test_rooms_import_only_the_rooms_before_them(pkg):
    wrong = _room_violations(_graph(), pkg, ROOMS[pkg])
    assert not wrong, "\n".join(wrong)


def test_every_room_has_a_place_in_the_order():
    for pkg, order in ROOMS.items():
        rooms = {p.stem if p.is_file() else p.name for p in (ROOT / pkg).iterdir()
                 if (p.suffix == ".py" and p.stem != "__init__") or (p / "__init__.py").is_file()}
        assert rooms == set(order), f"{pkg}: rooms {sorted(rooms ^ set(order))} differ from ROOMS"


def test_the_room_check_sees_rooms_importing_each_other():
    graph = {"p.low.a": {"p.high.b"}, "p.high.b": {"p.low.c"}, "p.low.c": set(), "p": {"p.high.b"}}
    assert _room_violations(graph, "p", ("low", "high")) == ["p.low.a imports p.high.b: p/high comes after p/low"]
    assert _room_violations({"p.new.a": set()}, "p", ("low",)) == ["p.new.a: its room p/new has no place in ROOMS['p']"]
    assert _room_violations({"p.high.b": {"p.low.c", "p.high.d"}}, "p", ("low", "high")) == []


def test_the_check_sees_a_cycle():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


@pytest.mark.parametrize("pkg", PACKAGES)
def test_every_package_is_scanned(pkg):
    assert any(name.startswith(pkg) for name in _graph())
