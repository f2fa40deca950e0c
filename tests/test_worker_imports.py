"""What a Ray worker imports to run the package's tasks and actors: only what each one uses.

A worker imports the module of every function a shipped task names.  The id
lookup task once named a function of the evaluate stage, whose module pulls in
nltk and scipy.stats: about 1.5 CPU-s in each fresh worker for a task that reads
a few row groups (at 1M passages, most of a 1% update's evaluate stage).
"""

from __future__ import annotations

import ast
import importlib
import pkgutil
import subprocess
import sys
from pathlib import Path

import pytest
import ray.cloudpickle as cloudpickle

import xqg_ray
from xqg_ray.runtime.remote import by_value, carrying_class

# Functions and methods (Cluster.kept_actors) that hand their first argument to Ray.
SHIPPERS = {"run_tasks", "run_model_task", "remote_function", "remote_class", "kept_actors"}
# What no task or actor of the package needs, unless it runs a model (below).
HEAVY = ("nltk", "scipy.stats", "matplotlib", "torch", "transformers")
MODELS = {"xqg_ray.runtime.cluster:ModelHost", "xqg_ray.stages.question_quality:round_trip_task"}


def shipped():
    """(module:name, object) of every function or class the package hands to Ray, found in its source."""
    out = {}
    for m in pkgutil.walk_packages(xqg_ray.__path__, "xqg_ray."):
        path = Path(importlib.util.find_spec(m.name).origin)
        for node in ast.walk(ast.parse(path.read_text())):
            called = getattr(node.func, "id", None) or getattr(node.func, "attr", None) if isinstance(node, ast.Call) else None
            if called in SHIPPERS and node.args and isinstance(node.args[0], ast.Name):
                mod = importlib.import_module(m.name)
                if hasattr(mod, node.args[0].id):  # run_tasks(fn, ...) inside run_tasks itself names its parameter
                    out[f"{m.name}:{node.args[0].id}"] = getattr(mod, node.args[0].id)
    return out


SHIPPED = shipped()


def test_the_discovery_finds_the_tasks_and_actors():
    for name in ("xqg_ray.stages.index:build_shard", "xqg_ray.ingest.lookup:partition_rows", "xqg_ray.stages.search:ShardSearcher",
                 "xqg_ray.ingest.snapshot:reduce_partition", "xqg_ray.runtime.devices:cpu_flags", *MODELS):
        assert name in SHIPPED, name
    assert len(SHIPPED) == 13


@pytest.mark.parametrize("name", sorted(SHIPPED))
def test_a_worker_imports_only_what_the_task_uses(name):
    obj = SHIPPED[name]
    data = cloudpickle.dumps(carrying_class(obj) if isinstance(obj, type) else by_value(obj))
    code = ("import sys, ray.cloudpickle as c; c.loads(sys.stdin.buffer.read()); "
            f"print(' '.join(m for m in {HEAVY!r} if m in sys.modules))")
    r = subprocess.run([sys.executable, "-c", code], input=data, capture_output=True, timeout=120)
    assert r.returncode == 0, r.stderr.decode()[-2000:]
    loaded = r.stdout.decode().split()
    if name in MODELS:
        assert "nltk" not in loaded and "matplotlib" not in loaded
    else:
        assert loaded == []
