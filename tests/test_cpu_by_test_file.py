"""tools/cpu_by_test_file.py: tests summed per file, the table, and one real serial run of a small file."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tool_modules import load_tool

REPO = Path(__file__).resolve().parents[1]
TOOL = REPO / "tools" / "cpu_by_test_file.py"


def test_tests_are_summed_per_file_and_the_costliest_comes_first():
    tool = load_tool("cpu_by_test_file.py")
    tests = [("tests/a.py::x", 1.0, 2.0), ("tests/b.py::y[1]", 0.5, 6.0), ("tests/a.py::z", 2.0, 1.0), ("tests/b.py::y[2]", 0.5, 1.0)]
    assert tool.by_file(tests) == {"tests/a.py": (3.0, 3.0, 2), "tests/b.py": (1.0, 7.0, 2)}
    assert tool.report(tests).splitlines() == [
        "4 tests, 2 files: 4.0 s, 10.0 CPU-s of the machine (2.50 cores busy)",
        "   CPU-s  share   wall s tests  file",
        "     7.0  70.0%      1.0     2  tests/b.py",
        "     3.0  30.0%      3.0     2  tests/a.py",
    ]


def test_a_real_serial_run_names_its_file_and_counts_its_tests():
    # This file's pure test alone (-k): no Ray, no data, one test in one file.
    r = subprocess.run([sys.executable, str(TOOL), "tests/test_cpu_by_test_file.py", "-k", "summed"], cwd=REPO,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    lines = r.stdout.splitlines()
    head = next(i for i, line in enumerate(lines) if line.startswith("1 tests, 1 files: "))
    row = lines[head + 2].split()
    assert row[3:] == ["1", "tests/test_cpu_by_test_file.py"], lines[head:]
