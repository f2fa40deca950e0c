"""The package's shape, pinned: few top-level modules, no import cycles, no private imports, docstrings.

The first four tests run ``tools/structure.py`` on ``xqg_ray/``; each failure
names what to move or rename. The rest check the analyser itself on a small
package written in a temporary directory, so a bug in it cannot hide a
finding in the real one.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Dict

import pytest

from tool_modules import load_tool

REPO = Path(__file__).resolve().parents[1]
TOP_LEVEL_LIMIT = 14

structure = load_tool("structure.py")


@pytest.fixture(scope="module")
def xqg():
    return structure.analyse(REPO / "xqg_ray")


# -- the real package -----------------------------------------------------------
def test_at_most_14_modules_directly_in_the_package(xqg) -> None:
    top = sorted(Path(m.path).stem for m in xqg.top_level())
    assert len(top) <= TOP_LEVEL_LIMIT, f"{len(top)} modules directly in xqg_ray/: {top}"


def test_no_import_cycles_eager_or_lazy(xqg) -> None:
    cycles = [
        " -> ".join(f"{h.importer} ({h.kind}, line {h.line})" for h in c.hops) + f" -> {c.modules[0]}"
        for c in xqg.cycles
    ]
    assert cycles == []


def test_no_private_name_imported_across_modules(xqg) -> None:
    found = [f"{xqg.modules[p.importer].path}:{p.line} {p.source}.{p.name}" for p in xqg.private_imports if p.internal]
    assert found == []


def test_every_module_has_a_docstring(xqg) -> None:
    assert xqg.undocumented() == []
    assert xqg.parse_errors == []


# -- the analyser on a package it has never seen -------------------------------
SYNTHETIC: Dict[str, str] = {
    "__init__.py": '"""The package."""\nfrom .a import f\n',
    "a.py": (
        '"""Module a."""\n'
        "from . import b\n"  # line 2: relative, a module -> edge to pkg.b
        "\n"
        "\n"
        "def f():\n"
        "    from .sub import c\n"  # line 6: lazy, a module of a subpackage
        "    return c\n"
        "\n"
        "\n"
        "def _helper():\n"
        "    return b\n"
    ),
    "b.py": (
        "import os\n"  # no docstring; os is not part of the package
        "def g():\n"
        "    from . import a\n"  # line 3: lazy, but line 4 makes the same hop eager
        "from pkg.a import _helper, f\n"  # line 4: absolute, a private name from another module
        "from ray._private import worker\n"  # line 5: private, but outside the package
    ),
    "sub/__init__.py": '"""Sub."""\n',
    "sub/c.py": (
        '"""Module c."""\n'
        "from typing import TYPE_CHECKING\n"
        "from .. import b as bee\n"  # line 3: two levels up, aliased
        "from ..sub import d\n"  # line 4: a module through its package, not the package
        "\n"
        "if TYPE_CHECKING:\n"
        "    from ..a import f\n"  # line 7: typing only
        "\n"
        "SECRET = bee._hidden\n"  # line 9: a private name read through a module object
        "__all__ = [d.__name__]\n"  # dunder: not private
    ),
    "sub/d.py": '"""Module d."""\nimport pkg.sub\n',  # line 2: the package's __init__
}


@pytest.fixture()
def synthetic(tmp_path: Path):
    for rel, text in SYNTHETIC.items():
        path = tmp_path / "pkg" / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return structure.analyse(tmp_path / "pkg")


def test_analyser_modules_packages_and_lines(synthetic) -> None:
    assert sorted(synthetic.modules) == ["pkg", "pkg.a", "pkg.b", "pkg.sub", "pkg.sub.c", "pkg.sub.d"]
    assert sorted(Path(m.path).stem for m in synthetic.top_level()) == ["__init__", "a", "b"]
    assert {p: [m.path for m in mods] for p, mods in synthetic.packages().items()} == {
        "(top)": ["pkg/__init__.py", "pkg/a.py", "pkg/b.py"],
        "sub": ["pkg/sub/__init__.py", "pkg/sub/c.py", "pkg/sub/d.py"],
    }
    assert {m.path: m.lines for m in synthetic.modules.values()} == {
        "pkg/__init__.py": 2, "pkg/a.py": 11, "pkg/b.py": 5,
        "pkg/sub/__init__.py": 1, "pkg/sub/c.py": 10, "pkg/sub/d.py": 2,
    }
    assert synthetic.undocumented() == ["pkg/b.py"]


def test_analyser_resolves_every_import_form(synthetic) -> None:
    assert sorted((e.importer, e.imported, e.line, e.kind) for e in synthetic.edges) == [
        ("pkg", "pkg.a", 2, "eager"),
        ("pkg.a", "pkg.b", 2, "eager"),
        ("pkg.a", "pkg.sub.c", 6, "lazy"),
        ("pkg.b", "pkg.a", 3, "lazy"),
        ("pkg.b", "pkg.a", 4, "eager"),
        ("pkg.sub.c", "pkg.a", 7, "typing"),
        ("pkg.sub.c", "pkg.b", 3, "eager"),
        ("pkg.sub.c", "pkg.sub.d", 4, "eager"),
        ("pkg.sub.d", "pkg.sub", 2, "eager"),
    ]


def test_analyser_finds_every_cycle_with_its_weakest_import(synthetic) -> None:
    assert [(c.modules, c.kind, [(h.importer, h.line, h.kind) for h in c.hops]) for c in synthetic.cycles] == [
        (("pkg.a", "pkg.b"), "eager", [("pkg.a", 2, "eager"), ("pkg.b", 4, "eager")]),
        (("pkg.a", "pkg.sub.c"), "typing", [("pkg.a", 6, "lazy"), ("pkg.sub.c", 7, "typing")]),
        (("pkg.a", "pkg.sub.c", "pkg.b"), "lazy",
         [("pkg.a", 6, "lazy"), ("pkg.sub.c", 3, "eager"), ("pkg.b", 4, "eager")]),
    ]
    assert synthetic.cycles_truncated is False


def test_analyser_finds_private_names_from_other_modules(synthetic) -> None:
    assert [(p.importer, p.line, p.source, p.name, p.internal) for p in synthetic.private_imports] == [
        ("pkg.b", 4, "pkg.a", "_helper", True),
        ("pkg.b", 5, "ray", "_private", False),
        ("pkg.sub.c", 9, "pkg.b", "_hidden", True),
    ]


def test_analyser_text_and_json_reports(synthetic, tmp_path: Path, capsys) -> None:
    assert structure.to_text(synthetic).splitlines() == [
        "pkg: 6 modules, 31 lines; 3 directly in pkg/ (at most 14)",
        "",
        "package      modules  lines  modules",
        "(top)              3     18  __init__, a, b",
        "sub                3     13  __init__, c, d",
        "",
        "import cycles: 3 (1 eager, 2 through a lazy or typing import)",
        "  eager  a -> b -> a",
        "  typing a [lazy :6] -> sub.c [typing :7] -> a",
        "  lazy   a [lazy :6] -> sub.c -> b -> a",
        "",
        "private names imported across modules: 2",
        "  pkg/b.py:4  from a import _helper",
        "  pkg/sub/c.py:9  from b import _hidden",
        "  (and from outside pkg, not counted: pkg/b.py:5 ray._private)",
        "",
        "modules without a docstring: 1",
        "  pkg/b.py",
    ]
    assert structure.main(["--root", str(tmp_path / "pkg"), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["top_level_modules"] == ["__init__", "a", "b"]
    assert out["packages"] == {
        "(top)": {"modules": ["__init__", "a", "b"], "lines": 18},
        "sub": {"modules": ["__init__", "c", "d"], "lines": 13},
    }
    assert [c["modules"] for c in out["cycles"]] == [["pkg.a", "pkg.b"], ["pkg.a", "pkg.sub.c"], ["pkg.a", "pkg.sub.c", "pkg.b"]]
    assert out["undocumented"] == ["pkg/b.py"]


def test_analyser_refuses_a_missing_root_in_one_line(tmp_path: Path) -> None:
    with pytest.raises(SystemExit) as e:
        structure.analyse(tmp_path / "nowhere")
    assert str(e.value) == f"structure: no package directory {tmp_path / 'nowhere'} (pass --root PATH/TO/xqg_ray)"
