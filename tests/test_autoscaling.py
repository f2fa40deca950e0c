"""The job on Ray's fake autoscaling cluster: GPU actor pools make the autoscaler add nodes.

The cluster is Ray's ``fake_multinode`` provider (what ``ray.cluster_utils.AutoscalingCluster``
drives): a head with CPUs and no GPU, and one worker type with ``GPU: 1`` that starts at
0 nodes.  The generation and encoding pools ask for one GPU per actor, so nothing runs
until the autoscaler adds GPU workers; once the job is done they sit idle and are
released.  There is no real GPU: the fake ``GPU`` resource only drives scheduling
(``torch.cuda.is_available()`` stays False in the actors).

``AutoscalingCluster`` itself is not used: in Ray 2.60 its ``start()``/``shutdown()``
run ``ray stop --force``, which ends every Ray process on the machine (this session's
cluster and anyone else's), and the wheel lacks the ``example.yaml`` it reads.  The same
thing is done here with a head started by ``ray start --head --block`` in its own process
group on free ports and a private temp dir, stopped by signalling that group.

The job's driver runs in a subprocess (this process already holds the session's
``ray_local`` cluster, and one process joins one cluster); it samples the alive nodes
every half second while the pipeline runs and until the GPU workers are gone.  The
outputs are compared with the same config run on the session's local cluster (no GPU
request there) through the public output contract: ``runs/SYSTEM.trec`` and
``metrics.json["systems"]``.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from procs import stop_ray_head
import yaml

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent

GPU_WORKERS = 2  # max_workers of the GPU type, and the pools' min = max actors
IDLE_S = 15  # idle_timeout for the GPU workers (margin for the second or so between the two pools)
SYSTEMS = ["baseline", "xqg"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def fake_cluster_config(gcs_address: str) -> dict:
    """The autoscaler config of the fake cluster (the fields Ray's fake_multi_node example sets)."""
    return {
        "cluster_name": "xqg-fake",
        "max_workers": GPU_WORKERS,
        "upscaling_speed": 1.0,
        "idle_timeout_minutes": IDLE_S / 60,
        "provider": {
            "type": "fake_multinode",
            "gcs_address": gcs_address,  # else the provider assumes port 6379
            "use_node_id_as_ip": True,
            "disable_node_updaters": True,
            "disable_launch_config_check": True,
        },
        "available_node_types": {
            "ray.head.default": {"resources": {"CPU": 4}, "node_config": {}, "max_workers": 0},
            "gpu_worker": {
                # One CPU: the actor (1 CPU + 1 GPU) fills the node, as on a 1-GPU cloud node.
                "resources": {"CPU": 1, "GPU": 1, "object_store_memory": 200 * 1024**2},
                "node_config": {},
                "min_workers": 0,
                "max_workers": GPU_WORKERS,
            },
        },
        "head_node_type": "ray.head.default",
        "auth": {},
        "docker": {},
        "initialization_commands": [],
        "setup_commands": [],
        "head_setup_commands": [],
        "worker_setup_commands": [],
        "head_start_ray_commands": [],
        "worker_start_ray_commands": [],
        "file_mounts": {},
        "cluster_synced_files": [],
        "file_mounts_sync_continuously": False,
        "rsync_exclude": [],
        "rsync_filter": [],
    }


@pytest.fixture
def fake_autoscaling_cluster(tmp_path):
    if not (BIN / "ray").exists():
        pytest.skip("the ray CLI is not installed beside this Python")
    port = _free_port()
    gcs = f"127.0.0.1:{port}"
    # Ray's unix sockets live under --temp-dir and must fit in 107 bytes: keep it short.
    temp = tempfile.mkdtemp(prefix="xa", dir="/tmp")
    conf = tmp_path / "autoscaler.json"
    conf.write_text(json.dumps(fake_cluster_config(gcs)))
    env = {
        **os.environ,
        "RAY_AUTH_MODE": "disabled",
        "RAY_FAKE_CLUSTER": "1",  # lets the autoscaler use the fake_multinode provider
        "AUTOSCALER_UPDATE_INTERVAL_S": "1",
        "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
        "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}",
    }
    cmd = [str(BIN / "ray"), "start", "--head", "--block", "--node-ip-address=127.0.0.1", f"--port={port}",
           f"--autoscaling-config={conf}", "--num-cpus=4", "--num-gpus=0", "--include-dashboard=false",
           "--object-store-memory=300000000", "--disable-usage-stats", f"--temp-dir={temp}"]
    log = open(tmp_path / "head.log", "w")
    proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        yield gcs, env
    finally:
        stop_ray_head(proc, temp)
        log.close()
        shutil.rmtree(temp, ignore_errors=True)


# The driver of the run on the fake cluster: joins it, samples the alive nodes in a
# thread, runs the pipeline, then waits for the GPU workers to be released.
DRIVER = r"""
import json, sys, threading, time
import ray
from xqg_ray.config import load_config
from xqg_ray.pipeline import run

cfg = load_config(sys.argv[1])
ray.init(address=cfg.ray.address, logging_level="WARNING")
samples, stop = [], threading.Event()

def sample():
    alive = [n for n in ray.nodes() if n["Alive"]]
    gpu = sorted(n["NodeID"] for n in alive if n["Resources"].get("GPU", 0) > 0)
    samples.append({"t": time.time(), "nodes": len(alive), "gpu_nodes": gpu})

def poll():
    while not stop.is_set():
        sample()
        time.sleep(0.5)

sample()
t = threading.Thread(target=poll, daemon=True)
t.start()
start = time.time()
run(cfg)
done = time.time()
deadline = done + float(sys.argv[3])
while time.time() < deadline and (not samples or samples[-1]["gpu_nodes"]):
    time.sleep(1)
stop.set()
t.join()
sample()
json.dump({"start": start, "done": done, "samples": samples}, open(sys.argv[2], "w"))
"""


def job_config(out: Path, datasets: Path, address: str, gpus: float) -> dict:
    return {
        "output_dir": str(out),
        "benchmark": {"kind": "xquad", "source": str(datasets), "languages": ["de", "zh"],
                      "max_queries_per_language": 4, "corpus_limit": 24},
        "corpus": {"num_partitions": 4},
        "encoder": {"model": "tiny:tiny-bert", "pooling": "cls", "max_passage_length": 64, "batch_size": 8},
        "generators": {"t5": {"kind": "seq2seq", "model": "tiny:tiny-t5", "languages": ["de", "zh"],
                              "n_per_language": 1, "max_new_tokens": 4, "batch_size": 4}},
        "systems": [{"name": "baseline"}, {"name": "xqg", "generator": "t5", "alpha": 0.01, "aggregation": "sum"}],
        "index": {"num_shards": 2},
        "search": {"top_k": 20},
        "eval": {"bootstrap_samples": 50},
        "ray": {"address": address, "actor_num_cpus": 1, "actor_num_gpus": gpus, "min_actors": GPU_WORKERS,
                "max_actors": GPU_WORKERS, "torch_threads": 1, "progress": False},
    }


def _outputs(out: Path) -> dict:
    metrics = json.loads((out / "metrics.json").read_text())
    return {"systems": metrics["systems"], **{s: (out / "runs" / f"{s}.trec").read_text() for s in SYSTEMS}}


def test_gpu_pools_scale_workers_up_and_down(fake_autoscaling_cluster, ray_local, tmp_path, shared_datasets,
                                              tiny_models):
    from xqg_ray.config import load_config
    from xqg_ray.pipeline import run

    gcs, env = fake_autoscaling_cluster
    fake_yaml = tmp_path / "fake.yaml"
    fake_yaml.write_text(yaml.safe_dump(job_config(tmp_path / "fake", shared_datasets, gcs, gpus=1)))
    trace = tmp_path / "trace.json"
    r = subprocess.run([sys.executable, "-c", DRIVER, str(fake_yaml), str(trace), str(IDLE_S + 60)],
                       env=env, cwd=REPO, capture_output=True, text=True, timeout=540)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    t = json.loads(trace.read_text())
    samples = t["samples"]
    gpu_counts = [len(s["gpu_nodes"]) for s in samples]
    steps = [c for i, c in enumerate(gpu_counts) if i == 0 or c != gpu_counts[i - 1]]
    peak = steps.index(GPU_WORKERS) if GPU_WORKERS in steps else len(steps)
    trace_msg = f"GPU workers over time: {steps}; job {t['done'] - t['start']:.0f} s"
    # Before the job: only the head (no GPU).
    assert samples[0]["nodes"] == 1 and gpu_counts[0] == 0, trace_msg
    # While the pools run: exactly two GPU workers (2 actors x 1 GPU, the type's max),
    # added one by one or together and never released in between (the fake provider
    # numbers its nodes: the same two served both pools).
    assert max(gpu_counts) == GPU_WORKERS and max(s["nodes"] for s in samples) == 1 + GPU_WORKERS, trace_msg
    assert steps[: peak + 1] == sorted(steps[: peak + 1]), trace_msg
    assert steps[peak:] == sorted(steps[peak:], reverse=True), trace_msg
    assert len({n for s in samples for n in s["gpu_nodes"]}) == GPU_WORKERS, trace_msg
    # After the job: released once idle for IDLE_S, leaving the head alone.
    assert samples[-1]["nodes"] == 1 and gpu_counts[-1] == 0, trace_msg

    # The same job on the session's local cluster (no GPU request): the same outputs.
    local_yaml = tmp_path / "local.yaml"
    local_yaml.write_text(yaml.safe_dump(job_config(tmp_path / "local", shared_datasets, "local", gpus=0)))
    run(load_config(str(local_yaml)))
    fake, ref = _outputs(tmp_path / "fake"), _outputs(tmp_path / "local")
    assert sorted(fake["systems"]) == SYSTEMS
    assert fake == ref
