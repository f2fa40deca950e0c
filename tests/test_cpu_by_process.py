"""tools/cpu_by_process.py: the kind of a process from its titles and command line, and one real command measured."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tool_modules import load_tool

REPO = Path(__file__).resolve().parents[1]
TOOL = REPO / "tools" / "cpu_by_process.py"


def test_kinds_of_hand_made_processes():
    kind_of = load_tool("cpu_by_process.py").kind_of
    py = "/v/bin/python"
    assert kind_of({"ray::IDLE", "ray::ModelHost", "ray::ModelHost."}, f"{py} default_worker.py") == "ray::ModelHost"
    assert kind_of({"ray::IDLE", "ray::ShardSearc"}, f"{py} default_worker.py") == "ray::ShardSearc"
    assert kind_of({"ray::IDLE", "ray::_sha256_fi", "ray::partition_"}, f"{py} default_worker.py") == "ray task worker (several kinds)"
    assert kind_of({"ray::IDLE"}, f"{py} default_worker.py") == "ray worker that never ran anything"
    assert kind_of({"python"}, f"{py} -m pytest -q -n 2") == "pytest"
    assert kind_of({"python"}, f"{py} -c import sys;exec(eval(sys.stdin.readline()))") == "python -c (xdist worker, test driver)"
    assert kind_of({"python"}, f"{py} -m xqg_ray run conf/smoke.yaml") == "xqg-ray driver"
    # a driver whose output lies under pytest's temporary directory is a driver, not pytest
    assert kind_of({"python"}, f"{py} -m xqg_ray run conf/smoke.yaml output_dir=/tmp/pytest-of-root/p/k") == "xqg-ray driver"
    assert kind_of({"python"}, f"{py} -u /v/ray/_private/log_monitor.py --x") == "ray log monitor"
    assert kind_of({"python"}, f"{py} /v/ray/dashboard/dashboard.py --x") == "ray dashboard"
    assert kind_of({"python"}, f"{py} /work/main/bench/scale.py --tiny") == "bench script"
    assert kind_of({"python"}, f"{py} /w/other.py a b c") == "python /w/other.py a"
    assert kind_of({"raylet"}, "/v/ray/core/src/ray/raylet/raylet --raylet_socket_name=x") == "raylet"
    assert kind_of({"kworker/0:1"}, "") == "kworker/0:1"


def test_a_command_that_burns_a_known_cpu_time_is_counted_with_its_exit_code():
    burn = "import time\nt = time.process_time()\nwhile time.process_time() - t < 0.6: pass\nraise SystemExit(3)"
    r = subprocess.run([sys.executable, str(TOOL), "--interval", "0.05", sys.executable, "/dev/stdin"], input=burn,
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 3, r.stderr
    lines = r.stderr.splitlines()
    row = next(line for line in lines if line.endswith("python /dev/stdin"))
    seconds, n = float(row.split()[0]), int(row.split()[2])
    # 0.6 s of CPU burnt, plus the interpreter's start; at most one 0.05 s sample lost before the exit
    assert n == 1 and 0.5 <= seconds <= 1.5, lines
