"""The Ray runtime: user errors cross every kind of worker as themselves, Ray's start is retried, nothing hangs."""

from __future__ import annotations

import importlib
import pkgutil

import pytest

import xqg_ray
from xqg_ray.config import Pool, StorageConfig, load_config
from xqg_ray.errors import CarriedUserError, UserError, carry_user_errors, user_error, user_error_class
from xqg_ray.runtime.capacity import check_schedulable, fitting, shortfalls, Demand
from xqg_ray.runtime.cluster import ClusterError, backoff, current, start_ray

SMOKE = "conf/smoke.yaml"
# Several lines, quotes and non-ASCII: the message must arrive byte for byte.
MESSAGE = 'bad value "x" in ü.yaml\n  - and a second line {"json": [1]}'


def _user_error_classes():
    """Every UserError subclass in the package (each module imported first), and UserError itself."""
    for m in pkgutil.walk_packages(xqg_ray.__path__, "xqg_ray."):
        if not m.name.endswith("__main__"):
            importlib.import_module(m.name)

    def walk(cls):
        for sub in cls.__subclasses__():
            yield sub
            yield from walk(sub)

    found = {c for c in walk(UserError) if c.__module__.startswith("xqg_ray.")}
    return [UserError] + sorted(found, key=lambda c: f"{c.__module__}:{c.__qualname__}")


CLASSES = _user_error_classes()
KINDS = [f"{c.__module__}:{c.__qualname__}" for c in CLASSES]


def test_the_discovery_finds_the_package_classes():
    assert {"xqg_ray.config.schema:ConfigError", "xqg_ray.evaluation.perturb:PerturbError", "xqg_ray.ingest.sources:CorpusError",
            "xqg_ray.store.integrity:IntegrityError", "xqg_ray.benchmark.common:BenchmarkError",
            "xqg_ray.runtime.cluster:ClusterError"} <= set(KINDS)


def _raise(kind: str, message: str):
    raise user_error_class(kind)(message)


def _assert_same(exc: BaseException, cls: type) -> None:
    found = user_error(exc)
    assert type(found) is cls and str(found) == MESSAGE


@pytest.mark.parametrize("cls", CLASSES, ids=KINDS)
def test_carried_error_decodes_from_the_object_and_from_traceback_text(cls):
    with pytest.raises(CarriedUserError) as info:
        carry_user_errors(_raise)(f"{cls.__module__}:{cls.__qualname__}", MESSAGE)
    _assert_same(info.value, cls)
    # Only a traceback's text survived (as in an actor's death message): the same error.
    _assert_same(RuntimeError(f"Traceback ...\nxqg_ray.errors.CarriedUserError: {info.value}\n"), cls)


def test_only_user_errors_of_the_package_are_rebuilt():
    assert user_error_class("os:system") is UserError  # never imported
    assert user_error_class("xqg_ray.errors:CarriedUserError") is UserError  # not a UserError
    assert user_error_class("xqg_ray.nowhere:Gone") is UserError
    assert user_error(RuntimeError("no carried error here")) is None


STARTUP = "The current node timed out during startup. This could happen because some of the raylet failed to startup."


class FakeInit:
    """``ray.init`` that times out ``fails`` times (None: always), then succeeds."""

    def __init__(self, fails):
        self.fails, self.calls = fails, []

    def __call__(self, **kw):
        self.calls.append(kw)
        if self.fails is None or len(self.calls) <= self.fails:
            raise Exception(STARTUP)


@pytest.fixture
def fake_ray_start(monkeypatch):
    """No real Ray: ``ray.init`` faked by the test, ``ray.shutdown`` and the cleanup of a failed start's processes inert."""
    import psutil
    import ray

    monkeypatch.setattr(ray, "shutdown", lambda: None)
    monkeypatch.setattr(psutil.Process, "children", lambda self, recursive=False: [])

    def use(init):
        monkeypatch.setattr(ray, "init", init)
        return init

    return use


def test_ray_start_is_retried_after_a_startup_timeout(fake_ray_start):
    init, slept = fake_ray_start(FakeInit(fails=2)), []
    start_ray(sleep=slept.append, address="local", num_cpus=2)
    assert init.calls == [{"address": "local", "num_cpus": 2}] * 3
    assert slept == [5.0, 10.0] == backoff(3, 5.0)


def test_ray_start_gives_up_with_one_line(fake_ray_start):
    init, slept = fake_ray_start(FakeInit(fails=None)), []
    with pytest.raises(ClusterError) as info:
        start_ray(sleep=slept.append, address="local")
    assert len(init.calls) == 3 and slept == [5.0, 10.0]
    assert str(info.value) == ("Ray did not start: its node timed out during startup 3 times; this machine is overloaded: "
                               "wait for other jobs to finish (or stop them) and rerun, or lower ray.num_cpus")


def test_other_start_errors_are_not_retried(fake_ray_start):
    def init(**kw):
        raise ConnectionError("no cluster at 10.0.0.1:6379")

    fake_ray_start(init)
    with pytest.raises(ConnectionError):
        start_ray(sleep=pytest.fail, address="10.0.0.1:6379")


