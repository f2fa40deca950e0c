"""Ray plumbing shared by the stages: starting Ray, and running units of work on an actor pool.

A *unit* is a small JSON-able plan (which partition, which committed input files,
where to write); the driver builds the list of units that have not committed
yet and hands it to :func:`run_units`.  Ray Data streams the units through a
pool of actors of a callable class that loads its model once; each call does
one unit end to end (read inputs, compute, write data, commit) and returns a
one-line summary.  Only plans and summaries pass through the driver.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import time
from typing import Any, Callable, Dict, List, Optional

import pyarrow as pa

from .config import Pool, RayConfig, stage_pool
from .errors import UserError, reraise_user_error


def init_ray(rc: RayConfig) -> None:
    """Start (address="local") or join a Ray cluster once per process."""
    import ray

    if ray.is_initialized():
        return
    if rc.address == "local":
        # A private in-process cluster: no token auth needed on loopback.
        os.environ.setdefault("RAY_AUTH_MODE", "disabled")
        ray.init(address="local", num_cpus=rc.num_cpus, include_dashboard=False, logging_level=logging.WARNING)
    else:
        ray.init(address=rc.address, logging_level=logging.WARNING)
    from ray.data import DataContext

    ctx = DataContext.get_current()
    ctx.enable_progress_bars = rc.progress


def threads_for(rc: RayConfig, stage: str = "encode") -> int:
    """Torch/FAISS threads for one actor of ``stage``."""
    return stage_pool(rc, stage).torch_threads


# Seconds this worker process spent on heavy imports before an actor took it
# (see prewarm); counted once, as the first actor's model loading.
_WARM_SECONDS = [0.0]


def _take_warm_seconds() -> float:
    s, _WARM_SECONDS[0] = _WARM_SECONDS[0], 0.0
    return s


class UnitRunner:
    """Base of the callable classes: decode each unit, call :meth:`run_unit`, encode its summary.

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

    def __call__(self, batch: pa.Table) -> pa.Table:
        out = []
        for u in batch["unit"].to_pylist():
            t0 = time.perf_counter()
            try:
                s = self.run_unit(json.loads(u))
            except UserError as e:
                # Ray Data wraps a worker's exception beyond recovery: hand the user's
                # one-line message back as data, and the driver raises it.
                s = {"error": str(e), "error_type": type(e).__name__}
            s.update(work_seconds=round(time.perf_counter() - t0, 4), load_seconds=round(self._load_seconds, 4))
            self._load_seconds = 0.0  # reported once per actor
            out.append(json.dumps(s))
        return pa.table({"summary": pa.array(out, pa.string())})


def run_units(
    units: List[Dict[str, Any]],
    cls: type,
    ctor: Dict[str, Any],
    pool: Pool,
    on_done: Optional[Callable[[Dict[str, Any]], None]] = None,
) -> List[Dict[str, Any]]:
    """Run ``units`` through an actor pool of ``cls(**ctor)``; returns their summaries in unit order.

    The pool is sized to the work (never more actors than units) and starts
    at full size: an actor that starts late on a small run is pure waiting.
    """
    if not units:
        return []
    import ray
    from ray.data import ActorPoolStrategy

    n = len(units)
    size = max(1, min(pool.max_actors, n))
    ds = ray.data.from_items([{"unit": json.dumps(u)} for u in units], override_num_blocks=n)
    ds = ds.map_batches(
        cls,
        fn_constructor_kwargs=ctor,
        batch_size=1,
        batch_format="pyarrow",
        compute=ActorPoolStrategy(min_size=min(size, max(1, pool.min_actors)), max_size=size),
        num_cpus=pool.num_cpus,
        num_gpus=pool.num_gpus,
    )
    out: List[Dict[str, Any]] = []
    try:
        for row in ds.iter_rows():
            s = json.loads(row["summary"])
            if "error" in s:
                raise _user_error_class(s["error_type"])(s["error"])
            out.append(s)
            if on_done:
                on_done(s)
    except Exception as e:  # a data or config problem inside a worker: its one-line message
        reraise_user_error(e)
        raise
    return out


def _user_error_class(name: str) -> type:
    from .benchmark import BenchmarkError
    from .config import ConfigError
    from .corpus import CorpusError
    from .integrity import IntegrityError

    return {c.__name__: c for c in (BenchmarkError, ConfigError, CorpusError, IntegrityError)}.get(name, UserError)


def run_tasks(fn: Callable, args_list: List[tuple], num_cpus: float) -> List[Any]:
    """``fn(*args)`` for each args tuple as Ray tasks; results in order, user errors unwrapped."""
    import ray

    remote = ray.remote(num_cpus=num_cpus)(fn)
    try:
        return ray.get([remote.remote(*a) for a in args_list])
    except Exception as e:
        reraise_user_error(e)
        raise


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


__all__ = ["init_ray", "threads_for", "UnitRunner", "run_units", "run_tasks", "iter_progress"]
