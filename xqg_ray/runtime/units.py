"""Ray plumbing shared by the stages: starting Ray, and running units of work on an actor pool.

A *unit* is a small JSON-able plan (which partition, which committed input files,
where to write); the driver builds the list of units that have not committed
yet and hands it to :func:`run_units`.  A pool of actors of a callable class
loads its model once; each call does one unit end to end (read inputs,
compute, write data, commit) and returns a one-line summary.  Only plans and
summaries pass through the driver.

On a cluster the pool is a Ray Data actor pool (autoscaling, retries).  On the
private local cluster, where each stage's fresh actor processes were most of a
small run's time (process start, then importing torch and transformers, again
for every stage), the units run on *model hosts*: long-lived actor processes
started with the cluster, which import torch and transformers while the driver
prepares the benchmark, and load one stage's model after another.
"""

from __future__ import annotations

import atexit
import functools
import json
import logging
import os
import time
from collections import deque
from typing import Any, Callable, Dict, List, Optional

import pyarrow as pa

from ..config import Pool, RayConfig, stage_pool
from ..errors import UserError, reraise_user_error


# The node id of the local cluster init_ray started in this process (None: none
# started, or joined a cluster), and that cluster's model hosts.
_LOCAL: Dict[str, Any] = {"node": None, "hosts": []}

# What a model host imports before its first stage: the bulk of a model actor's start-up.
HEAVY_IMPORTS = ("torch", "transformers", "transformers.modeling_utils")


def init_ray(rc: RayConfig) -> None:
    """Start (address="local") or join a Ray cluster once per process.

    A local cluster also starts its model hosts (CPU-only stages), which import
    torch and transformers in the background.
    """
    import ray

    if ray.is_initialized():
        return
    if rc.address == "local":
        # A private in-process cluster: no token auth needed on loopback.
        os.environ.setdefault("RAY_AUTH_MODE", "disabled")
        ray.init(address="local", num_cpus=rc.num_cpus, include_dashboard=False, logging_level=logging.WARNING)
        _LOCAL.update(node=ray.get_runtime_context().get_node_id(), hosts=[])
        if not _LOCAL.get("atexit"):
            atexit.register(stop_local_cluster)  # runs before Ray's own (registered earlier)
            _LOCAL["atexit"] = True
        pools = [stage_pool(rc, st) for st in ("generate", "encode")]
        _hosts(max([p.max_actors for p in pools if p.num_gpus == 0] or [0]))
    else:
        ray.init(address=rc.address, logging_level=logging.WARNING)
        _LOCAL.update(node=None, hosts=[])
    from ray.data import DataContext

    ctx = DataContext.get_current()
    ctx.enable_progress_bars = rc.progress


def stop_local_cluster() -> None:
    """Stop the local cluster this process started (at exit), its autoscaler monitor first.

    ``ray.shutdown`` stops the GCS before the monitor, which then keeps calling
    the dead GCS until it is killed a second later: measured 1.2-1.4 s of a
    shutdown that takes 0.2 s in this order.  The monitor is reached through
    Ray's private node object (Ray is pinned): if that ever moves, the plain
    shutdown still runs.
    """
    import ray

    if not ray.is_initialized() or _LOCAL["node"] is None:
        return
    try:
        from ray._private import worker

        worker._global_node.kill_monitor(check_alive=False)
    except Exception:  # an attribute moved or the process is gone: nothing lost but a second
        pass
    ray.shutdown()


def threads_for(rc: RayConfig, stage: str = "encode") -> int:
    """Torch/FAISS threads for one actor of ``stage``."""
    return stage_pool(rc, stage).torch_threads


# Seconds this process (a model host) spent importing HEAVY_IMPORTS before its
# first runner; counted once, as that runner's model loading.
_WARM_SECONDS = [0.0]


def _take_warm_seconds() -> float:
    s, _WARM_SECONDS[0] = _WARM_SECONDS[0], 0.0
    return s


