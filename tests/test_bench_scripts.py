"""Every script in bench/ runs in its tiny mode (small arguments, tiny random models) and prints its result line.

The benches call the stages' public entry points (``generate_units``,
``passage_units`` ...), so a refactor that breaks them fails here, not the
next time someone measures.  The scripts run as subprocesses, two at a
time: each starts a local Ray cluster, and with three at once beside the
kill-point test's drivers a Ray start on this 2-core machine passed Ray's
fixed 30 s node-startup timeout in CI ("Ray timed out during startup").

The scripts in SHARED_PROCESS run one after another in one subprocess
(``runpy``, each with its own argv and captured output): they neither stop Ray
nor start it other than through ``init_ray``, so they share one local cluster
and its warm model hosts, where a process each started a cluster and imported
torch again (~15 CPU-s a script).  The others measure their own processes
(``scale``, ``encode_memory``, ``fixed_cost``) and keep a process each.
``ingest``, ``train`` and ``encode`` start Ray after their single-process arms
through ``init_ray``, a no-op in the shared process, where the cluster already
runs while their bare arms are timed (idle: a tiny mode's figures are not the
benchmark's), and stop it only if they started it.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
BENCH = REPO / "bench"

# script -> (tiny-mode arguments, a regex one line of its stdout must match in full).
TINY = {
    "index_update.py": (["--n", "2000", "--dim", "16", "--factory", "IVF8,Flat", "--threads", "1"],
                        r"full build of 2000 vectors \(IVF8,Flat, dim 16\): [0-9.]+ s"),
    "ingest.py": (["--n", "500", "--files", "2", "--partitions", "2", "--chunk-mb", "1", "--num-cpus", "2"],
                  r"rows 500: single-process read_corpus .* \(.*, 2 partitions, 2 logical CPUs\); ratio [0-9.]+x"),
    "search.py": (["--cases", "tiny", "--queries", "50", "--dim", "16", "--k", "10", "--shards", "2", "--repeat", "1", "--num-cpus", "2"],
                  r"tiny: 300 passages x 50 queries, k=10, dim 16, median of 1: .* same id at 100\.000% of ranks, max \|score diff\| 0\.00e\+00; .*"),
    "encode.py": (["--limit", "16", "--model", "tiny:tiny-bert", "--max-len", "32", "--partitions", "2", "--num-cpus", "2", "--threads", "1"],
                  r"stage .* run_units EncodePartition, 2 partitions, 1 actor\(s\) x 1 threads; max \|diff\| vs direct 0\.0e\+00"),
    # The shipped path's arms (the demo's filters, the round trip under a tiny encoder, without and with draws
    # ahead): every draw of the one is a draw of the other (the same seeds), as many as the plain arm's.
    "generate.py": (["--model", "tiny:tiny-gpt2", "--passages", "4", "--languages", "de", "--max-new-tokens", "4", "--batch-size", "4", "--threads", "1",
                     "--arms", "today,stage,stage-rt,stage-rt-ahead,stage-shared,bare,new,no-reuse,bs1", "--encoder", "tiny:tiny-bert", "--split"],
                    r"stage-rt-ahead: ([4-8]) of its \1 draws are stage-rt's \(\1\)"),
    "prompting.py": (["--tiny"], r"arms today/drawn/target: round-trip top-1 [0-9.]+/[0-9.]+/[0-9.]+, target language "
                                 r"[0-9.]+/[0-9.]+/[0-9.]+, exemplar copies [0-9]+/[0-9]+/[0-9]+ of 8 slots"),
    "fixed_cost.py": ([], r"run 1: wall [0-9.]+ s; model work [0-9.]+ s \+ loading [0-9.]+ s = [0-9.]+ s; ratio wall/model [0-9.]+x \(goal <= 2\)"),
    # One model host: the shared process's cluster started two for 60 passages (~6 CPU-s each).
    "incremental.py": (["--n", "60", "--partitions", "2", "--factory", "Flat", "--steps", "0.1", "--languages", "de", "--max-actors", "1"],
                       r'\{"run": "\+10\.0% \(6 passages\)", .*"index_modes": \["updated"\], "added": 6\}'),
    "encode_memory.py": (["--n", "200", "--factor", "2"],
                         r"peak RSS at 2x N / at N: [0-9.]+x \(goal <= 1\.5x\); added by the partition: [0-9.]+x"),
    # 64 pairs = 4 steps of 16 in each arm (256 took 16): the ratio line means the same.
    "train.py": (["--tiny", "--pairs", "64", "--threads", "1"], r"ratio trainer/bare: [0-9.]+x"),
    "scale.py": (["--tiny"], r"scale 200 -> 2000: max stage time ratio [0-9.]+x \([^;]+; goal <= 11\), max peak RSS ratio [0-9.]+x "
                                r"\(goal <= 1\.5\), 1% update at 2000: [0-9.]+ of the full build's CPU-s \(goal <= 0\.05\)"),
}


def scripts() -> list:
    """Every runnable script of bench/ (``synth.py`` is a module the others import)."""
    return sorted(p.name for p in BENCH.glob("*.py") if 'if __name__ == "__main__":' in p.read_text())


# Run in one process, in this order: the first to start Ray sizes the cluster (search.py: 2 logical CPUs,
# what incremental.py's two search actors and generate.py's one actor need).
SHARED_PROCESS = ("search.py", "incremental.py", "generate.py", "prompting.py", "index_update.py", "ingest.py", "train.py", "encode.py")

# Runs [(script, argv)] (argv[1]) with runpy, writing {script: {returncode, stdout, stderr}} to argv[2].
GROUP_RUNNER = r"""
import contextlib, io, json, runpy, sys, traceback
jobs, dest = json.loads(sys.argv[1]), sys.argv[2]
out = {}
for path, args in jobs:
    o, e, rc = io.StringIO(), io.StringIO(), 0
    sys.argv = [path, *args]
    with contextlib.redirect_stdout(o), contextlib.redirect_stderr(e):
        try:
            runpy.run_path(path, run_name="__main__")
        except SystemExit as x:
            rc = x.code if isinstance(x.code, int) else (0 if x.code is None else 1)
            if x.code is not None and not isinstance(x.code, int):
                print(x.code, file=sys.stderr)
        except BaseException:
            traceback.print_exc()
            rc = 1
    out[path] = {"returncode": rc, "stdout": o.getvalue(), "stderr": e.getvalue()}
