"""The command line: prepare writes a benchmark; config and data errors exit 2 with a message."""

import json
from pathlib import Path

import pytest

from xqg_ray.cli import main

SMOKE = str(Path(__file__).resolve().parents[1] / "conf" / "smoke.yaml")


def test_prepare_xquad(tmp_path, shared_datasets, ray_local, capsys):
    out = tmp_path / "bench"
    args = ["prepare", SMOKE, f"output_dir={out}", f"benchmark.source={shared_datasets}", "benchmark.corpus_limit=0",
            "benchmark.max_queries_per_language=0", "ray.progress=false"]
    assert main(args) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["counts"]["passages"] == 2067
    assert printed["counts"]["queries"] == {"de": 1190, "zh": 1190}
    assert printed["changes"] == {"added": 2067, "changed": 0, "removed": 0, "unchanged": 0} and printed["parent_snapshot"] is None
    ptr = json.loads((out / "benchmark" / "current.json").read_text())
    assert json.loads((out / ptr["manifest"]).read_text())["snapshot"] == printed["snapshot"]


def test_errors_exit_2_with_a_message(tmp_path, capsys):
    assert main(["run", SMOKE, "index.num_shard=3"]) == 2
    assert "num_shard" in capsys.readouterr().err
    assert main(["run", SMOKE, f"output_dir={tmp_path}", "benchmark.source=/nonexistent"]) == 2
    assert "no xquad/ directory" in capsys.readouterr().err


def test_debug_shows_the_traceback_of_a_user_error(capsys):
    """One line and exit 2 by default; ``--debug`` lets the same error propagate with its traceback."""
    from xqg_ray.config import ConfigError

    assert main(["run", SMOKE, "index.num_shards=0"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == err.strip().count("\n") + 1 and "Traceback" not in err
    with pytest.raises(ConfigError, match="index.num_shards"):
        main(["--debug", "run", SMOKE, "index.num_shards=0"])


def test_more_shards_than_cpus_is_refused_before_any_work(tmp_path, ray_local, capsys):
    """The session's local cluster has 4 CPUs: 5 search actors of 1 CPU never all run, so the run is refused
    once Ray is up, before the benchmark stage writes anything (it used to hang at search)."""
    out = tmp_path / "run"
    assert main(["run", SMOKE, "index.num_shards=5", "corpus.num_partitions=8", f"output_dir={out}"]) == 2
    assert capsys.readouterr().err == ("xqg-ray: cannot schedule 5 search actors (one per index shard), 1 CPU each, on this cluster "
                                       "(1 node, 4 CPUs, 0 GPUs: 4 fit): change index.num_shards, ray.search.max_actors or ray.search.num_cpus/num_gpus "
                                       "(or give the cluster more)\n")
    assert not out.exists()


STOP_SCRIPT = """
import json, os
os.environ["RAY_AUTH_MODE"] = "disabled"
from ray._private import node
from xqg_ray.config import RayConfig
from xqg_ray.runtime.cluster import init_ray, stop_local_cluster
order = []
kill = node.Node._kill_process_impl
def logged(self, process_type, *a, **kw):
    if process_type in self.all_processes:
        order.append(process_type)
    return kill(self, process_type, *a, **kw)
node.Node._kill_process_impl = logged
init_ray(RayConfig(num_cpus=1, progress=False))
import ray
stop_local_cluster()
print(json.dumps({"order": order, "initialized": ray.is_initialized()}))
"""


def test_local_cluster_stops_its_monitor_before_the_gcs(tmp_path):
    """At exit the local cluster's autoscaler monitor is stopped first: stopped after the GCS (Ray's
    order) it keeps calling the dead GCS until killed a second later, on every run."""
    import os
    import subprocess
    import sys

    from procs import kill_session

    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    proc = subprocess.Popen([sys.executable, "-c", STOP_SCRIPT], cwd=tmp_path, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, text=True, start_new_session=True)
    try:
        out, _ = proc.communicate(timeout=120)
    finally:
        kill_session(proc.pid)
    got = json.loads(out.strip().splitlines()[-1])
    assert got["initialized"] is False
    assert got["order"][0] == "monitor" and got["order"].index("gcs_server") > 0 and "raylet" in got["order"]
