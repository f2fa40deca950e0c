"""The Ray cluster this process runs on, as one object: starting or joining it, its model hosts, waits, stopping.

``ray.address: local`` starts a private cluster in this process (a
:class:`Cluster` with ``local=True``): its size is fixed, it owns the model
hosts that run CPU stages, and it is stopped at exit with its autoscaler
monitor first.  Any other address joins an existing cluster, which may
autoscale.  Either way every wait on the cluster goes through
:meth:`Cluster.get` / :meth:`Cluster.wait`, which give up with a one-line
:class:`ClusterError` naming what they waited for when nothing finished for
``wait_timeout_s`` seconds, instead of hanging.
"""

from __future__ import annotations

import atexit
import logging
import os
import time
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

from ..config import RayConfig
from ..errors import UserError
from .hosts import ModelHost
from .remote import remote_class

# Seconds a wait may see nothing finish before it gives up (a cluster that cannot
# schedule the work, or a stuck worker).  Generous: one unit of a large model on CPU
# takes minutes.  Per cluster object: Cluster.wait_timeout_s.
WAIT_TIMEOUT_S = 1800.0

# ray.init on a loaded machine gives up after 30 s ("The current node timed out during
# startup"): tried this many times in all, waiting START_BACKOFF_S, doubling, in between.
START_TRIES = 3
START_BACKOFF_S = 5.0
STARTUP_TIMEOUT = "timed out during startup"


class ClusterError(UserError):
    """Ray could not start, or the cluster cannot schedule or finish what the job asks of it."""


def backoff(tries: int, first: float, factor: float = 2.0) -> List[float]:
    """Seconds to wait before each retry of ``tries`` attempts: ``first``, then ``factor`` times the last."""
    return [first * factor ** i for i in range(max(0, tries - 1))]


def start_ray(tries: int = START_TRIES, first_wait: float = START_BACKOFF_S, sleep: Callable[[float], None] = time.sleep,
              **init_kwargs: Any) -> None:
    """``ray.init(**init_kwargs)``, tried again after a startup timeout; a :class:`ClusterError` when every try timed out."""
    import ray

    waits = backoff(tries, first_wait)
    for attempt in range(tries):
        before = _child_pids()
        try:
            ray.init(**init_kwargs)
            return
        except Exception as e:
            if STARTUP_TIMEOUT not in str(e):
                raise
            # What this try started (GCS, raylet) would go on loading the machine.
            ray.shutdown()
            _end_processes(_child_pids() - before)
            if attempt < len(waits):
                logging.getLogger(__name__).warning("Ray %s (try %d of %d); trying again in %.0f s", STARTUP_TIMEOUT, attempt + 1, tries, waits[attempt])
                sleep(waits[attempt])
    raise ClusterError(f"Ray did not start: its node {STARTUP_TIMEOUT} {tries} times; this machine is overloaded: "
                       f"wait for other jobs to finish (or stop them) and rerun, or lower ray.num_cpus")


def _child_pids() -> set:
    import psutil

    try:
        return {p.pid for p in psutil.Process().children(recursive=True)}
    except psutil.Error:
        return set()


def _end_processes(pids: set) -> None:
    import psutil

    procs = []
    for pid in pids:
        try:
            p = psutil.Process(pid)
            p.terminate()
            procs.append(p)
        except psutil.Error:
            pass
    _, alive = psutil.wait_procs(procs, timeout=3)
    for p in alive:
        try:
            p.kill()
        except psutil.Error:
            pass


