"""A driver SIGKILLed at any of eight points resumes to outputs identical to an uninterrupted run.

The points: ingest (the benchmark stage), generation and encoding each after
its first unit committed (a half-done stage: some units resumed, the others
computed), index build, search, evaluate, the report (its first chart on disk)
and an index *update* (version 2 of the corpus over version 1's outputs).  One
output directory is killed once at each point in turn, each kill landing after
the previous attempt's committed work, so every rerun resumes a half-done run;
then the same command finishes and every run file, per-query table, generated
question and metric equals the uninterrupted build's.  The driver's JSON
progress events say when a stage has started; a kill lands right after that
line (or after a file appears: a unit's commit record, a chart).

The drivers killed in a model stage start their own local cluster (model
hosts), the others join the test's own cluster, as a job on a shared cluster
does (Ray Data actor pools, which finish the embeddings left half done, and
search actors): both paths must resume to the same outputs, and a joined driver
starts no cluster (this test alone: 164.6 s and 195.3 CPU-s, against 207.2 s
and 216.9 CPU-s with a cluster per kill).
"""

from __future__ import annotations

import os
import select
import subprocess
import sys
import tempfile
import time
from collections import deque
from pathlib import Path
from typing import List, Optional

import pyarrow.parquet as pq
import pytest

from corpus_versions import assert_same_runs, current, files_overrides
from procs import end_driver, wait_for_other_jobs
from xqg_ray.config import load_config
from xqg_ray.pipeline import run

REPO = Path(__file__).resolve().parents[1]
SMOKE = str(REPO / "conf" / "smoke.yaml")
SYSTEMS = ["baseline", "xqg", "xqg-a0.3", "causal-mean"]
# The killed drivers' own clusters have 2 logical CPUs where the uninterrupted runs had 4: fewer task workers
# to start (~1 CPU-s each), and the outputs must not depend on the cluster's size.
OWN_CLUSTER = ["ray.num_cpus=2"]
P = 4  # conf/smoke.yaml's corpus.num_partitions: the units of the generation and encoding stages


def _kill_at(args: List[str], stage: Optional[str] = None, path_glob: Optional[tuple] = None, join: Optional[str] = None,
             timeout: float = 240.0) -> str:
    """Run the CLI; SIGKILL its driver (then every process of its session) right after ``stage`` starts or a
    file matching ``path_glob`` (dir, pattern) appears.  ``join``: the address of this process's cluster, which
    the driver joins (then this waits until the cluster has ended the killed job's actors), else the driver
    starts its own.  Returns what triggered the kill."""
    ray_tmp = tempfile.mkdtemp(prefix="xp", dir="/tmp")  # short: Ray's socket paths must fit 107 bytes
    env = {**os.environ, "XQG_PROGRESS": "json", **({} if join else {"RAY_TMPDIR": ray_tmp})}
    cluster = [f"ray.address={join}"] if join else OWN_CLUSTER
    proc = subprocess.Popen([sys.executable, "-m", "xqg_ray", "run", SMOKE, *args, *cluster], cwd=REPO, start_new_session=True, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1)
    hit, t0 = "", time.time()
    tail: deque = deque(maxlen=15)  # the driver's last lines, for the message when it ends before the point
    try:
        while not hit and time.time() - t0 < timeout:
            if path_glob is not None and path_glob[0].is_dir() and any(path_glob[0].glob(path_glob[1])):
                hit = f"file {path_glob[1]}"
                break
            ready, _, _ = select.select([proc.stdout], [], [], 0.02)
            if ready:
                line = proc.stdout.readline()
                if not line and proc.poll() is not None:
                    break
                tail.append(line.rstrip()[:300])
                if stage is not None and f'"xqg": "{stage}", "event": "start"' in line:
                    hit = f"stage {stage}"
            elif proc.poll() is not None:
                break
    finally:
        ended = proc.poll()  # None: still running, so this kills it at the timeout
        logs = "" if hit or join else _ray_log_tails(ray_tmp)  # read before end_driver removes the dir
        end_driver(proc, ray_tmp)  # SIGKILL the driver, then (its own cluster) raylet, GCS and workers
        if join:
            wait_for_other_jobs()
    if not hit:
        how = f"ended (rc {ended})" if ended is not None else f"was still running after {timeout:g} s"
        pytest.fail(f"the run {how} before {stage or path_glob} was reached; its last lines:\n" + "\n".join(tail) + logs)
    return hit


