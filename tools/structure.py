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

How imports are read (what counts as an edge, eager, lazy or typing) is
said in ``tools/import_reader.py``.
"""

from __future__ import annotations

import argparse
import ast
import json
import sys
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

# The reader lies beside this file; put its folder on the path so that the tool also loads by file path
# (tests/test_structure.py), not only as ``python tools/structure.py``.
sys.path.insert(0, str(Path(__file__).resolve().parent))

from import_reader import KINDS, TOP, Edge, Module, PrivateImport, describe_module, find_modules, module_imports  # noqa: E402

MAX_CYCLES = 200  # enumerating elementary cycles explodes on a tangled graph; say so instead


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
