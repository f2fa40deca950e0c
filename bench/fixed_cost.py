"""Fixed cost of a run: ``xqg-ray run conf/smoke.yaml`` end to end against its model time, in one run.

    .venv/bin/python bench/fixed_cost.py
    .venv/bin/python bench/fixed_cost.py --config conf/smoke.yaml --repeat 2 -- ray.max_actors=2

Runs the command in a subprocess with a fresh output directory (so nothing is
reused), timestamps every progress line as it arrives, and reads metrics.json.
Model time is the sum over stages of ``load_seconds`` (actor constructors:
imports, model and shard loading) and ``work_seconds`` (the units' calls).
Prints the wall time, the model time, their ratio (the goal: at most 2), and
where the rest went: start-up until the first stage, each stage's seconds
beyond its model time, and the time from the last stage to exit.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def run_once(config: str, overrides: list, datasets: str) -> dict:
    with tempfile.TemporaryDirectory() as d:
        out = Path(d) / "run"
        cmd = [sys.executable, "-m", "xqg_ray", "run", config, f"output_dir={out}", f"benchmark.source={datasets}", *overrides]
        env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        events = []
        for line in proc.stderr:
            if line.startswith('{"xqg"'):
                # A worker's log line can land on the same line: keep the event, drop the rest.
                events.append((time.perf_counter() - t0, json.JSONDecoder().raw_decode(line)[0]))
        if proc.wait():
            raise SystemExit(f"{' '.join(cmd)} failed with exit status {proc.returncode}")
        wall = time.perf_counter() - t0
        metrics = json.loads((out / "metrics.json").read_text())
    stages = metrics["stages"]
    load = sum(s.get("load_seconds", 0.0) for s in stages.values())
    work = sum(s.get("work_seconds", 0.0) for s in stages.values())
    starts = [t for t, e in events if e["event"] == "start"]
    dones = [t for t, e in events if e["event"] == "done"]
    return {"wall": wall, "load": load, "work": work, "stages": stages,
            "before_first_stage": starts[0] if starts else wall, "after_last_stage": wall - (dones[-1] if dones else 0.0)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default=str(REPO / "conf" / "smoke.yaml"))
    ap.add_argument("--datasets", default=os.environ.get("XQG_SHARED_DATASETS", str(REPO.parent / "shared" / "datasets")))
    ap.add_argument("--repeat", type=int, default=1)
    ap.add_argument("overrides", nargs="*", help="dotlist overrides for the run")
    a = ap.parse_args()
    for r in range(a.repeat):
        m = run_once(a.config, a.overrides, a.datasets)
        model = m["load"] + m["work"]
        print(f"run {r + 1}: wall {m['wall']:.1f} s; model work {m['work']:.1f} s + loading {m['load']:.1f} s = {model:.1f} s; "
              f"ratio wall/model {m['wall'] / model if model else float('nan'):.2f}x (goal <= 2)")
        print(f"  start-up to the first stage {m['before_first_stage']:.1f} s; last stage to exit {m['after_last_stage']:.1f} s")
        for name, s in m["stages"].items():
            if name == "queries":  # encoded inside the embeddings pass: its seconds are that pass's
                continue
            own = s.get("load_seconds", 0.0) + s.get("work_seconds", 0.0)
            print(f"  {name:<16} {s['seconds']:6.1f} s  load {s.get('load_seconds', 0.0):5.1f}  work {s.get('work_seconds', 0.0):5.1f}"
                  f"  other {s['seconds'] - own:5.1f}")


if __name__ == "__main__":
    main()