class UnitRunner:
    """Base of the unit classes: :meth:`run_json` decodes a unit, calls :meth:`run_unit`, encodes its summary.

    Every summary carries ``work_seconds`` (that unit's :meth:`run_unit`) and
    ``load_seconds`` (the actor's constructor, model loading and the heavy
    imports it does, counted on the actor's first unit only, else 0), so the
    driver can tell model time from fixed cost.
    """

    _load_seconds: float = 0.0

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        init = cls.__dict__.get("__init__")
        if init is None:
            return

        @functools.wraps(init)
        def timed_init(self, *args: Any, **kw: Any) -> None:
            outer = "_load_t0" not in self.__dict__  # a subclass calling super().__init__ is timed once
            if outer:
                self._load_t0 = time.perf_counter()
            init(self, *args, **kw)
            if outer:
                self._load_seconds = time.perf_counter() - self._load_t0 + _take_warm_seconds()

        cls.__init__ = timed_init

    def run_unit(self, unit: Dict[str, Any]) -> Dict[str, Any]:  # pragma: no cover - abstract
        raise NotImplementedError

    def run_json(self, unit: str) -> str:
        """One unit from its JSON plan to its JSON summary; a user error becomes an ``error`` summary."""
        t0 = time.perf_counter()
        try:
            s = self.run_unit(json.loads(unit))
        except UserError as e:
            # Ray wraps a worker's exception beyond recovery: hand the user's
            # one-line message back as data, and the driver raises it.
            s = {"error": str(e), "error_type": type(e).__name__}
        s.update(work_seconds=round(time.perf_counter() - t0, 4), load_seconds=round(self._load_seconds, 4))
        self._load_seconds = 0.0  # reported once per actor
        return json.dumps(s)


class ModelHost:
    """A long-lived actor process on the local cluster that runs one :class:`UnitRunner` at a time.

    It takes no logical CPUs: the driver gives it one unit at a time and never
    starts more hosts than a stage's ``max_actors``, so it never holds CPUs
    that index or search tasks wait for while it is idle between stages.
    """

    def __init__(self) -> None:
        self.runner: Optional[UnitRunner] = None

    def warm(self) -> None:
        t0 = time.perf_counter()
        for name in HEAVY_IMPORTS:
            __import__(name)
        _WARM_SECONDS[0] += time.perf_counter() - t0

    def setup(self, cls: type, ctor: Dict[str, Any]) -> None:
        self.release()
        self.runner = cls(**ctor)

    def run(self, unit: str) -> str:
        assert self.runner is not None
        return self.runner.run_json(unit)

    def release(self) -> None:
        """Drop the stage's model (its memory goes back before the next stage loads its own)."""
        import gc

        self.runner = None
        gc.collect()


def _hosts(n: int) -> List[Any]:
    """The local cluster's first ``n`` model hosts, starting (and warming) any missing."""
    import ray

    hosts = _LOCAL["hosts"]
    if len(hosts) < n:
        cls = ray.remote(num_cpus=0)(ModelHost)
        for _ in range(n - len(hosts)):
            h = cls.remote()
            h.warm.remote()  # queued: runs while the driver goes on
            hosts.append(h)
    return hosts[:n]


def wait_for_hosts() -> None:
    """Block until every local model host has finished warming (its imports take CPU:
    a benchmark that times something else waits for them first)."""
    import ray

    ray.get([h.release.remote() for h in _LOCAL["hosts"]])  # queued behind warm()


def _on_local_cluster(pool: Pool) -> bool:
    import ray

    return pool.num_gpus == 0 and _LOCAL["node"] is not None and ray.is_initialized() and ray.get_runtime_context().get_node_id() == _LOCAL["node"]


def run_units(
    units: List[Dict[str, Any]],
    cls: type,
    ctor: Dict[str, Any],
    pool: Pool,
    on_done: Optional[Callable[[Dict[str, Any]], None]] = None,
) -> List[Dict[str, Any]]:
    """Run ``units`` through an actor pool of ``cls(**ctor)``; returns their summaries in unit order.

    The pool is sized to the work (never more actors than units).  On the
    local cluster it is the model hosts, all at once; elsewhere a Ray Data
    actor pool from ``pool.min_actors`` up, so an autoscaler adds nodes.
    """
    if not units:
        return []
    n = len(units)
    size = max(1, min(pool.max_actors, n))
    run = _run_on_hosts if _on_local_cluster(pool) else _run_on_ray_data
    out: List[Optional[Dict[str, Any]]] = [None] * n
    try:
        for i, line in run([json.dumps(u) for u in units], cls, ctor, pool, size):
            s = json.loads(line)
            if "error" in s:
                raise _user_error_class(s["error_type"])(s["error"])
            out[i] = s
            if on_done:
                on_done(s)
    except Exception as e:  # a data or config problem inside a worker: its one-line message
        reraise_user_error(e)
        raise
    return out  # type: ignore[return-value]


