"""Which process runs what on the local cluster, and what each gives back: model hosts, task workers' freed memory.

A model host imports torch once and runs every CPU stage's model work; it keeps what
its imports made out of the garbage collector's sight but still frees a released
model.  A task function hands freed heap back to the OS before and after it runs.
"""

from __future__ import annotations

import pytest

from xqg_ray.config import Pool


def _pid_and_torch(x):
    import os
    import sys

    return os.getpid(), "torch" in sys.modules, x * 2


def test_a_model_task_runs_in_the_model_host_process_on_the_local_cluster(ray_local):
    """The round trip's encoder task runs on the model host, where torch is already imported, not in a fresh
    worker that imports it again (~4 CPU-s a run); its result comes back as the function's."""
    import ray

    from xqg_ray.runtime.cluster import current
    from xqg_ray.runtime.tasks import run_model_task

    pool = Pool(num_cpus=1.0, num_gpus=0.0, min_actors=1, max_actors=1, torch_threads=1)
    [host] = current().model_hosts(1)
    host_pid = ray.get(host.__ray_call__.remote(lambda self: __import__("os").getpid()))
    current().wait_for_hosts()
    assert run_model_task(_pid_and_torch, (21,), pool) == (host_pid, True, 42)


def _hold_a_cycle(host):
    """Give the host a runner that is a reference cycle (as a model can be), and keep a weak reference to it."""
    import weakref

    class Cycle:
        pass

    c = Cycle()
    c.me = c
    host.runner, host.probe = c, weakref.ref(c)


def test_a_warm_host_keeps_its_imports_out_of_the_collector_and_still_frees_a_released_cycle(ray_local):
    """After warming, what torch and transformers made at import is frozen (a release's gc.collect() skips it),
    and a runner in a reference cycle is still freed by the release."""
    import ray

    from xqg_ray.runtime.cluster import current
    from xqg_ray.runtime.remote import by_value

    [host] = current().model_hosts(1)
    current().wait_for_hosts()
    assert ray.get(host.__ray_call__.remote(lambda self: __import__("gc").get_freeze_count())) > 100_000
    ray.get(host.__ray_call__.remote(by_value(_hold_a_cycle)))
    assert ray.get(host.__ray_call__.remote(lambda self: self.probe() is not None))
    ray.get(host.release.remote())
    assert ray.get(host.__ray_call__.remote(lambda self: self.probe() is None))


def test_task_functions_release_freed_memory_before_and_after(monkeypatch):
    """Every task function returns freed memory to the OS before it runs and after, also when it raises."""
    from xqg_ray.runtime import remote

    calls = []
    monkeypatch.setattr(remote, "release_freed_memory", lambda: calls.append("release"))

    def work(x):
        calls.append(f"work {x}")
        if x < 0:
            raise ValueError("negative")
        return x + 1

    wrapped = remote.releasing_memory(work)
    assert wrapped(1) == 2 and calls == ["release", "work 1", "release"]
    calls.clear()
    with pytest.raises(ValueError, match="negative"):
        wrapped(-1)
    assert calls == ["release", "work -1", "release"]


RELEASE_SCRIPT = """
from xqg_ray.runtime.remote import release_freed_memory
def rss():
    return int([l for l in open("/proc/self/status") if l.startswith("VmRSS")][0].split()[1]) // 1024
blocks = [bytearray(4096) for _ in range(50_000)]  # 200 MB on glibc's heap
pin = bytearray(4096)  # allocated last: the heap's top stays in use, so free() alone cannot shrink it
start = rss()
del blocks
freed = rss()
release_freed_memory()
print(start, freed, rss())
"""


def test_release_freed_memory_hands_the_heap_back():
    """200 MB freed but pinned under a live block stays resident until release_freed_memory (glibc's
    malloc_trim), which hands it back: what a Ray worker keeps between tasks otherwise."""
    import subprocess
    import sys

    r = subprocess.run([sys.executable, "-c", RELEASE_SCRIPT], capture_output=True, text=True, timeout=60)
    start, freed, released = map(int, r.stdout.split())
    assert freed > start - 20, (start, freed, released)  # free() alone returned (almost) nothing
    assert released < start - 180, (start, freed, released)  # the 200 MB went back


def test_the_local_cluster_starts_no_preemption_watcher(ray_local):
    """A private single-node cluster is never drained: Ray Train's per-run watcher actor is switched off before
    Ray starts (its processes inherit the driver's environment)."""
    import os

    assert os.environ["RAY_TRAIN_ENABLE_PREEMPTION_WATCHER"] == "0"
