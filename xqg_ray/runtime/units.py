"""Running units of work on an actor pool: :class:`UnitRunner`, :func:`run_units`, :func:`iter_progress`.

A *unit* is a small JSON-able plan (which partition, which committed input files,
where to write); the driver builds the list of units that have not committed
yet and hands it to :func:`run_units`.  A pool of actors of a callable class
loads its model once; each call does one unit end to end (read inputs,
compute, write data, commit) and returns a one-line summary.  Only plans and
summaries pass through the driver.

On a cluster the pool is a Ray Data actor pool (autoscaling, retries):
:func:`on_ray_data`.  On the private local cluster the units run on its model
hosts (:mod:`xqg_ray.runtime.hosts`): :func:`on_model_hosts`.  A user error
raised in a unit arrives at the driver as itself (see :mod:`xqg_ray.errors`).
"""

from __future__ import annotations

import functools
import json
import time
from collections import deque
from typing import Any, Callable, Dict, Iterator, List, Optional, Tuple

import pyarrow as pa

from ..config import Pool, RayConfig, stage_pool
from ..errors import carry_user_errors, reraise_user_error
from .capacity import Demand, require
from .cluster import ClusterError, current


def threads_for(rc: RayConfig, stage: str = "encode") -> int:
    """Torch/FAISS threads for one actor of ``stage``."""
    return stage_pool(rc, stage).torch_threads


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
                self._load_seconds = time.perf_counter() - self._load_t0

        cls.__init__ = timed_init

    def add_load_seconds(self, seconds: float) -> None:
        """Count ``seconds`` (a model host's heavy imports before this runner) as this runner's model loading."""
        self._load_seconds += seconds

    def run_unit(self, unit: Dict[str, Any]) -> Dict[str, Any]:  # pragma: no cover - abstract
        raise NotImplementedError

    def run_json(self, unit: str) -> str:
        """One unit from its JSON plan to its JSON summary."""
        t0 = time.perf_counter()
        s = self.run_unit(json.loads(unit))
        s.update(work_seconds=round(time.perf_counter() - t0, 4), load_seconds=round(self._load_seconds, 4))
        self._load_seconds = 0.0  # reported once per actor
        return json.dumps(s)


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
    run = on_model_hosts if current().serves_on_hosts(pool.num_gpus) else on_ray_data
    out: List[Optional[Dict[str, Any]]] = [None] * n
    try:
        for i, line in run([json.dumps(u) for u in units], cls, ctor, pool, size):
            s = json.loads(line)
            out[i] = s
            if on_done:
                on_done(s)
    except Exception as e:  # a data or config problem inside a worker: its one-line message
        reraise_user_error(e)
        raise
    return out  # type: ignore[return-value]


def on_model_hosts(units: List[str], cls: type, ctor: Dict[str, Any], pool: Pool, size: int) -> Iterator[Tuple[int, str]]:
    """(unit index, summary JSON) as units finish on ``size`` of the local cluster's model hosts, one unit in flight per host."""
    import ray

    cluster = current()
    hosts = cluster.model_hosts(size)
    what = f"{cls.__name__} units on {size} model host{'s' if size != 1 else ''}"
    try:
        # constructor errors surface here, with their message
        cluster.get([h.setup.remote(cls, ctor) for h in hosts], f"{size} model hosts to load {cls.__name__}")
        todo, running = deque(range(len(units))), {}
        free = list(hosts)
        while todo or running:
            while free and todo:
                h, i = free.pop(), todo.popleft()
                running[h.run.remote(units[i])] = (h, i)
            done, _ = cluster.wait(list(running), what)
            h, i = running.pop(done[0])
            free.append(h)
            yield i, ray.get(done[0])
    except ray.exceptions.RayActorError:
        cluster.forget_hosts()  # a host died (e.g. out of memory): later calls start fresh ones
        raise
    finally:
        cluster.release_hosts()


def on_ray_data(units: List[str], cls: type, ctor: Dict[str, Any], pool: Pool, size: int) -> Iterator[Tuple[int, str]]:
    """(unit index, summary JSON) from a Ray Data actor pool of 1 to ``size`` actors of ``cls(**ctor)``.

    A pool the cluster cannot hold is refused up front where the cluster's size is fixed; elsewhere its
    first actors must start within the cluster's ``wait_timeout_s`` (an autoscaler adds nodes
    meanwhile), else a :class:`~xqg_ray.runtime.cluster.ClusterError` names them.
    """
    import ray
    from ray.data import ActorPoolStrategy, DataContext

    cluster = current()
    min_size = min(size, max(1, pool.min_actors))
    require([Demand(f"{min_size} {cls.__name__} actors (the stage's ray.<stage>.min_actors)", min_size, pool.num_cpus, pool.num_gpus,
                    "that stage's ray.<stage>.min_actors or num_cpus/num_gpus (or ray.actor_*)")])
    DataContext.get_current().wait_for_min_actors_s = max(1, int(cluster.wait_timeout_s))
    ds = ray.data.from_items([{"i": i, "unit": u} for i, u in enumerate(units)], override_num_blocks=len(units))
    ds = ds.map_batches(
        IndexedRunner,
        fn_constructor_kwargs={"cls": cls, "ctor": ctor},
        batch_size=1,
        batch_format="pyarrow",
        compute=ActorPoolStrategy(min_size=min_size, max_size=size),
        num_cpus=pool.num_cpus,
        num_gpus=pool.num_gpus,
    )
    try:
        for row in ds.iter_rows():
            yield int(row["i"]), row["summary"]
    except ray.exceptions.GetTimeoutError:
        raise ClusterError(f"waited {cluster.wait_timeout_s:g} s for {min_size} {cls.__name__} actors ({pool.num_cpus:g} CPU, "
                           f"{pool.num_gpus:g} GPU each) to start: the cluster cannot schedule them; lower the stage's "
                           f"ray.<stage>.min_actors or num_cpus/num_gpus, or add nodes") from None


class IndexedRunner:
    """Ray Data's callable: ``cls(**ctor)`` once, then each row's unit, keeping the row's index (user errors carried)."""

    @carry_user_errors
    def __init__(self, cls: type, ctor: Dict[str, Any]):
        self.runner = cls(**ctor)

    @carry_user_errors
    def __call__(self, batch: pa.Table) -> pa.Table:
        return pa.table({"i": batch["i"], "summary": pa.array([self.runner.run_json(u) for u in batch["unit"].to_pylist()], pa.string())})


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


__all__ = ["threads_for", "UnitRunner", "run_units", "on_model_hosts", "on_ray_data", "IndexedRunner", "iter_progress"]
