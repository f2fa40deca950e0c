"""The machine's CPU-seconds during each test file, in one serial pytest run: what each file costs, subprocesses and Ray included.

    .venv/bin/python tools/cpu_by_test_file.py                      # the whole suite, one process (~14 min here)
    .venv/bin/python tools/cpu_by_test_file.py tests/test_s3.py     # any pytest arguments

``tools/cpu_by_process.py`` says which *kinds* of process use the suite's CPU;
it cannot say which test made them, because a Ray worker is a child of its
cluster's raylet, not of the test.  This runs pytest in this process (no
xdist workers, whatever the Makefile's default) with itself as a plugin, reads
the whole machine's busy CPU time (``/proc/stat``: every state but idle and
iowait) as each test starts and ends, and prints each file's sum: its own
work, its subprocesses, its clusters' daemons and workers, and whatever else
the machine ran meanwhile (so run it on a quiet machine).  Serial, every
second belongs to one test; the suite's time here is not ``make test``'s.
"""

from __future__ import annotations

import os
import sys
import time
from collections import defaultdict
from typing import Dict, List, Tuple

import pytest

# (nodeid, wall seconds, busy CPU-seconds) of each test, in run order.
_TESTS: List[Tuple[str, float, float]] = []


def busy_seconds() -> float:
    """CPU-seconds every core of the machine has spent busy since boot (all states but idle and iowait)."""
    with open("/proc/stat") as f:
        fields = f.readline().split()[1:]
    ticks = sum(int(v) for i, v in enumerate(fields) if i not in (3, 4))
    return ticks / os.sysconf("SC_CLK_TCK")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item, nextitem):
    """Around each test's setup, call and teardown: its wall time and the machine's busy CPU in between."""
    t0, c0 = time.perf_counter(), busy_seconds()
    yield
    _TESTS.append((item.nodeid, time.perf_counter() - t0, busy_seconds() - c0))


def by_file(tests: List[Tuple[str, float, float]]) -> Dict[str, Tuple[float, float, int]]:
    """file -> (wall seconds, CPU-seconds, tests) summed over its tests."""
    out: Dict[str, List[float]] = defaultdict(lambda: [0.0, 0.0, 0])
    for nodeid, wall, cpu in tests:
        row = out[nodeid.split("::")[0]]
        row[0] += wall
        row[1] += cpu
        row[2] += 1
    return {f: (w, c, int(n)) for f, (w, c, n) in out.items()}


def report(tests: List[Tuple[str, float, float]], top: int = 40) -> str:
    files = by_file(tests)
    wall = sum(w for w, _, _ in files.values())
    cpu = sum(c for _, c, _ in files.values())
    lines = [f"{len(tests)} tests, {len(files)} files: {wall:.1f} s, {cpu:.1f} CPU-s of the machine "
             f"({cpu / wall if wall else 0:.2f} cores busy)", f"{'CPU-s':>8} {'share':>6} {'wall s':>8} {'tests':>5}  file"]
    for f, (w, c, n) in sorted(files.items(), key=lambda kv: -kv[1][1])[:top]:
        lines.append(f"{c:8.1f} {100 * c / cpu if cpu else 0:5.1f}% {w:8.1f} {n:5d}  {f}")
    return "\n".join(lines)


def main(argv: List[str]) -> int:
    args = argv or ["tests"]
    # -p no:xdist: one process, so every busy second belongs to the test that is running.  This module is the
    # plugin (as an object: imported again by name it would keep another list of tests).
    rc = pytest.main(["-q", "-p", "no:xdist", "-p", "no:cacheprovider", *args], plugins=[sys.modules[__name__]])
    print(report(_TESTS))
    return int(rc)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