def _ray_log_tails(ray_tmp: str, lines: int = 5) -> str:
    """The last lines of the driver's own Ray cluster's main logs: what a run that never got going was waiting for."""
    out = []
    for f in sorted(Path(ray_tmp).glob("session_*/logs/*")):
        if f.name.startswith(("raylet.", "gcs_server.", "python-core-driver", "monitor.")) and f.is_file():
            out += [f"-- {f.name}", *f.read_text(errors="replace").splitlines()[-lines:]]
    return "\n" + "\n".join(out) if out else f"\n(no Ray logs under {ray_tmp})"


def _same(out: Path, ref: Path, ref_metrics: dict, final: dict) -> None:
    for s in SYSTEMS:
        assert_same_runs(out / "runs" / f"{s}.trec", ref / "runs" / f"{s}.trec")
        assert pq.read_table(out / "per_query" / f"{s}.parquet").equals(pq.read_table(ref / "per_query" / f"{s}.parquet")), s
    assert final["systems"] == ref_metrics["systems"]
    assert final["comparisons"] == ref_metrics["comparisons"]


def test_kill_at_eight_points_then_resume(versions, ray_local, ref_v1, scratch_v2, tmp_path):
    ref, ref_metrics = ref_v1  # the same command uninterrupted (conftest)
    out = tmp_path / "killed"
    v1 = files_overrides(versions["v1"], versions["queries"], out)
    here = ray_local.get_runtime_context().gcs_address
    hits = [_kill_at(v1, stage="benchmark", join=here)]
    # Mid-stage: the first unit's commit record is the trigger, so the stage has units done and units to do.
    # Two model hosts work at once, so a second unit may commit before the kill lands; never all four.
    done = {}
    for stage in ("generated/t5", "embeddings"):
        hits.append(_kill_at(v1, path_glob=(out / stage / "commits", "*.json")))
        done[stage] = len(list((out / stage / "commits").glob("*.json")))
        assert 1 <= done[stage] < P, (stage, done[stage])
        assert not (out / stage / "current.json").exists(), stage
    hits += [_kill_at(v1, stage=s, join=here) for s in ("index", "search", "evaluate")]
    hits.append(_kill_at(v1, path_glob=(out / "plots", "*.png"), join=here))
    assert hits == ["stage benchmark", "file *.json", "file *.json", "stage index", "stage search", "stage evaluate", "file *.png"]
    assert not (out / "metrics.json").exists()  # every kill landed before the run finished
    final = run(load_config(SMOKE, v1))
    _same(out, ref, ref_metrics, final)
    # The half-done stages were resumed, not recomputed: the units committed before each kill are kept as they were.
    for stage, n in done.items():
        assert current(out, stage)["unit_counts"] == {"total": P, "computed": P - n, "resumed": n}, stage
    gen = pq.read_table(str(out / "generated" / "t5" / "data")).sort_by("id")
    assert gen.num_rows == 60 and gen.equals(pq.read_table(str(ref / "generated" / "t5" / "data")).sort_by("id"))
    # The eighth point: an index update (corpus version 2 over version 1's outputs), killed as the index stage starts.
    v2 = files_overrides(versions["v2"], versions["queries"], out)
    assert _kill_at(v2, stage="index") == "stage index"
    updated = run(load_config(SMOKE, v2))
    scratch, rebuilt = scratch_v2
    _same(out, scratch, rebuilt, updated)
    for s in SYSTEMS:
        assert current(out, f"index/{s}")["modes"] == ["updated"], s
