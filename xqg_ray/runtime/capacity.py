"""What the job asks of the cluster, checked against what the cluster has, before any work starts.

Ray waits forever for an actor or task no node can hold: the search stage's
one actor per index shard, with more shards than CPUs, hung the job at search.
:func:`check_schedulable` compares every pool and task the config asks for
with the nodes of a cluster whose size is fixed (the local one) and refuses
with one line naming what cannot be scheduled and the setting to change.  A
joined cluster may autoscale, so it is not refused up front: there the waits
of :class:`~xqg_ray.runtime.cluster.Cluster` time out instead.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Dict, List, Mapping, Optional, Sequence

from ..config import Pool, RunConfig, stage_pool
from .cluster import ClusterError, current


@dataclass(frozen=True)
class Demand:
    """``count`` actors or tasks of ``cpus`` CPUs and ``gpus`` GPUs each that must run at the same time."""

    what: str  # e.g. "5 search actors (one per index shard)"
    count: int
    cpus: float
    gpus: float
    change: str  # the settings that lower it, e.g. "index.num_shards or ray.search.num_cpus"


def fitting(nodes: Sequence[Mapping[str, float]], cpus: float, gpus: float) -> float:
    """How many bundles of ``cpus`` CPUs and ``gpus`` GPUs the ``nodes`` (``{"CPU", "GPU"}`` totals) hold at once."""
    total = 0.0
    for node in nodes:
        per = math.inf
        for need, have in ((cpus, node.get("CPU", 0.0)), (gpus, node.get("GPU", 0.0))):
            if need > 0:
                per = min(per, math.floor(have / need + 1e-9))  # Ray's fractions are exact to 1e-4
        total += per
    return total


def shortfalls(demands: Sequence[Demand], nodes: Sequence[Mapping[str, float]]) -> List[str]:
    """One message per demand the ``nodes`` cannot hold (demands run one after another, each checked alone)."""
    cpus, gpus = sum(n.get("CPU", 0.0) for n in nodes), sum(n.get("GPU", 0.0) for n in nodes)
    have = f"{len(nodes)} node{'s' if len(nodes) != 1 else ''}, {cpus:g} CPUs, {gpus:g} GPUs"
    out = []
    for d in demands:
        n = fitting(nodes, d.cpus, d.gpus)
        if n < d.count:
            each = f"{d.cpus:g} CPU" + (f" + {d.gpus:g} GPU" if d.gpus else "")
            out.append(f"cannot schedule {d.what}, {each} each, on this cluster ({have}: {n:g} fit): change {d.change}")
    return out


def search_actors(num_shards: int, max_actors: Optional[int]) -> int:
    """How many search actors a run starts: one per index shard, at most ``ray.search.max_actors`` where set."""
    return num_shards if max_actors is None else max(1, min(num_shards, max_actors))


def search_demand(num_shards: int, pool: Pool, max_actors: Optional[int] = None) -> Demand:
    """The search stage: its actors (:func:`search_actors`), all alive at once."""
    n = search_actors(num_shards, max_actors)
    what = "one per index shard" if n == num_shards else f"ray.search.max_actors, for {num_shards} index shards"
    return Demand(f"{n} search actors ({what})", n, pool.num_cpus, pool.num_gpus,
                  "index.num_shards, ray.search.max_actors or ray.search.num_cpus/num_gpus (or give the cluster more)")


def run_demands(cfg: RunConfig, on_hosts: bool) -> List[Demand]:
    """Every pool and task a run of ``cfg`` starts; ``on_hosts``: CPU pools run on the local cluster's model hosts
    (which take no logical CPU)."""
    rc = cfg.ray
    out = [Demand("an index or benchmark task", 1, rc.actor_num_cpus, 0.0, "ray.actor_num_cpus")]
    stages = (["generate"] if any(g.kind != "provided" for g in cfg.generators.values()) else []) + ["encode"]
    for stage in stages:
        pool = stage_pool(rc, stage)
        if on_hosts and pool.num_gpus == 0:
            continue
        n = min(max(1, pool.min_actors), pool.max_actors)
        out.append(Demand(f"{n} {stage} actors (ray.{stage}.min_actors)", n, pool.num_cpus, pool.num_gpus,
                          f"ray.{stage}.min_actors or ray.{stage}.num_cpus/num_gpus (or ray.actor_*)"))
    out.append(search_demand(cfg.index.num_shards, stage_pool(rc, "search"), rc.search.max_actors))
    return out


def cluster_nodes() -> List[Dict[str, float]]:
    """CPU and GPU totals of the cluster's alive nodes."""
    import ray

    return [{"CPU": float(n["Resources"].get("CPU", 0.0)), "GPU": float(n["Resources"].get("GPU", 0.0))} for n in ray.nodes() if n["Alive"]]


def require(demands: Sequence[Demand], nodes: Optional[Sequence[Mapping[str, float]]] = None) -> None:
    """A :class:`ClusterError` listing the ``demands`` the cluster cannot hold; nothing on a cluster that may grow."""
    if nodes is None:
        if not current().fixed():
            return  # it may autoscale: the waits time out instead
        nodes = cluster_nodes()
    problems = shortfalls(demands, nodes)
    if problems:
        raise ClusterError("; ".join(problems))


def check_schedulable(cfg: RunConfig, nodes: Optional[Sequence[Mapping[str, float]]] = None) -> None:
    """Refuse (one-line :class:`ClusterError`) a run of ``cfg`` whose actor pools or tasks the cluster cannot schedule.

    Call it once Ray runs, before any work.  ``nodes`` (``[{"CPU", "GPU"}]``) checks against those instead of the
    cluster (and then CPU pools are assumed to run on model hosts, as on the local cluster).
    """
    on_hosts = True if nodes is not None else current().fixed()
    require(run_demands(cfg, on_hosts), nodes)


__all__ = ["Demand", "fitting", "shortfalls", "search_actors", "search_demand", "run_demands", "cluster_nodes", "require", "check_schedulable"]
