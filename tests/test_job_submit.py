"""`ray job submit` of jobs/run_xqg.py against a Ray head on 127.0.0.1 (the path users take on clusters).

The head runs with ``--block`` in its own process group and is stopped by
signalling that group, so the test session's in-process cluster is untouched
(`ray stop` would end every Ray process on the machine).
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import pytest

from procs import stop_ray_head

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def ray_head(tmp_path):
    if not (BIN / "ray").exists():
        pytest.skip("the ray CLI is not installed beside this Python")
    port, dash, agent = _free_port(), _free_port(), _free_port()
    # Ray's unix sockets live under --temp-dir and must fit in 107 bytes: keep it short.
    temp = tempfile.mkdtemp(prefix="xr", dir="/tmp")
    env = {**os.environ, "RAY_AUTH_MODE": "disabled", "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"}
    cmd = [str(BIN / "ray"), "start", "--head", "--block", "--node-ip-address=127.0.0.1", f"--port={port}",
           "--dashboard-host=127.0.0.1", f"--dashboard-port={dash}", "--include-dashboard=true",
           # its own job-agent port: the session's local cluster already holds Ray's default one
           f"--dashboard-agent-listen-port={agent}", "--num-cpus=4",
           "--disable-usage-stats", f"--temp-dir={temp}"]
    log = open(tmp_path / "head.log", "w")
    proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    address = f"http://127.0.0.1:{dash}"
    try:
        deadline = time.time() + 90
        while True:
            try:
                urllib.request.urlopen(f"{address}/api/version", timeout=2)
                break
            except OSError:
                if proc.poll() is not None or time.time() > deadline:
                    pytest.fail(f"Ray head did not start: {(tmp_path / 'head.log').read_text()[-2000:]}")
                time.sleep(1)
        yield address, env
    finally:
        stop_ray_head(proc, temp)
        log.close()
        shutil.rmtree(temp, ignore_errors=True)


def test_ray_job_submit_runs_the_job(ray_head, tmp_path, shared_datasets, tiny_models):
    address, env = ray_head
    out = tmp_path / "run"
    cmd = [str(BIN / "ray"), "job", "submit", f"--address={address}", "--working-dir", str(REPO),
           "--runtime-env-json", json.dumps({"excludes": ["out/", ".venv/", ".git/"]}), "--",
           "python", "jobs/run_xqg.py", "conf/smoke.yaml", "ray.address=auto", f"output_dir={out}",
           f"benchmark.source={shared_datasets}", "benchmark.max_queries_per_language=4", "benchmark.corpus_limit=16"]
    for _ in range(30):
        r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=480)
        # The dashboard answers before its job agent registers ("No available agent to
        # submit job"); a refusal before the job was accepted is safe to ask again.
        if r.returncode == 0 or "submitted successfully" in r.stdout + r.stderr:
            break
        time.sleep(2)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert "succeeded" in r.stdout + r.stderr
    metrics = json.loads((out / "metrics.json").read_text())
    assert set(metrics["systems"]) == {"baseline", "xqg", "xqg-a0.3", "causal-mean"}
    assert metrics["benchmark"]["passages"] == 16
