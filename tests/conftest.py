"""Shared fixtures: one local Ray cluster per session, tiny models, the datasets path; xdist's unit of work."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("RAY_ENABLE_UV_RUN_RUNTIME_ENV", "0")
# Each pytest worker keeps one Ray cluster for the whole session and runs dozens of pipelines on it.  Ray
# ends an idle worker after 1 s once more than num_cpus workers exist (the model hosts count), so every
# run's small tasks (hashing, reducing partitions, building shards) started fresh workers, ~1 CPU-s each:
# kept for a minute instead, the runs of one test file reuse them (tests/test_recovery.py +
# test_integrity.py: 68.4 CPU-s instead of 75.9, 6 worker starts instead of 12).  Not for longer: an idle
# worker still costs ~0.6% of a core (its main thread wakes every 10 ms to check for signals), and a
# session cluster kept 7-9 of them through the files that never use Ray.  A single `xqg-ray run` gains
# nothing from it (31.5 CPU-s either way), so the job itself does not set it.
os.environ.setdefault("RAY_num_workers_soft_limit", "1")
os.environ.setdefault("RAY_idle_worker_killing_time_threshold_ms", "60000")
# Ray's own pollers, in every test cluster: the log monitor lists the logs directory ten times a second
# (once per 0.5 s with this), and the dashboard agent gathers every process's stats every 5 s (once a
# minute with this; nothing in the tests reads them).  An idle session cluster after two smoke runs,
# 40 s: log monitor 1.40 -> 0.87% of a core, dashboard agent 1.20 -> 0.80%.
os.environ.setdefault("RAY_LOG_MONITOR_MANY_FILES_THRESHOLD", "0")
os.environ.setdefault("REPORTER_UPDATE_INTERVAL_MS", "60000")
# A raylet starts idle workers for the first driver before it asks for any: most of the suite's ~15 clusters
# are short-lived (a subprocess driver's, a bench script's, a Ray head's), and a whole-suite run had 17
# workers that never ran anything (13.1 CPU-s).  Started on demand instead: bench/scale.py --tiny (two
# clusters) 60.2 and 61.2 -> 56.3 CPU-s.  Subprocess drivers and `ray start` heads inherit it.
os.environ.setdefault("RAY_prestart_worker_first_driver", "0")

REPO = Path(__file__).resolve().parents[1]


def datasets_dir() -> Path:
    return Path(os.environ.get("XQG_SHARED_DATASETS", REPO.parent / "shared" / "datasets"))


@pytest.fixture(scope="session")
def shared_datasets() -> Path:
    d = datasets_dir()
    if not (d / "xquad" / "xquad.en.json").exists():
        pytest.skip(f"shared datasets not found at {d} (set XQG_SHARED_DATASETS)")
    return d


@pytest.fixture(scope="session")
def tiny_models() -> dict:
    """Paths of tiny random encoder / seq2seq / causal models, built once per session."""
    from xqg_ray.models.loading import resolve_model
    from xqg_ray.models.tiny import TINY

    # The same cache the pipeline's `tiny:` specs resolve to, so it is built once.
    return {name: resolve_model(f"tiny:{name}").path for name in TINY}


@pytest.fixture(scope="session")
def ray_local():
    """One in-process Ray cluster for the whole session (~5 s to start)."""
    import ray

    from xqg_ray.config import RayConfig
    from xqg_ray.pipeline import init_ray

    init_ray(RayConfig(address="local", num_cpus=4))
    yield ray
    ray.shutdown()


S3_BUCKETS = ("xqg-test", "xqg-ingest")


@pytest.fixture(scope="session")
def s3_endpoint():
    """An S3-compatible moto server on 127.0.0.1 for the session (buckets in S3_BUCKETS), stopped after."""
    import socket

    boto3 = pytest.importorskip("boto3")
    from moto import backends
    from moto.server import ThreadedMotoServer

    # moto's server lists its own package directory (~170 stat calls) on every request to find the service
    # by host name: a third of its CPU in the whole suite (py-spy: 474 of ~1,100 samples of the moto app,
    # about 9 CPU-s).  The listing cannot change while the server runs, so read it once.
    names = tuple(backends.list_of_moto_modules())
    backends.list_of_moto_modules = lambda: names

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    client = boto3.client("s3", endpoint_url=endpoint, aws_access_key_id="testing", aws_secret_access_key="testing", region_name="us-east-1")
    for bucket in S3_BUCKETS:
        client.create_bucket(Bucket=bucket)
    yield endpoint
    server.stop()


@pytest.fixture(scope="session")
def versions(tmp_path_factory, shared_datasets, tiny_models):
    """Two versions of a small files-kind corpus and its questions (see corpus_versions)."""
    from corpus_versions import write_queries, write_version

    root = tmp_path_factory.mktemp("versions")
    write_version(shared_datasets, root / "v1", 1)
    write_version(shared_datasets, root / "v2", 2)
    return {"root": root, "v1": root / "v1", "v2": root / "v2", "queries": write_queries(shared_datasets, root / "queries.parquet")}


@pytest.fixture(scope="session")
def ref_v1(versions, ray_local):
    """conf/smoke.yaml built from scratch on version 1, read only: the uninterrupted run that every killed and
    resumed run of it equals, and the outputs an update to version 2 starts from (copied first).
    Returns (output dir, metrics)."""
    from corpus_versions import files_overrides
    from xqg_ray.config import load_config
    from xqg_ray.pipeline import run

    out = versions["root"] / "ref_v1"
    return out, run(load_config(str(REPO / "conf" / "smoke.yaml"), files_overrides(versions["v1"], versions["queries"], out)))


@pytest.fixture(scope="session")
def scratch_v2(versions, ray_local):
    """conf/smoke.yaml built from scratch on version 2: what every incremental update must equal."""
    from corpus_versions import files_overrides
    from xqg_ray.config import load_config
    from xqg_ray.pipeline import run

    out = versions["root"] / "scratch_v2"
    return out, run(load_config(str(REPO / "conf" / "smoke.yaml"), files_overrides(versions["v2"], versions["queries"], out)))



@pytest.fixture(scope="session")
def smoke_run(tmp_path_factory, ray_local, shared_datasets, tiny_models):
    """conf/smoke.yaml as shipped (the XQuAD slice) built once: (output dir, metrics).  Its users copy it before
    changing anything, or rerun it unchanged (every stage reused, the same outputs)."""
    from xqg_ray.config import load_config
    from xqg_ray.pipeline import run

    out = tmp_path_factory.mktemp("smoke") / "run"
    return out, run(load_config(str(REPO / "conf" / "smoke.yaml"), [f"output_dir={out}", f"benchmark.source={shared_datasets}", "ray.progress=false"]))


# Test files whose session fixtures build the same runs (ref_v1, scratch_v2; smoke_run: a smoke run each) run
# in one xdist worker together, so that each run is built once; every other file is a unit of its own
# (`make test`: --dist loadfile, whole files per worker, so a module fixture is never built twice).
SHARED_FILES = {**{name: "corpus_versions" for name in ("test_kill_points.py", "test_incremental.py", "test_s3.py", "test_delta_segments.py")},
                **{name: "smoke_run" for name in ("test_pipeline.py", "test_recovery.py")}}


# The files that take longest (seconds of a `make test`, --durations, 2026-12-03), heaviest first.  xdist
# hands out files by number of tests, most first, so these one-to-three-test files went last and one worker
# ran them alone while the other sat idle; handed out first (longest processing time first), the short files
# fill in around them and both workers finish together.
HEAVY_FIRST = (
    "test_kill_points.py", "test_incremental.py", "test_s3.py", "test_delta_segments.py",  # one unit (SHARED_FILES): ~550 s
    # The autoscaling test mostly waits (nodes added, then released after their idle timeout): first on the
    # other worker, so that the bench scripts (two processes at a time) fill the cores after it, beside the
    # corpus_versions unit.  A measured run: 669.5 -> 649.9 s (tests/test_bench_scripts.py right after it).
    "test_autoscaling.py",
    "test_bench_scripts.py",  # ~150 s, two scripts at a time
    "test_job_submit.py", "test_training.py", "test_train_stage.py",
    "test_kept_systems.py", "test_dev_split.py", "test_bundled_models.py", "test_integrity.py", "test_proportional.py",
    "test_experiments.py",
)


def pytest_collection_modifyitems(config, items):
    """Items of the HEAVY_FIRST files first, in that order (a stable sort: each file's items stay together and
    in order, and the other files keep theirs)."""
    rank = {name: i for i, name in enumerate(HEAVY_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config, log):
    """--dist loadfile with the files of SHARED_FILES as one unit, handed out in collection order (HEAVY_FIRST).
    (xdist's own loadgroup marks do not reach its scheduler under pytest 9: it renames ``item._nodeid``,
    which pytest 9 no longer reads.)"""
    if config.getvalue("dist") != "loadfile":
        return None
    from xdist.scheduler import LoadFileScheduling

    config.option.loadscopereorder = False  # keep the collection order: heaviest first, not most tests first

    class SharedFileScheduling(LoadFileScheduling):
        def _split_scope(self, nodeid: str) -> str:
            path = super()._split_scope(nodeid)
            return SHARED_FILES.get(Path(path).name, path)

    return SharedFileScheduling(config, log)
