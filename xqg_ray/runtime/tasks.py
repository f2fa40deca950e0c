"""Ray tasks: one function over a list of arguments, results in order, user errors as themselves, no silent hang."""

from __future__ import annotations

from typing import Any, Callable, List

from ..errors import reraise_user_error
from .capacity import Demand, require
from .cluster import current
from .remote import by_value, remote_function


def run_tasks(fn: Callable, args_list: List[tuple], num_cpus: float) -> List[Any]:
    """``fn(*args)`` for each args tuple as Ray tasks of ``num_cpus`` CPUs; results in order.

    ``fn`` is shipped by value (a worker imports only what it uses); a user error it
    raises arrives as itself.  A task no node can hold is refused up front (on the
    local cluster), and a wait with nothing finishing for the cluster's
    ``wait_timeout_s`` ends in a :class:`~xqg_ray.runtime.cluster.ClusterError`.
    """
    # A task no node can hold would wait forever: refused on a cluster of fixed size.
    require([Demand(f"a {fn.__name__} task", 1, num_cpus, 0.0, "ray.actor_num_cpus")])
    remote = remote_function(fn, num_cpus=num_cpus)
    try:
        return current().get([remote.remote(*a) for a in args_list], f"{len(args_list)} {fn.__name__} tasks ({num_cpus:g} CPU each)")
    except Exception as e:
        reraise_user_error(e)
        raise


def run_model_task(fn: Callable, args: tuple, pool: Any) -> Any:
    """``fn(*args)`` for a function that loads a model; ``pool``: the :class:`~xqg_ray.config.pools.Pool`
    of the stage whose model it is.  On the local cluster it runs on a model host, whose torch is already
    imported; elsewhere as one task of ``pool.num_cpus`` CPUs (as :func:`run_tasks`)."""
    import ray

    cluster = current()
    if not cluster.serves_on_hosts(pool.num_gpus):
        return run_tasks(fn, [args], pool.num_cpus)[0]
    [host] = cluster.model_hosts(1)
    try:
        return cluster.get([host.call.remote(by_value(fn), args)], f"a {fn.__name__} call on a model host")[0]
    except ray.exceptions.RayActorError:
        cluster.forget_hosts()  # the host died (e.g. out of memory): later calls start a fresh one
        raise
    except Exception as e:
        reraise_user_error(e)
        raise
    finally:
        cluster.release_hosts()


__all__ = ["run_tasks", "run_model_task"]
