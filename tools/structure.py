#!/usr/bin/env python3
"""The shape of the ``xqg_ray`` package, read from its source with ``ast``.

Run from the repository root::

    python tools/structure.py                    # short text report of ./xqg_ray
    python tools/structure.py --json             # the same, as JSON
    python tools/structure.py --root /tmp/before/xqg_ray

It prints the modules of each package (and how many lie directly in the
package root), the lines of each package, every import cycle between the
package's modules, every private (leading underscore) name that a module
imports from another module of the package (or reads through an imported
module object, ``corpus._helper``), and the modules without a
docstring. It never imports the package: it must work on a broken tree, on
an old checkout and without the project's dependencies (the standard library,
and networkx for the cycles: a pure-Python package of the test extra).

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

import argparse
import ast
import json
import sys
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Sequence, Set, Tuple

# An import's strength, strongest first: a cycle is as weak as its weakest hop.
KINDS = ("eager", "lazy", "typing")
TOP = "(top)"  # the package-table row of the modules directly in the root
MAX_CYCLES = 200  # enumerating elementary cycles explodes on a tangled graph; say so instead


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


@dataclass(frozen=True)
class Cycle:
    """An elementary import cycle: modules[0] imports modules[1] ... imports modules[0]."""

    modules: Tuple[str, ...]
    kind: str  # the weakest hop's kind: eager cycles break at import time
    hops: Tuple[Edge, ...]  # per hop the strongest import that makes it


@dataclass
class Structure:
    """Everything ``analyse`` found."""

    root: str
    package: str
    modules: Dict[str, Module]
    edges: List[Edge]
    cycles: List[Cycle]
    cycles_truncated: bool
    private_imports: List[PrivateImport]
    parse_errors: List[str] = field(default_factory=list)

    def top_level(self) -> List[Module]:
        """The modules directly in the package root (``__init__`` included)."""
        return [m for m in self.modules.values() if m.package == TOP]

    def packages(self) -> Dict[str, List[Module]]:
        """Modules grouped by top-level subpackage, TOP first, then by name."""
        out: Dict[str, List[Module]] = {}
        for m in sorted(self.modules.values(), key=lambda m: (m.package != TOP, m.package, m.name)):
            out.setdefault(m.package, []).append(m)
        return out

    def undocumented(self) -> List[str]:
        return sorted(m.path for m in self.modules.values() if not m.has_docstring)


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


# -- cycles --------------------------------------------------------------------
def find_cycles(edges: Sequence[Edge], limit: int = MAX_CYCLES) -> Tuple[List[Cycle], bool]:
    """Every elementary import cycle (up to ``limit``), each from its smallest module name.

    Returns the cycles, shortest first, and whether ``limit`` cut the list.  The
    enumeration is networkx's ``simple_cycles`` (Johnson's algorithm); a module
    importing itself is not a cycle between modules.
    """
    import networkx as nx

    best: Dict[Tuple[str, str], Edge] = {}  # per hop the strongest (then first) import
    for e in edges:
        key = (e.importer, e.imported)
        old = best.get(key)
        if old is None or (KINDS.index(e.kind), e.line) < (KINDS.index(old.kind), old.line):
            best[key] = e
    found = islice((c for c in nx.simple_cycles(nx.DiGraph(list(best))) if len(c) > 1), limit + 1)
    cycles: List[Cycle] = []
    for path in found:
        if len(cycles) == limit:
            return sorted(cycles, key=lambda c: (len(c.modules), c.modules)), True
        start = path.index(min(path))
        path = path[start:] + path[:start]
        hops = tuple(best[(path[i], path[(i + 1) % len(path)])] for i in range(len(path)))
        cycles.append(Cycle(tuple(path), max((h.kind for h in hops), key=KINDS.index), hops))
    return sorted(cycles, key=lambda c: (len(c.modules), c.modules)), False


# -- the whole analysis ----------------------------------------------------------
def analyse(root: Path) -> Structure:
    """Read every module under ``root`` (a package directory such as ``xqg_ray``)."""
    root = Path(root).resolve()
    if not root.is_dir():
        raise SystemExit(f"structure: no package directory {root} (pass --root PATH/TO/xqg_ray)")
    files = find_modules(root)
    names = set(files)
    modules: Dict[str, Module] = {}
    edges: List[Edge] = []
    private: List[PrivateImport] = []
    errors: List[str] = []
    for name, path in files.items():
        try:
            tree: Optional[ast.Module] = ast.parse(path.read_bytes(), filename=str(path))
        except SyntaxError as e:
            errors.append(f"{path}:{e.lineno}: {e.msg}")
            tree = None
        mod = describe_module(name, path, root, tree)
        modules[name] = mod
        if tree is not None:
            e, p = module_imports(name, mod.is_package, tree, names)
            edges += e
            private += p
    cycles, truncated = find_cycles(edges)
    return Structure(str(root), root.name, modules, edges, cycles, truncated, private, errors)


def _short(name: str, package: str) -> str:
    return name[len(package) + 1 :] if name.startswith(package + ".") else name


def to_json(s: Structure) -> dict:
    """The report as plain data (what ``--json`` prints)."""
    pkgs = s.packages()
    return {
        "root": s.root,
        "package": s.package,
        "modules_total": len(s.modules),
        "lines_total": sum(m.lines for m in s.modules.values()),
        "top_level_modules": sorted(Path(m.path).stem for m in s.top_level()),
        "packages": {
            p: {
                "modules": [Path(m.path).stem for m in mods],
                "lines": sum(m.lines for m in mods),
            }
            for p, mods in pkgs.items()
        },
        "cycles": [
            {
                "kind": c.kind,
                "modules": list(c.modules),
                "hops": [{"from": h.importer, "to": h.imported, "line": h.line, "kind": h.kind} for h in c.hops],
            }
            for c in s.cycles
        ],
        "cycles_truncated": s.cycles_truncated,
        "private_imports": [
            {"importer": p.importer, "line": p.line, "source": p.source, "name": p.name, "internal": p.internal}
            for p in s.private_imports
        ],
        "undocumented": s.undocumented(),
        "parse_errors": s.parse_errors,
    }


def to_text(s: Structure, top_limit: int = 14) -> str:
    """The short human report."""
    pk = s.package
    pkgs = s.packages()
    total_lines = sum(m.lines for m in s.modules.values())
    top = s.top_level()
    out = [
        f"{pk}: {len(s.modules)} modules, {total_lines} lines; "
        f"{len(top)} directly in {pk}/ (at most {top_limit})",
        "",
        f"{'package':<12} {'modules':>7} {'lines':>6}  modules",
    ]
    for p, mods in pkgs.items():
        names = ", ".join(Path(m.path).stem for m in mods)
        out.append(f"{p:<12} {len(mods):>7} {sum(m.lines for m in mods):>6}  {names}")
    eager = sum(c.kind == "eager" for c in s.cycles)
    more = " (list cut)" if s.cycles_truncated else ""
    out += ["", f"import cycles: {len(s.cycles)}{more} ({eager} eager, {len(s.cycles) - eager} through a lazy or typing import)"]
    for c in s.cycles:
        hops = " -> ".join(
            f"{_short(h.importer, pk)}{'' if h.kind == 'eager' else f' [{h.kind} :{h.line}]'}" for h in c.hops
        )
        out.append(f"  {c.kind:<6} {hops} -> {_short(c.modules[0], pk)}")
    internal = [p for p in s.private_imports if p.internal]
    external = [p for p in s.private_imports if not p.internal]
    out += ["", f"private names imported across modules: {len(internal)}"]
    for p in internal:
        out.append(f"  {s.modules[p.importer].path}:{p.line}  from {_short(p.source, pk)} import {p.name}")
    if external:
        where = (f"{s.modules[p.importer].path}:{p.line} {p.source + '.' if p.source else ''}{p.name}" for p in external)
        out.append(f"  (and from outside {pk}, not counted: {', '.join(where)})")
    und = s.undocumented()
    out += ["", f"modules without a docstring: {len(und)}"] + [f"  {u}" for u in und]
    if s.parse_errors:
        out += ["", f"files that do not parse: {len(s.parse_errors)}"] + [f"  {e}" for e in s.parse_errors]
    return "\n".join(out)


def main(argv: Optional[Sequence[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--root", default="xqg_ray", help="the package directory (default: ./xqg_ray)")
    ap.add_argument("--json", action="store_true", help="print JSON instead of the short report")
    args = ap.parse_args(argv)
    s = analyse(Path(args.root))
    print(json.dumps(to_json(s), indent=2) if args.json else to_text(s))
    return 0


if __name__ == "__main__":
    sys.exit(main())