def test_fitting_counts_bundles_per_node():
    nodes = [{"CPU": 4.0, "GPU": 0.0}, {"CPU": 3.0, "GPU": 2.0}]
    assert fitting(nodes, 1.0, 0.0) == 7
    assert fitting(nodes, 0.5, 0.0) == 14
    assert fitting(nodes, 2.0, 0.0) == 3  # 2 + 1: a bundle never spans nodes
    assert fitting(nodes, 1.0, 1.0) == 2
    assert fitting(nodes, 1.0, 0.5) == 3
    assert fitting(nodes, 0.0, 0.0) == float("inf")


def test_check_schedulable_refuses_more_shards_than_cpus():
    one_node = [{"CPU": 4.0, "GPU": 0.0}]
    check_schedulable(load_config(SMOKE, ["index.num_shards=4"]), nodes=one_node)
    with pytest.raises(ClusterError) as info:
        check_schedulable(load_config(SMOKE, ["index.num_shards=5", "corpus.num_partitions=8"]), nodes=one_node)
    assert str(info.value) == ("cannot schedule 5 search actors (one per index shard), 1 CPU each, on this cluster "
                               "(1 node, 4 CPUs, 0 GPUs: 4 fit): change index.num_shards, ray.search.max_actors or ray.search.num_cpus/num_gpus "
                               "(or give the cluster more)")
    # 8 shards on 4 search actors (two shards each) fit; on 5 they do not
    check_schedulable(load_config(SMOKE, ["index.num_shards=8", "corpus.num_partitions=8", "ray.search.max_actors=4"]), nodes=one_node)
    with pytest.raises(ClusterError) as info:
        check_schedulable(load_config(SMOKE, ["index.num_shards=8", "corpus.num_partitions=8", "ray.search.max_actors=5"]), nodes=one_node)
    assert str(info.value).startswith("cannot schedule 5 search actors (ray.search.max_actors, for 8 index shards), 1 CPU each")


def test_check_schedulable_names_gpu_pools_without_gpus():
    cfg = load_config(SMOKE, ["ray.actor_num_gpus=1", "ray.min_actors=2", "ray.max_actors=2"])
    assert shortfalls([Demand("x", 1, 1.0, 0.0, "y")], [{"CPU": 1.0}]) == []
    with pytest.raises(ClusterError) as info:
        check_schedulable(cfg, nodes=[{"CPU": 4.0, "GPU": 0.0}])
    assert str(info.value) == (
        "cannot schedule 2 generate actors (ray.generate.min_actors), 1 CPU + 1 GPU each, on this cluster (1 node, 4 CPUs, 0 GPUs: 0 fit): "
        "change ray.generate.min_actors or ray.generate.num_cpus/num_gpus (or ray.actor_*); "
        "cannot schedule 2 encode actors (ray.encode.min_actors), 1 CPU + 1 GPU each, on this cluster (1 node, 4 CPUs, 0 GPUs: 0 fit): "
        "change ray.encode.min_actors or ray.encode.num_cpus/num_gpus (or ray.actor_*)")


# --- on the session's local cluster (4 CPUs) ---


def _raiser_class():
    """An actor class (defined here: shipped by value) raising the named user error from a method or its constructor.

    Its methods import what they use: a worker cannot import this test module.
    """

    class Raiser:
        def __init__(self, kind: str = ""):
            from xqg_ray.errors import user_error_class

            if kind:
                raise user_error_class(kind)(MESSAGE)

        def fail(self, kind: str) -> None:
            from xqg_ray.errors import user_error_class

            raise user_error_class(kind)(MESSAGE)

    return Raiser


def _unit_runner_class():
    from xqg_ray.runtime.units import UnitRunner

    class FailingUnit(UnitRunner):
        def __init__(self, kind: str):
            self.kind = kind

        def run_unit(self, unit):
            from xqg_ray.errors import user_error_class

            raise user_error_class(self.kind)(MESSAGE)

    return FailingUnit


def test_user_errors_cross_tasks_actors_and_model_hosts_as_themselves(ray_local):
    from xqg_ray.runtime.remote import remote_class
    from xqg_ray.runtime.tasks import run_model_task, run_tasks
    from xqg_ray.runtime.units import run_units

    actor = remote_class(_raiser_class(), num_cpus=0.1).remote()
    host_pool = Pool(num_cpus=1.0, num_gpus=0.0, min_actors=1, max_actors=1, torch_threads=1)
    try:
        for cls, kind in zip(CLASSES, KINDS):
            with pytest.raises(cls) as info:  # a Ray task
                run_tasks(_raise, [(kind, MESSAGE)], 0.1)
            assert type(info.value) is cls and str(info.value) == MESSAGE
            with pytest.raises(Exception) as info:  # an actor's method
                ray_local.get(actor.fail.remote(kind))
            _assert_same(info.value, cls)
            with pytest.raises(cls) as info:  # a unit on the local cluster's model host
                run_units([{"unit": 0}], _unit_runner_class(), {"kind": kind}, host_pool)
            assert type(info.value) is cls and str(info.value) == MESSAGE
            with pytest.raises(cls) as info:  # a model task called on the model host
                run_model_task(_raise, (kind, MESSAGE), host_pool)
            assert type(info.value) is cls and str(info.value) == MESSAGE
    finally:
        ray_local.kill(actor)


