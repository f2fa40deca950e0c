"""The report and evaluation packages' imports: no private name taken from another module, no cycle."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "xqg_ray"
AREAS = ("report", "evaluation")


def modules():
    return sorted(p for area in AREAS for p in (PACKAGE / area).glob("*.py"))


def module_name(path: Path) -> str:
    rel = path.relative_to(PACKAGE.parent).with_suffix("")
    return ".".join(rel.parts[:-1] if rel.name == "__init__" else rel.parts)


def imports(path: Path):
    """(module imported, names) for every from-import in the file, anywhere in it, resolved to absolute."""
    pkg = module_name(path).rsplit(".", 1)[0]
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module != "__future__":
            base = pkg.split(".")[: len(pkg.split(".")) - (node.level - 1)] if node.level else []
            target = ".".join(base + ([node.module] if node.module else []))
            yield target, [a.name for a in node.names]
        elif isinstance(node, ast.Import):
            for a in node.names:
                yield a.name, []


@pytest.mark.parametrize("path", modules(), ids=lambda p: f"{p.parent.name}/{p.name}")
def test_no_private_name_imported_and_a_docstring(path):
    assert ast.get_docstring(ast.parse(path.read_text())), f"{path.name} has no module docstring"
    for target, names in imports(path):
        private = [n for n in names if n.startswith("_")]
        assert not private, f"{path.name} imports private {private} from {target}"


def test_no_import_cycle():
    graph = {module_name(p): set() for p in modules()}
    for p in modules():
        for target, names in imports(p):
            # "from . import plots" names a module; "from .cells import pct" names the module itself.
            for dep in [target] + [f"{target}.{n}" for n in names]:
                if dep in graph and dep != module_name(p):
                    graph[module_name(p)].add(dep)
    state: dict = {}

    def visit(m, path):
        if state.get(m) == "done":
            return
        assert state.get(m) != "open", "import cycle: " + " -> ".join(path + [m])
        state[m] = "open"
        for dep in sorted(graph[m]):
            visit(dep, path + [m])
        state[m] = "done"

    for m in sorted(graph):
        visit(m, [])
    assert "xqg_ray.report.experiments" in graph["xqg_ray.report.markdown"]  # the graph is really built
