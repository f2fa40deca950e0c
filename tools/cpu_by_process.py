"""CPU-seconds of a command's processes by kind: where a test suite's or a run's CPU goes.

    .venv/bin/python tools/cpu_by_process.py make test
    .venv/bin/python tools/cpu_by_process.py .venv/bin/xqg-ray run conf/smoke.yaml output_dir=out/x

Samples ``/proc`` every ``--interval`` seconds while the command runs and keeps,
for every process that was not there before it started, its last CPU time
(user + system) and every title it had.  A Ray worker renames itself
(``ray::IDLE``, ``ray::ModelHost``, ``ray::_sha256_file`` ...), so its kind is
taken from the titles it had: a worker that ran one kind of task or actor is
that kind, one that ran several is a task worker, one that only ever idled was
prestarted and never used.  Other processes are named by their command line
(pytest's xdist workers are ``python -c``; Ray's daemons by their script).
A process that lives less than one interval may be missed, and a process's
last interval before it exits is lost: the totals are a lower bound (with the
default 0.1 s, the sampler itself costs a few percent of one core).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from collections import defaultdict
from typing import Dict, Iterable, Tuple

TICK = os.sysconf("SC_CLK_TCK")
IDLE = "ray::IDLE"
# Substrings of a Python command line -> its kind, first match wins (Ray's daemons, our entry points).
PYTHON_KINDS = (
    ("-m xqg_ray", "xqg-ray driver"), ("bin/xqg-ray", "xqg-ray driver"), ("-m pytest", "pytest"), ("dashboard/agent", "ray dashboard agent"),
    ("dashboard/dashboard", "ray dashboard"), ("log_monitor", "ray log monitor"), ("autoscaler", "ray autoscaler monitor"),
    ("runtime_env/agent", "ray runtime env agent"), ("bench/", "bench script"), ("bin/ray", "ray CLI"), (" -c ", "python -c (xdist worker, test driver)"),
)

Key = Tuple[int, int]  # (pid, start time in ticks): a pid reused by a later process is another process


def kind_of(titles: Iterable[str], cmdline: str) -> str:
    """The kind of a process from every title (``comm``) it had and its command line."""
    # An actor's title while a method runs is "ray::Class.method", cut by Linux at 15 characters
    # ("ray::ModelHost."): the class is the part before the dot.
    named = sorted({t.split(".")[0] for t in titles if t.startswith("ray::") and t != IDLE})
    if named:
        return named[0] if len(named) == 1 else "ray task worker (several kinds)"
    if IDLE in titles:
        return "ray worker that never ran anything"
    words = cmdline.split()
    if not words:
        return "|".join(sorted(titles)) or "?"
    exe = os.path.basename(words[0])
    if exe.startswith("python"):
        for needle, kind in PYTHON_KINDS:
            if needle in f" {cmdline} ":
                return kind
        return "python " + " ".join(words[1:3])[:50]
    return exe


def snapshot() -> Dict[Key, Tuple[float, str]]:
    """Every process now: (pid, start) -> (CPU-seconds so far, title)."""
    out: Dict[Key, Tuple[float, str]] = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat") as f:
                stat = f.read()
        except OSError:  # it exited between the listing and the read
            continue
        title = stat[stat.index("(") + 1 : stat.rindex(")")]
        fields = stat[stat.rindex(")") + 2 :].split()
        out[(int(name), int(fields[19]))] = ((int(fields[11]) + int(fields[12])) / TICK, title)
    return out


def cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline") as f:
            return f.read().replace("\0", " ").strip()
    except OSError:
        return ""


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--interval", type=float, default=0.1, help="seconds between samples of /proc")
    ap.add_argument("--top", type=int, default=30, help="kinds to print, most CPU first")
    ap.add_argument("command", nargs=argparse.REMAINDER)
    a = ap.parse_args()
    if not a.command:
        ap.error("name a command to run")
    before = set(snapshot())
    t0 = time.perf_counter()
    proc = subprocess.Popen(a.command)
    cpu: Dict[Key, float] = {}
    titles: Dict[Key, set] = defaultdict(set)
    cmds: Dict[Key, str] = {}
    while proc.poll() is None:
        for key, (seconds, title) in snapshot().items():
            if key in before:
                continue
            if key not in cmds:
                cmds[key] = cmdline(key[0])
            cpu[key] = seconds
            titles[key].add(title)
        time.sleep(a.interval)
    wall = time.perf_counter() - t0
    by_kind: Dict[str, list] = defaultdict(lambda: [0.0, 0])
    for key, seconds in cpu.items():
        k = kind_of(titles[key], cmds[key])
        by_kind[k][0] += seconds
        by_kind[k][1] += 1
    total = sum(v[0] for v in by_kind.values())
    print(f"wall {wall:.1f} s, CPU {total:.1f} s ({total / wall:.2f} cores) over {len(cpu)} processes", file=sys.stderr)
    for k, (seconds, n) in sorted(by_kind.items(), key=lambda kv: -kv[1][0])[: a.top]:
        print(f"  {seconds:8.1f} CPU-s {n:5d} processes  {k}", file=sys.stderr)
    return proc.returncode


if __name__ == "__main__":
    sys.exit(main())