class Cluster:
    """The Ray cluster of this process: the private local one it started, or one it joined."""

    def __init__(self, local: bool, node_id: Optional[str] = None, wait_timeout_s: float = WAIT_TIMEOUT_S):
        self.local = local
        self.node_id = node_id  # the local cluster's node (None when joined)
        self.wait_timeout_s = wait_timeout_s
        # Long-lived actors per class (model hosts, search actors): see kept_actors.
        self.kept: Dict[type, List[Any]] = {}

    @classmethod
    def start(cls, rc: RayConfig) -> "Cluster":
        """Start (address="local") or join the cluster of ``rc``; a local one starts its model hosts when first asked."""
        import ray

        if rc.address == "local":
            # A private in-process cluster: no token auth needed on loopback.
            os.environ.setdefault("RAY_AUTH_MODE", "disabled")
            # Ray Train's preemption watcher is an actor per training run that polls for nodes being
            # drained: a private single-node cluster is never drained, and the actor's start costs
            # ~1.8 CPU-s a run.  (Its processes inherit this environment; set before Ray starts.)
            os.environ.setdefault("RAY_TRAIN_ENABLE_PREEMPTION_WATCHER", "0")
            start_ray(address="local", num_cpus=rc.num_cpus, include_dashboard=False, logging_level=logging.WARNING)
            # Its model hosts start when a stage first asks for them, not here: a run whose model stages
            # are all reused (a resumed or repeated run, an evaluation-only change) never imports torch
            # (~4 CPU-s and ~300 MB a host); a fresh run loses only the overlap with its benchmark stage.
            cluster = cls(local=True, node_id=ray.get_runtime_context().get_node_id(), wait_timeout_s=rc.wait_timeout_s)
        else:
            start_ray(address=rc.address, logging_level=logging.WARNING)
            cluster = cls(local=False, wait_timeout_s=rc.wait_timeout_s)
        return cluster

    def fixed(self) -> bool:
        """Whether the cluster's resources are all it will ever have: the local one, while this process runs it
        (a joined cluster may autoscale)."""
        import ray

        return self.local and ray.is_initialized() and ray.get_runtime_context().get_node_id() == self.node_id

    def serves_on_hosts(self, num_gpus: float) -> bool:
        """Whether a pool asking ``num_gpus`` runs on the model hosts: CPU pools on the local cluster."""
        return num_gpus == 0 and self.fixed()

    def kept_actors(self, cls: type, n: int) -> Tuple[List[Any], List[Any]]:
        """The first ``n`` of this cluster's long-lived actors of ``cls``, and those of them started by this call.

        They live as long as the local cluster and serve one stage after another (a
        fresh actor per stage and run costs a process start and its imports), so they
        take no logical CPUs: the driver gives them one stage's work at a time and never
        uses more than that stage's pool allows, so idle they hold no CPUs that other
        stages' tasks wait for.
        """
        have = self.kept.setdefault(cls, [])
        new: List[Any] = []
        if len(have) < n:
            remote = remote_class(cls, num_cpus=0)
            new = [remote.remote() for _ in range(n - len(have))]
            have += new
        return have[:n], new

    def forget(self, cls: type) -> None:
        """An actor of ``cls`` died (e.g. out of memory): later stages start fresh ones."""
        self.kept.pop(cls, None)

    @property
    def hosts(self) -> List[Any]:
        """The model hosts started so far."""
        return self.kept.get(ModelHost, [])

    def model_hosts(self, n: int) -> List[Any]:
        """The first ``n`` model hosts, starting (and warming) any missing."""
        hosts, new = self.kept_actors(ModelHost, n)
        for h in new:
            h.warm.remote()  # queued: runs while the driver goes on
        return hosts

    def forget_hosts(self) -> None:
        """A host died (e.g. out of memory): later stages start fresh ones."""
        self.forget(ModelHost)

    def release_hosts(self) -> None:
        """Every host drops its stage's model (not awaited)."""
        for h in self.hosts:
            h.release.remote()

    def wait_for_hosts(self) -> None:
        """Block until every model host has finished warming (its imports take CPU:
        a benchmark that times something else waits for them first)."""
        self.get([h.release.remote() for h in self.hosts], "the model hosts to import torch and transformers")  # queued behind warm()

    def wait(self, refs: Sequence[Any], what: str, num_returns: int = 1) -> Tuple[List[Any], List[Any]]:
        """``ray.wait`` for ``num_returns`` of ``refs``; a :class:`ClusterError` naming ``what`` if none finishes in ``wait_timeout_s``."""
        import ray

        done, pending = ray.wait(list(refs), num_returns=num_returns, timeout=self.wait_timeout_s)
        if not done:
            raise self.timed_out(what)
        return done, pending

    def get(self, refs: Sequence[Any], what: str) -> List[Any]:
        """``ray.get(refs)``, giving up (a :class:`ClusterError` naming ``what``) once nothing finished for ``wait_timeout_s``."""
        import ray

        pending = list(dict.fromkeys(refs))  # ray.wait refuses a ref twice
        while pending:
            done, pending = ray.wait(pending, num_returns=len(pending), timeout=self.wait_timeout_s)
            if not done:
                raise self.timed_out(what)
        return ray.get(list(refs))

    def timed_out(self, what: str) -> ClusterError:
        return ClusterError(f"waited {self.wait_timeout_s:g} s for {what} and nothing finished: the cluster cannot schedule it "
                            f"(see `ray status`) or a worker is stuck (see the Ray logs)")

    def stop(self) -> None:
        """Stop the local cluster (at exit), its autoscaler monitor first.

        ``ray.shutdown`` stops the GCS before the monitor, which then keeps calling
        the dead GCS until it is killed a second later: measured 1.2-1.4 s of a
        shutdown that takes 0.2 s in this order.  The monitor is reached through
        Ray's private node object (Ray is pinned): if that ever moves, the plain
        shutdown still runs.
        """
        import ray

        if not self.local or not ray.is_initialized():
            return
        try:
            from ray._private import worker

            worker._global_node.kill_monitor(check_alive=False)
        except Exception:  # an attribute moved or the process is gone: nothing lost but a second
            pass
        ray.shutdown()
        self.kept = {}


# The one registry: the cluster of this process (None before init_ray), and whether
# the exit hook that stops a local one is registered.
_REGISTRY: Dict[str, Any] = {"cluster": None, "atexit": False}


def init_ray(rc: RayConfig) -> None:
    """Start (address="local") or join a Ray cluster once per process (a no-op while Ray runs).

    A local cluster also starts its model hosts (CPU-only stages), which import
    torch and transformers in the background.
    """
    import ray

    if ray.is_initialized():
        return
    cluster = Cluster.start(rc)
    _REGISTRY["cluster"] = cluster
    if cluster.local and not _REGISTRY["atexit"]:
        atexit.register(stop_local_cluster)  # runs before Ray's own (registered earlier)
        _REGISTRY["atexit"] = True
    from ray.data import DataContext

    ctx = DataContext.get_current()
    ctx.enable_progress_bars = rc.progress


def current() -> Cluster:
    """The cluster this process runs on: the one :func:`init_ray` started or joined, else (Ray initialised by
    someone else, e.g. a job's own ``ray.init``) a joined cluster with the default timeouts."""
    cluster = _REGISTRY["cluster"]
    if cluster is None:
        cluster = _REGISTRY["cluster"] = Cluster(local=False)
    return cluster


def stop_local_cluster() -> None:
    """Stop the local cluster this process started, if any (see :meth:`Cluster.stop`)."""
    cluster = _REGISTRY["cluster"]
    if cluster is not None:
        cluster.stop()


def wait_for_hosts() -> None:
    """Block until the local cluster's model hosts have finished warming (see :meth:`Cluster.wait_for_hosts`)."""
    current().wait_for_hosts()


__all__ = ["WAIT_TIMEOUT_S", "START_TRIES", "ClusterError", "Cluster", "backoff", "start_ray", "init_ray", "current",
           "stop_local_cluster", "wait_for_hosts"]