def test_a_user_error_in_an_actor_constructor_arrives_as_itself(ray_local):
    from xqg_ray.evaluation.perturb import PerturbError
    from xqg_ray.runtime.remote import remote_class

    actor = remote_class(_raiser_class(), num_cpus=0.1).remote("xqg_ray.evaluation.perturb:PerturbError")
    with pytest.raises(Exception) as info:
        ray_local.get(actor.fail.remote("xqg_ray.errors:UserError"))
    _assert_same(info.value, PerturbError)


def test_a_user_error_in_a_ray_data_actor_arrives_as_itself(ray_local):
    from xqg_ray.evaluation.perturb import PerturbError
    from xqg_ray.runtime.units import on_ray_data

    pool = Pool(num_cpus=0.5, num_gpus=0.0, min_actors=1, max_actors=1, torch_threads=1)
    with pytest.raises(Exception) as info:
        list(on_ray_data(['{"unit": 0}'], _unit_runner_class(), {"kind": "xqg_ray.evaluation.perturb:PerturbError"}, pool, 1))
    _assert_same(info.value, PerturbError)


def test_more_search_actors_than_cpus_are_refused_before_starting(ray_local, tmp_path):
    from xqg_ray.stages.search import start_searchers

    pool = Pool(num_cpus=1.0, num_gpus=0.0, min_actors=1, max_actors=1, torch_threads=1)
    with pytest.raises(ClusterError) as info:
        start_searchers(str(tmp_path), StorageConfig(), {}, 5, pool)
    assert str(info.value).startswith("cannot schedule 5 search actors (one per index shard), 1 CPU each, on this cluster (1 node, 4 CPUs, 0 GPUs: 4 fit)")


def test_a_wait_that_cannot_finish_times_out_naming_what_it_waited_for(ray_local):
    cluster = current()
    task = ray_local.remote(num_cpus=64)(lambda: 1)  # more CPUs than the cluster has: never scheduled
    ref, saved = task.remote(), cluster.wait_timeout_s
    cluster.wait_timeout_s = 0.5
    try:
        with pytest.raises(ClusterError) as info:
            cluster.get([ref], "one 64-CPU task")
        assert str(info.value) == ("waited 0.5 s for one 64-CPU task and nothing finished: the cluster cannot schedule it "
                                   "(see `ray status`) or a worker is stuck (see the Ray logs)")
    finally:
        cluster.wait_timeout_s = saved
        ray_local.cancel(ref, force=True)


def test_tasks_and_ray_data_pools_no_node_holds_are_refused_at_once(ray_local):
    from xqg_ray.runtime.tasks import run_tasks
    from xqg_ray.runtime.units import on_ray_data

    with pytest.raises(ClusterError) as info:
        run_tasks(_raise, [("xqg_ray.errors:UserError", MESSAGE)], 64)
    assert str(info.value) == ("cannot schedule a _raise task, 64 CPU each, on this cluster (1 node, 4 CPUs, 0 GPUs: 0 fit): "
                               "change ray.actor_num_cpus")
    big = Pool(num_cpus=8.0, num_gpus=0.0, min_actors=2, max_actors=2, torch_threads=1)
    with pytest.raises(ClusterError) as info:
        list(on_ray_data(['{"unit": 0}', '{"unit": 1}'], _unit_runner_class(), {"kind": "xqg_ray.errors:UserError"}, big, 2))
    assert str(info.value) == ("cannot schedule 2 FailingUnit actors (the stage's ray.<stage>.min_actors), 8 CPU each, on this cluster "
                               "(1 node, 4 CPUs, 0 GPUs: 0 fit): change that stage's ray.<stage>.min_actors or num_cpus/num_gpus (or ray.actor_*)")


@pytest.mark.parametrize("guard", ["before any work", "at search"])
def test_the_job_with_more_shards_than_cpus_stops_with_one_line(guard, ray_local, tmp_path, shared_datasets, tiny_models, monkeypatch):
    """Through the library (``pipeline.run``): refused before any work by the driver's check; and, with that
    check bypassed, the search stage still refuses before starting any actor, instead of waiting forever
    for the fifth."""
    from xqg_ray import flows
    from xqg_ray.pipeline import run

    if guard == "at search":
        monkeypatch.setattr(flows, "check_schedulable", lambda cfg: None)
    out = tmp_path / "run"
    cfg = load_config(SMOKE, ["index.num_shards=5", "corpus.num_partitions=8", f"output_dir={out}", f"benchmark.source={shared_datasets}"])
    with pytest.raises(ClusterError) as info:
        run(cfg)
    assert str(info.value).startswith("cannot schedule 5 search actors (one per index shard), 1 CPU each, on this cluster (1 node, 4 CPUs")
    assert (out / "index").is_dir() == (guard == "at search")  # only the bypassed check gets as far as search
    assert not (out / "benchmark").exists() or guard == "at search"
    assert not (out / "runs").exists()