with open(dest, "w") as f:
    json.dump(out, f)
"""

ENV = {"PYTHONPATH": str(REPO), "RAY_AUTH_MODE": "disabled", "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}


def run_script(name: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(BENCH / name), *TINY[name][0]], cwd=REPO, env={**os.environ, **ENV}, capture_output=True,
                          text=True, timeout=400)


def run_shared(names: list, dest: Path) -> dict:
    """name -> finished process (its own return code and output) of ``names`` run in turn in one process."""
    jobs = [(str(BENCH / n), TINY[n][0]) for n in names]
    r = subprocess.run([sys.executable, "-c", GROUP_RUNNER, json.dumps(jobs), str(dest)], cwd=REPO, env={**os.environ, **ENV},
                       capture_output=True, text=True, timeout=600)
    if not dest.is_file():  # the runner itself died: every script fails with its output
        return {n: subprocess.CompletedProcess(n, r.returncode or 1, r.stdout, r.stderr) for n in names}
    done = json.loads(dest.read_text())  # keyed by the script's path, as in jobs
    out = {}
    for n in names:
        d = done[str(BENCH / n)]
        out[n] = subprocess.CompletedProcess(n, d["returncode"], d["stdout"], d["stderr"])
    return out


@pytest.fixture(scope="module")
def results(request, tiny_models, shared_datasets, tmp_path_factory):
    """name -> finished process of every script the selected tests ask for, two processes at a time."""
    wanted = {item.callspec.params["name"] for item in request.session.items if hasattr(item, "callspec") and "name" in item.callspec.params}
    if any(item.name == "test_incremental_full_build_line_is_json" for item in request.session.items):
        wanted.add("incremental.py")
    shared = [n for n in SHARED_PROCESS if n in wanted]
    # The slowest first (TINY lists them last; the shared process is the longest), so the two workers finish together.
    order = [n for n in reversed(list(TINY)) if n in wanted and n not in shared]
    dest = tmp_path_factory.mktemp("bench") / "shared.json"
    with ThreadPoolExecutor(max_workers=2) as pool:
        together = pool.submit(run_shared, shared, dest) if shared else None
        alone = dict(zip(order, pool.map(run_script, order)))
        return {**alone, **(together.result() if together else {})}


def test_the_scripts_keeping_a_process_each():
    """A misspelt name in SHARED_PROCESS would silently give that script its own process again."""
    assert sorted(set(TINY) - set(SHARED_PROCESS)) == ["encode_memory.py", "fixed_cost.py", "scale.py"]
    assert len(set(TINY) & set(SHARED_PROCESS)) == len(SHARED_PROCESS) == 8


def test_every_bench_script_has_a_tiny_mode():
    assert scripts() == sorted(TINY)


@pytest.mark.parametrize("name", sorted(TINY))
def test_bench_script_runs_in_tiny_mode(results, name):
    r = results[name]
    assert r.returncode == 0, r.stderr[-3000:]
    pattern = re.compile(TINY[name][1])
    assert any(pattern.fullmatch(line) for line in r.stdout.splitlines()), r.stdout[-3000:]


def test_incremental_full_build_line_is_json(results):
    first = json.loads(next(line for line in results["incremental.py"].stdout.splitlines() if line.startswith("{")))
    assert (first["run"], first["passages"]) == ("full build", 60)
