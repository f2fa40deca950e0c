"""A stage's actor resources resolved from the config: ``ray.<stage>`` over the ``ray.actor_*`` defaults.

The schema (``schema.py``) declares what a user may set; this is the one place that
turns those settings into what the runtime asks Ray for.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .schema import PoolConfig, RayConfig


@dataclass(frozen=True)
class Pool:
    """A stage's resolved actor resources (see :func:`stage_pool`)."""

    num_cpus: float
    num_gpus: float
    min_actors: int
    max_actors: int
    torch_threads: int


def stage_pool(rc: RayConfig, stage: str) -> Pool:
    """``ray.<stage>`` with unset values taken from the ``ray.actor_*`` defaults."""
    o: PoolConfig = getattr(rc, stage)

    def pick(v: Any, default: Any) -> Any:
        return default if v is None else v

    cpus = float(pick(o.num_cpus, rc.actor_num_cpus))
    threads = int(pick(o.torch_threads, rc.torch_threads))
    # faiss-cpu searches on CPU: the search actors take a GPU only when told to.
    gpus = float(pick(o.num_gpus, 0.0 if stage == "search" else rc.actor_num_gpus))
    return Pool(num_cpus=cpus, num_gpus=gpus, min_actors=int(pick(o.min_actors, rc.min_actors)),
                max_actors=int(pick(o.max_actors, rc.max_actors)), torch_threads=threads if threads > 0 else max(1, int(cpus)))