def _run_on_hosts(units: List[str], cls: type, ctor: Dict[str, Any], pool: Pool, size: int):
    """(unit index, summary JSON) as units finish, one unit in flight per host."""
    import ray

    hosts = _hosts(size)
    try:
        ray.get([h.setup.remote(cls, ctor) for h in hosts])  # constructor errors surface here, with their message
        todo, running = deque(range(len(units))), {}
        free = list(hosts)
        while todo or running:
            while free and todo:
                h, i = free.pop(), todo.popleft()
                running[h.run.remote(units[i])] = (h, i)
            done, _ = ray.wait(list(running), num_returns=1)
            h, i = running.pop(done[0])
            free.append(h)
            yield i, ray.get(done[0])
    except ray.exceptions.RayActorError:
        _LOCAL["hosts"] = []  # a host died (e.g. out of memory): later calls start fresh ones
        raise
    finally:
        for h in _LOCAL["hosts"]:
            h.release.remote()


def _run_on_ray_data(units: List[str], cls: type, ctor: Dict[str, Any], pool: Pool, size: int):
    """(unit index, summary JSON) from a Ray Data actor pool."""
    import ray
    from ray.data import ActorPoolStrategy

    ds = ray.data.from_items([{"i": i, "unit": u} for i, u in enumerate(units)], override_num_blocks=len(units))
    ds = ds.map_batches(
        _IndexedRunner,
        fn_constructor_kwargs={"cls": cls, "ctor": ctor},
        batch_size=1,
        batch_format="pyarrow",
        compute=ActorPoolStrategy(min_size=min(size, max(1, pool.min_actors)), max_size=size),
        num_cpus=pool.num_cpus,
        num_gpus=pool.num_gpus,
    )
    for row in ds.iter_rows():
        yield int(row["i"]), row["summary"]


class _IndexedRunner:
    """Ray Data's callable: ``cls(**ctor)`` once, then each row's unit, keeping the row's index."""

    def __init__(self, cls: type, ctor: Dict[str, Any]):
        self.runner = cls(**ctor)

    def __call__(self, batch: pa.Table) -> pa.Table:
        return pa.table({"i": batch["i"], "summary": pa.array([self.runner.run_json(u) for u in batch["unit"].to_pylist()], pa.string())})


def _user_error_class(name: str) -> type:
    from ..benchmark.build import BenchmarkError
    from ..config import ConfigError
    from ..benchmark.corpus import CorpusError
    from ..store.integrity import IntegrityError

    return {c.__name__: c for c in (BenchmarkError, ConfigError, CorpusError, IntegrityError)}.get(name, UserError)


def run_tasks(fn: Callable, args_list: List[tuple], num_cpus: float) -> List[Any]:
    """``fn(*args)`` for each args tuple as Ray tasks; results in order, user errors unwrapped."""
    import ray

    remote = ray.remote(num_cpus=num_cpus)(_by_value(fn))
    try:
        return ray.get([remote.remote(*a) for a in args_list])
    except Exception as e:
        reraise_user_error(e)
        raise


def _by_value(fn: Callable) -> Callable:
    """A copy of ``fn`` that Ray ships by value: a worker then imports only the modules of
    the names ``fn`` uses, not ``fn``'s whole module (importing the evaluate stage pulls in
    nltk and scipy.stats, 5 s in every fresh worker for a task that reads one file)."""
    import types

    copy = types.FunctionType(fn.__code__, fn.__globals__, fn.__name__, fn.__defaults__, fn.__closure__)
    copy.__kwdefaults__, copy.__doc__ = fn.__kwdefaults__, fn.__doc__
    # cloudpickle pickles a function by reference only when its module's attribute
    # of that name is the very same object: this copy is not.
    copy.__module__, copy.__qualname__ = fn.__module__, fn.__qualname__
    return copy


def iter_progress(total: int, stage: str, event: Callable[..., None]) -> Callable[[Dict[str, Any]], None]:
    """An ``on_done`` callback that prints ``k/total`` units done for ``stage``.

    Its events carry the unit's ``load_seconds`` and ``work_seconds``, which
    :class:`~xqg_ray.progress.StageTimer` adds up per stage.
    """
    done = {"n": 0}

    def cb(summary: Dict[str, Any]) -> None:
        done["n"] += 1
        event(stage, "unit", done=done["n"], of=total, unit=summary.get("unit"), computed=summary.get("computed"), reused=summary.get("reused"),
              load_seconds=summary.get("load_seconds", 0.0), work_seconds=summary.get("work_seconds", 0.0))

    return cb


__all__ = ["init_ray", "threads_for", "UnitRunner", "ModelHost", "run_units", "run_tasks", "iter_progress"]
