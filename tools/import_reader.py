"""Reading a package's modules and their import statements with ``ast`` (for ``tools/structure.py``).

It never imports what it reads: it must work on a broken tree, on an old
checkout and without the project's dependencies (the standard library only).

How imports are read:

* ``import a.b.c`` and ``from a.b import c`` depend on module ``a.b.c`` when
  ``a/b/c.py`` (or ``a/b/c/__init__.py``) exists; otherwise ``from a.b import
  c`` depends on ``a.b`` (its ``__init__``). Relative imports (``from . import
  x``, ``from ..store.ledger import y``) are resolved against the importing
  module's package.
* An import inside a function or method body is *lazy* (it runs when called);
  one under ``if TYPE_CHECKING:`` is *typing* (it never runs); every other one
  is *eager*. Cycles are reported through all three, each marked by the
  weakest import it needs.
* Importing ``a.b.c`` also runs ``a/__init__`` and ``a/b/__init__``; those
  implicit edges are not counted, or every package whose ``__init__``
  re-exports its modules would be a cycle with each of them.
* Imports by computed name (``importlib.import_module(name)``) cannot be read
  and are not counted.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Sequence, Set, Tuple

# An import's strength, strongest first: a cycle is as weak as its weakest hop.
KINDS = ("eager", "lazy", "typing")
TOP = "(top)"  # the package of the modules directly in the root


@dataclass(frozen=True)
class Module:
    """One ``.py`` file of the analysed package."""

    name: str  # dotted, e.g. xqg_ray.store.ledger; a package's __init__ is the package's name
    path: str  # relative to the root's parent, e.g. xqg_ray/store/ledger.py
    package: str  # the top-level subpackage it belongs to (``benchmark``), or TOP
    lines: int
    has_docstring: bool
    is_package: bool


@dataclass(frozen=True)
class Edge:
    """One import statement of one internal module, from ``importer`` to ``imported``."""

    importer: str
    imported: str
    line: int
    kind: str  # one of KINDS


@dataclass(frozen=True)
class PrivateImport:
    """``from SOURCE import _name``, ``import SOURCE._name`` or ``SOURCE_ALIAS._name`` in another module."""

    importer: str
    line: int
    source: str  # the module the name comes from (dotted; external modules too)
    name: str
    internal: bool  # source is a module of the analysed package


# -- modules -------------------------------------------------------------------
def find_modules(root: Path) -> Dict[str, Path]:
    """Dotted module name -> file, for every ``.py`` under ``root`` (the package directory)."""
    root = Path(root)
    out: Dict[str, Path] = {}
    for path in sorted(root.rglob("*.py")):
        rel = path.relative_to(root.parent).with_suffix("")
        parts = list(rel.parts)
        if any(p == "__pycache__" for p in parts):
            continue
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


def describe_module(name: str, path: Path, root: Path, tree: Optional[ast.Module]) -> Module:
    rel = path.relative_to(Path(root).parent)
    inner = rel.parts[1:]  # below the root package directory
    package = inner[0] if len(inner) > 1 else TOP
    text = path.read_text(encoding="utf-8", errors="replace")
    return Module(
        name=name,
        path=rel.as_posix(),
        package=package,
        lines=len(text.splitlines()),
        has_docstring=bool(tree is not None and ast.get_docstring(tree)),
        is_package=path.name == "__init__.py",
    )


# -- imports -------------------------------------------------------------------
def resolve_relative(importer: str, is_package: bool, level: int, module: Optional[str]) -> Optional[str]:
    """The absolute name ``from <level dots><module> import ...`` refers to, or None if it climbs out."""
    if level == 0:
        return module
    base = importer.split(".") if is_package else importer.split(".")[:-1]
    if level - 1 > len(base) - 1:
        return None  # beyond the top-level package
    base = base[: len(base) - (level - 1)]
    return ".".join(base + ([module] if module else []))


def is_private(name: str) -> bool:
    """``_x`` is private; ``__x__`` (``__version__``, ``__all__``) is not."""
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def iter_imports(tree: ast.Module) -> Iterator[Tuple[ast.stmt, str]]:
    """Every import statement with its kind (eager, lazy, typing), in source order."""

    def walk(nodes: Sequence[ast.AST], kind: str) -> Iterator[Tuple[ast.stmt, str]]:
        for node in nodes:
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                yield node, kind
            elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
                # a typing-only import stays typing-only inside a function
                yield from walk(list(ast.iter_child_nodes(node)), "typing" if kind == "typing" else "lazy")
            elif isinstance(node, ast.If) and _is_type_checking(node.test):
                yield from walk(node.body, "typing")
                yield from walk(node.orelse, kind)
            else:
                yield from walk(list(ast.iter_child_nodes(node)), kind)

    yield from sorted(walk(tree.body, "eager"), key=lambda nk: (nk[0].lineno, nk[0].col_offset))


def private_path(importer: str, line: int, dotted: str, modules: Set[str]) -> List[PrivateImport]:
    """The first private component of an imported module path (``ray._private.worker``), if any."""
    parts = dotted.split(".")
    for i, part in enumerate(parts):
        if is_private(part):
            source = ".".join(parts[:i])
            return [PrivateImport(importer, line, source, part, source in modules)]
    return []


def module_imports(
    name: str, is_package: bool, tree: ast.Module, modules: Set[str]
) -> Tuple[List[Edge], List[PrivateImport]]:
    """The internal import edges of one module and the private names it imports."""
    edges: List[Edge] = []
    private: List[PrivateImport] = []
    bound: Dict[str, str] = {}  # local name -> the internal module it names, for ``alias._name``

    def edge(target: str, node: ast.stmt, kind: str) -> None:
        e = Edge(name, target, node.lineno, kind)
        if target in modules and target != name and e not in edges:  # one per statement and target
            edges.append(e)

    for node, kind in iter_imports(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                edge(alias.name, node, kind)
                if alias.asname:
                    bound[alias.asname] = alias.name
                else:  # import a.b.c binds a
                    bound[alias.name.split(".")[0]] = alias.name.split(".")[0]
                private += private_path(name, node.lineno, alias.name, modules)
            continue
        base = resolve_relative(name, is_package, node.level, node.module)
        if base is None:
            continue
        for alias in node.names:
            sub = f"{base}.{alias.name}"
            if alias.name != "*" and sub in modules:
                edge(sub, node, kind)  # from pkg import module
                bound[alias.asname or alias.name] = sub
            else:
                edge(base, node, kind)
        found = private_path(name, node.lineno, base, modules)  # from pkg._impl import x
        private += found
        if not found:
            for alias in node.names:
                if is_private(alias.name):
                    private.append(PrivateImport(name, node.lineno, base, alias.name, base in modules))
    # the same rule through a module object: ``from . import corpus; corpus._helper``
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and is_private(node.attr):
            dotted = dotted_name(node.value)
            if dotted is None:
                continue
            head, _, rest = dotted.partition(".")
            target = bound.get(head)
            full = f"{target}.{rest}" if target and rest else target
            if full in modules and full != name:
                private.append(PrivateImport(name, node.lineno, full, node.attr, True))
    private.sort(key=lambda p: (p.line, p.source, p.name))
    return edges, private


def dotted_name(node: ast.expr) -> Optional[str]:
    """``a.b.c`` for a chain of attribute reads on a name, else None."""
    parts: List[str] = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if not isinstance(node, ast.Name):
        return None
    return ".".join([node.id] + parts[::-1])
