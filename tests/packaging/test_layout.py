"""The layout holds: read from the source (nothing is imported), grainline's import graph
has no cycle between modules and none between components, and every component imports
only what its docstring says it may ("May import: ..."). A lazy import inside a function
counts like any other: it runs too."""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
# The required root folders are installed as grainline subpackages (pyproject's package-dir).
FOLDERS = {"grainline": "grainline", "chunkers": "grainline.chunkers", "storage": "grainline.storage",
           "flows": "grainline.flows", "deployments": "grainline.deployments"}
DECLARATION = re.compile(r"May import:\s*(.+?)(?:\.\s|\.$|$)", re.S)


def modules() -> dict[str, Path]:
    """Every module of the package, by its dotted name."""
    found: dict[str, Path] = {}
    for folder, package in FOLDERS.items():
        for path in sorted((ROOT / folder).rglob("*.py")):
            parts = list(path.relative_to(ROOT / folder).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            found[".".join([package, *parts])] = path
    return found


def component(module: str) -> str:
    """The unit the layout speaks of: a top-level module or package of grainline."""
    parts = module.split(".")
    return ".".join(parts[:2]) if len(parts) > 1 else parts[0]


def imports_of(name: str, path: Path, known: set[str]) -> set[str]:
    """The grainline modules that ``name`` imports anywhere in its file."""
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out: set[str] = set()

    def add(target: str, names: list[str]) -> None:
        for n in names:
            if f"{target}.{n}" in known:
                out.add(f"{target}.{n}")
                continue
            out.add(target)

    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == "grainline":
                    mod = alias.name
                    while mod not in known and "." in mod:
                        mod = mod.rpartition(".")[0]
                    out.add(mod)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target.split(".")[0] != "grainline":
                continue
            while target not in known and "." in target:
                target = target.rpartition(".")[0]
            add(target, [a.name for a in node.names])
    out.discard(name)
    return {m for m in out if m in known}


def graph() -> dict[str, set[str]]:
    found = modules()
    return {name: imports_of(name, path, set(found)) for name, path in found.items()}


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one node (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in sorted(edges.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            scc = []
            while True:
                w = stack.pop()
                on.discard(w)
                scc.append(w)
                if w == v:
                    break
            if len(scc) > 1:
                out.append(sorted(scc))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return out


def component_edges(edges: dict[str, set[str]]) -> dict[str, set[str]]:
    out: dict[str, set[str]] = {}
    for src, targets in edges.items():
        c = component(src)
        out.setdefault(c, set()).update(component(t) for t in targets if component(t) != c)
    return out


def declared(known: dict[str, Path]) -> dict[str, set[str] | None]:
    """What each component's docstring (a package's __init__, or the module) says it may
    import; None where it says nothing."""
    out: dict[str, set[str] | None] = {}
    for name, path in known.items():
        if name != component(name):
            continue
        doc = ast.get_docstring(ast.parse(path.read_text(encoding="utf-8"))) or ""
        m = DECLARATION.search(doc)
        if m is None:
            out[name] = None
            continue
        words = [w.strip(" ,;.") for w in re.split(r"[,;]|\band\b", m.group(1).replace("\n", " "))]
        if "anything" in words:  # the top layer: the command line
            out[name] = {component(n) for n in known} - {name}
            continue
        allowed = {w for w in words if w and not w.startswith("nothing")}
        out[name] = {a if a.startswith("grainline") else f"grainline.{a}" for a in allowed}
    return out


def test_no_module_imports_itself_through_others():
    assert cycles(graph()) == []


def test_no_component_cycle():
    assert cycles(component_edges(graph())) == []


def test_every_package_declares_what_it_may_import():
    known = modules()
    packages = {component(n) for n, p in known.items() if p.name == "__init__.py" and n != "grainline"}
    said = declared(known)
    assert sorted(p for p in packages if said.get(p) is None) == []


def test_components_import_only_what_they_declare():
    known = modules()
    said = declared(known)
    wrong = []
    for comp, targets in sorted(component_edges(graph()).items()):
        allowed = said.get(comp)
        # A module that declares nothing may import only the package root (grainline).
        allowed = (allowed or set()) | {"grainline"}
        for t in sorted(targets - allowed):
            wrong.append(f"{comp} imports {t}")
    assert wrong == []


def test_declarations_name_real_components_and_run_one_way():
    known = modules()
    comps = {component(n) for n in known}
    said = declared(known)
    unknown = sorted(f"{c}: {a}" for c, allowed in said.items() for a in (allowed or ()) if a not in comps)
    assert unknown == []
    # The declared map itself is a layering: following "may import" never comes back.
    assert cycles({c: set(a or ()) for c, a in said.items()}) == []


def test_the_graph_reader_sees_lazy_and_relative_imports(tmp_path):
    pkg = tmp_path / "grainline" / "sub"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    src = pkg / "a.py"
    src.write_text("from . import b\nfrom .c import x\ndef f():\n    from grainline.d import y\n    import grainline.e\n")
    known = {"grainline", "grainline.sub", "grainline.sub.a", "grainline.sub.b", "grainline.sub.c", "grainline.d", "grainline.e"}
    assert imports_of("grainline.sub.a", src, known) == {"grainline.sub.b", "grainline.sub.c", "grainline.d", "grainline.e"}
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
