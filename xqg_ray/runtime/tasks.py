"""Ray tasks: one function over a list of arguments, results in order, user errors as themselves, no silent hang."""

from __future__ import annotations

from typing import Any, Callable, List

from ..errors import reraise_user_error
from .capacity import Demand, require
from .cluster import current
from .remote import remote_function


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


__all__ = ["run_tasks"]
