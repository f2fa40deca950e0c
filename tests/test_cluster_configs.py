"""The files users run on clusters: the production config, the cluster launcher file,
the KubeRay RayJob manifest and the submit script.  No cloud access: the launcher file
goes through Ray's own prepare_config + validate_config, the RayJob through the KubeRay
CRD's OpenAPI schema (tests/data/kuberay/), and all of them are checked against the
project (Ray version, entry point, config names, dependencies, no credentials)."""

from __future__ import annotations

import copy
import gzip
import hashlib
import re
import shlex
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pyarrow as pa
import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
CLUSTER = REPO / "cluster"
CRD = REPO / "tests" / "data" / "kuberay" / "ray.io_rayjobs.yaml.gz"
CRD_SHA256 = "01a5cf3b17c1769fda44af7e82debcd98722f0c27b9ab84d084681c6649121f5"  # KubeRay v1.7.0
BUCKET = "s3://your-bucket/"


def _pyproject_deps() -> list:
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        import tomli as tomllib
    return tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]


def _ray_pin() -> str:
    (ray,) = [d for d in _pyproject_deps() if d.startswith("ray[")]
    m = re.fullmatch(r"ray\[[a-z,]+\]==(\d+\.\d+\.\d+)", ray.split("#")[0].strip())
    assert m, ray
    return m.group(1)


def _other_deps() -> list:
    """The project's dependencies besides Ray, as written in pyproject.toml."""
    return [d.split("#")[0].strip() for d in _pyproject_deps() if not d.startswith("ray[")]


def _load(name: str) -> dict:
    return yaml.safe_load((CLUSTER / name).read_text())


# -- the production config ---------------------------------------------------------


def test_xor_tydi_config_is_the_papers_setting():
    from xqg_ray.config import load_config

    cfg = load_config(str(REPO / "conf" / "xor-tydi.yaml"))  # validates; downloads nothing
    assert cfg.benchmark.kind == "xor-tydi"
    assert cfg.benchmark.corpus == BUCKET + "xor-tydi/enwiki_20190201_w100.tsv"
    assert cfg.benchmark.queries == BUCKET + "xor-tydi/xor_dev_retrieve_eng_span_v1_1.jsonl"
    assert cfg.output_dir.startswith(BUCKET)
    (name, g), = cfg.generators.items()
    assert (g.kind, g.model) == ("seq2seq", "ielabgroup/xor-tydi-docTquery-mt5-base")
    assert g.languages == ["ar", "bn", "fi", "ja", "ko", "ru", "te"]
    assert (g.n_per_language, g.top_k, g.max_new_tokens) == (5, 10, 32)
    assert g.prompt == "Generate a {language} question for this passage: {title} {text}"
    assert (cfg.encoder.pooling, cfg.encoder.normalize) == ("cls", False)
    assert [(s.name, s.generator, s.aggregation) for s in cfg.systems] == [
        ("baseline", "", "sum"), ("xqg", name, "sum")]
    assert cfg.systems[1].alpha == 0.01
    assert (cfg.ray.address, cfg.ray.actor_num_gpus) == ("auto", 1.0)
    # Credentials come from the AWS chain / IRSA, never from the config.
    assert (cfg.storage.access_key, cfg.storage.secret_key, cfg.storage.session_token) == ("", "", "")


# -- Ray cluster launcher ---------------------------------------------------------


def test_launcher_file_passes_rays_own_validation():
    from ray.autoscaler._private.util import prepare_config, validate_config

    raw = _load("aws-gpu.yaml")
    validate_config({**raw, "cluster_synced_files": []})  # as written, before Ray fills defaults
    cfg = prepare_config(copy.deepcopy(raw))
    validate_config(cfg)
    types = cfg["available_node_types"]
    assert set(types) == {"head", "cpu_worker", "gpu_worker"}
    assert cfg["head_node_type"] == "head"
    assert types["head"]["resources"] == {"CPU": 0}  # the head runs the driver, no work
    for name, itype in (("cpu_worker", "m6i.4xlarge"), ("gpu_worker", "g5.2xlarge")):
        assert types[name]["min_workers"] == 0 and types[name]["max_workers"] > 0
        assert types[name]["node_config"]["InstanceType"] == itype
    assert types["gpu_worker"]["node_config"]["InstanceMarketOptions"] == {"MarketType": "spot"}
    assert "InstanceMarketOptions" not in types["cpu_worker"]["node_config"]


def test_launcher_file_matches_the_project():
    from xqg_ray.config import load_config

    raw = _load("aws-gpu.yaml")
    ver = _ray_pin()
    docker = raw["docker"]
    images = [docker["image"], docker["head_image"]] + [
        t["docker"]["worker_image"] for t in raw["available_node_types"].values() if "docker" in t]
    assert images and all(re.fullmatch(rf"rayproject/ray:{re.escape(ver)}-py3\d+(-gpu)?", i) for i in images)
    assert raw["available_node_types"]["gpu_worker"]["docker"]["worker_image"].endswith("-gpu")
    # setup_commands install exactly pyproject's other dependencies (quoted as written).
    (setup,) = raw["setup_commands"]
    assert shlex.split(setup)[:4] == ["python", "-m", "pip", "install"]
    assert [a for a in shlex.split(setup)[4:] if not a.startswith("-")] == _other_deps()
    # Shared memory and the object store are sized on every node.
    assert any(o.startswith("--shm-size=") for o in docker["head_run_options"])
    for name in ("cpu_worker", "gpu_worker"):
        assert any(o.startswith("--shm-size=") for o in raw["available_node_types"][name]["docker"]["worker_run_options"])
    for key in ("head_start_ray_commands", "worker_start_ray_commands"):
        assert "--object-store-memory=" in raw[key][-1]
    # One GPU per actor, as many actors as GPU workers.
    cfg = load_config(str(REPO / "conf" / "xor-tydi.yaml"))
    assert cfg.ray.max_actors == raw["available_node_types"]["gpu_worker"]["max_workers"]


# -- KubeRay RayJob ---------------------------------------------------------------


def _strict(schema):
    """The CRD schema as kubectl's strict field validation applies it: unknown fields are
    errors except under x-kubernetes-preserve-unknown-fields; int-or-string accepts both."""
    if isinstance(schema, list):
        return [_strict(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    s = {k: _strict(v) for k, v in schema.items()}
    if s.get("x-kubernetes-int-or-string"):
        s.pop("type", None)
        s.setdefault("anyOf", [{"type": "integer"}, {"type": "string"}])
    if ("properties" in schema and "additionalProperties" not in schema
            and not schema.get("x-kubernetes-preserve-unknown-fields")):
        s["additionalProperties"] = False
    return s


@pytest.fixture(scope="module")
def rayjob_validator():
    import jsonschema

    raw = gzip.decompress(CRD.read_bytes())
    assert hashlib.sha256(raw).hexdigest() == CRD_SHA256, "tests/data/kuberay: not the KubeRay v1.7.0 CRD"
    crd = yaml.safe_load(raw)
    assert crd["spec"]["names"]["kind"] == "RayJob"
    (v1,) = [v for v in crd["spec"]["versions"] if v["name"] == "v1"]
    assert v1["served"] and v1["storage"]
    schema = _strict(v1["schema"]["openAPIV3Schema"])
    return jsonschema.Draft7Validator(schema)


def _errors(validator, doc) -> list:
    return sorted(f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(doc))


def test_rayjob_is_valid_against_the_kuberay_crd(rayjob_validator):
    job = _load("rayjob.yaml")
    assert (job["apiVersion"], job["kind"]) == ("ray.io/v1", "RayJob")
    assert _errors(rayjob_validator, job) == []
    # The validation can fail: a misspelt field, a wrong type, a bad quantity.
    bad = copy.deepcopy(job)
    bad["spec"]["shutdownAfterJobFinish"] = True
    bad["spec"]["backoffLimit"] = "2"
    bad["spec"]["rayClusterSpec"]["workerGroupSpecs"][1]["template"]["spec"]["containers"][0]["resources"]["limits"][
        "cpu"] = 1.5
    assert _errors(rayjob_validator, bad) == sorted([
        "spec: Additional properties are not allowed ('shutdownAfterJobFinish' was unexpected)",
        "spec/backoffLimit: '2' is not of type 'integer'",
        "spec/rayClusterSpec/workerGroupSpecs/1/template/spec/containers/0/resources/limits/cpu: "
        "1.5 is not valid under any of the given schemas",
    ])


def test_rayjob_matches_the_project():
    from xqg_ray.config import load_config

    job = _load("rayjob.yaml")
    spec, rc = job["spec"], job["spec"]["rayClusterSpec"]
    ver = _ray_pin()
    assert rc["rayVersion"] == ver
    pods = [rc["headGroupSpec"]["template"]["spec"]] + [g["template"]["spec"] for g in rc["workerGroupSpecs"]]
    for pod in pods:
        for c in pod["containers"]:
            assert re.fullmatch(rf"rayproject/ray:{re.escape(ver)}-py3\d+(-gpu)?", c["image"]), c["image"]
            # Credentials: IRSA through the service account, never keys in env.
            assert not {e["name"] for e in c.get("env", [])} & {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"}
            assert any(m["mountPath"] == "/dev/shm" for m in c["volumeMounts"])
        assert pod["serviceAccountName"] == "xqg-ray"
    # Entry point: jobs/run_xqg.py with a config of this repo that loads with its overrides.
    argv = shlex.split(spec["entrypoint"])
    assert argv[:2] == ["python", "jobs/run_xqg.py"] and (REPO / argv[1]).is_file()
    assert argv[2] == "conf/xor-tydi.yaml" and "ray.address=auto" in argv[3:]
    cfg = load_config(str(REPO / argv[2]), argv[3:])
    assert cfg.output_dir.startswith(BUCKET)
    env = yaml.safe_load(spec["runtimeEnvYAML"])
    assert env["working_dir"].startswith(BUCKET) and env["working_dir"].endswith(".zip")
    assert env["pip"] == _other_deps()  # Ray itself comes with the image
    # Cluster shape: a head that runs no work, CPU and GPU groups scaling from zero.
    assert rc["enableInTreeAutoscaling"] is True
    assert rc["headGroupSpec"]["rayStartParams"]["num-cpus"] == "0"
    groups = {g["groupName"]: g for g in rc["workerGroupSpecs"]}
    assert set(groups) == {"cpu", "gpu"}
    for g in groups.values():
        assert (g["replicas"], g["minReplicas"]) == (0, 0) and g["maxReplicas"] > 0
        assert "object-store-memory" in g["rayStartParams"]
    gpu_limits = groups["gpu"]["template"]["spec"]["containers"][0]["resources"]["limits"]
    assert gpu_limits["nvidia.com/gpu"] == 1
    assert "nvidia.com/gpu" not in groups["cpu"]["template"]["spec"]["containers"][0]["resources"]["limits"]
    assert groups["gpu"]["maxReplicas"] == cfg.ray.max_actors
    assert spec["shutdownAfterJobFinishes"] is True
    assert spec["ttlSecondsAfterFinished"] > 0 and spec["backoffLimit"] >= 0


# -- submit script and docs ---------------------------------------------------------


def test_submit_script_names_existing_files():
    text = (CLUSTER / "submit.sh").read_text()
    named = set(re.findall(r"\b((?:conf|cluster|jobs)/[\w./-]+\.(?:yaml|py|sh))\b", text))
    assert {"conf/xor-tydi.yaml", "cluster/aws-gpu.yaml", "jobs/run_xqg.py"} <= named
    assert [n for n in sorted(named) if not (REPO / n).is_file()] == []
    assert subprocess.run(["bash", "-n", str(CLUSTER / "submit.sh")]).returncode == 0


def test_submit_script_refuses_a_missing_config_in_one_line():
    r = subprocess.run(["bash", str(CLUSTER / "submit.sh"), "conf/xor-tydi-gpu.yaml"], capture_output=True, text=True)
    assert r.returncode == 2
    assert r.stderr == "cluster/submit.sh: no config conf/xor-tydi-gpu.yaml (try conf/xor-tydi.yaml)\n"


def test_cluster_docs_name_existing_files():
    doc = (REPO / "docs" / "cluster.md").read_text()
    assert doc.startswith("# Run on a cluster\n")
    assert "[docs/cluster.md](docs/cluster.md)" in (REPO / "README.md").read_text()  # the guide is linked
    named = set(re.findall(r"\b((?:conf|cluster|jobs)/[\w.-]+\.(?:yaml|py|sh))\b", doc))
    assert {"conf/xor-tydi.yaml", "cluster/aws-gpu.yaml", "cluster/rayjob.yaml", "cluster/submit.sh"} <= named
    assert [n for n in sorted(named) if not (REPO / n).is_file()] == []


# -- training at XOR-TyDi scale (conf/xor-tydi-train.yaml) ----------------------------

TRAIN_CONF = REPO / "conf" / "xor-tydi-train.yaml"
# What a node of each GPU group offers Ray: the launcher's g5.2xlarge (detected from
# the instance type: 8 vCPU, 1 A10G) and the KubeRay `gpu` pod (its limits).
G5_2XLARGE = {"CPU": 8, "GPU": 1}


def _train_conf() -> dict:
    return yaml.safe_load(TRAIN_CONF.read_text())


def _training(raw: dict):
    """(settings, the entry's own keys) of the one training in ``raw``."""
    from xqg_ray.training.settings import TrainSettings, validate_settings

    (entry,) = raw["trainings"].values()
    own = {k: entry[k] for k in ("encoder", "pairs", "questions")}
    return validate_settings(TrainSettings(**{k: v for k, v in entry.items() if k not in own})), own


def test_training_config_is_xor_tydi_plus_the_trained_systems():
    base, train = yaml.safe_load((REPO / "conf" / "xor-tydi.yaml").read_text()), _train_conf()
    shared = ("benchmark", "corpus", "encoder", "generators", "index", "search", "eval", "ray", "storage")
    assert {k: train[k] for k in shared} == {k: base[k] for k in shared}
    assert set(train) == set(base) | {"trainings", "encoders"}
    assert train["output_dir"] == BUCKET + "xqg-ray/runs/xor-tydi-train" != base["output_dir"]
    assert train["systems"][:2] == base["systems"]
    assert [(s["name"], s.get("encoder", ""), s.get("generator", "")) for s in train["systems"]] == [
        ("baseline", "", ""), ("xqg", "", "mt5"), ("trained", "trained", ""), ("trained-xqg", "trained", "mt5")]
    assert train["systems"][3]["alpha"] == 0.01 and train["systems"][3]["aggregation"] == "sum"
    assert list(train["trainings"]) == ["mt5-trained"]
    # The trained encoder is the base encoder's shape with the artifact's weights.
    assert train["encoders"]["trained"] == {**base["encoder"], "model": "trained:mt5-trained"}
    # Every field of the training is a TrainSettings field or one of the entry's own three:
    # a misspelt key fails here before the schema (RunConfig.trainings) rejects it.
    s, own = _training(train)
    assert own == {"encoder": "", "pairs": "mt5", "questions": "kept"}
    assert (s.epochs, s.global_batch, s.lr, s.warmup_steps, s.temperature, s.seed) == (1, 32, 2e-5, 1000, 0.05, 0)
    assert s.max_pairs == 2_000_000  # the 2M-pair sample docs/cluster.md prices, not all 630M pairs
    assert (s.num_workers, s.use_gpu, s.cpus_per_worker, s.gpus_per_worker) == (1, True, 4, 1)
    assert (s.checkpoint_every, s.keep_checkpoints, s.torch_threads) == (2000, 2, 0)


def test_training_config_loads_through_the_schema():
    from xqg_ray.config import load_config, validate

    cfg = load_config(str(TRAIN_CONF))
    validate(cfg)
    assert list(cfg.trainings) == ["mt5-trained"]
    assert cfg.encoders["trained"].model == "trained:mt5-trained"
    assert cfg.trainings["mt5-trained"].max_pairs == 2_000_000


def test_training_fits_the_gpu_groups():
    s, _ = _training(_train_conf())
    launcher = _load("aws-gpu.yaml")["available_node_types"]["gpu_worker"]
    assert launcher["node_config"]["InstanceType"] == "g5.2xlarge"
    # Its workers run in sequence after generation, on the GPU group the pools used.
    assert s.num_workers * s.gpus_per_worker <= launcher["max_workers"] * G5_2XLARGE["GPU"]
    assert s.gpus_per_worker <= G5_2XLARGE["GPU"] and s.cpus_per_worker <= G5_2XLARGE["CPU"]
    groups = {g["groupName"]: g for g in _load("rayjob.yaml")["spec"]["rayClusterSpec"]["workerGroupSpecs"]}
    limits = groups["gpu"]["template"]["spec"]["containers"][0]["resources"]["limits"]
    assert s.num_workers * s.gpus_per_worker <= groups["gpu"]["maxReplicas"] * limits["nvidia.com/gpu"]
    assert s.gpus_per_worker <= limits["nvidia.com/gpu"] and s.cpus_per_worker <= int(limits["cpu"])


def test_training_asks_ray_train_for_gpus_nccl_and_s3_checkpoints(monkeypatch):
    """What train_encoder hands Ray Train for the XOR-TyDi training, captured before fit() (no GPU, no S3, no Ray)."""
    import ray.data
    import ray.train.torch

    from xqg_ray.config import EncoderConfig, StorageConfig
    from xqg_ray.store.storage import Storage
    from xqg_ray.training.pairs import PAIRS_SCHEMA
    from xqg_ray.training.run import checkpoints_path
    from xqg_ray.training.trainer import train_encoder

    raw = _train_conf()
    s, _ = _training(raw)
    seen = []

    class Stop(Exception):
        pass

    class FakeTrainer:
        def __init__(self, fn, **kw):
            seen.append(kw)

        def fit(self):
            raise Stop()

    monkeypatch.setattr(ray.data, "from_arrow", lambda tables: tables)
    monkeypatch.setattr(ray.train.torch, "TorchTrainer", FakeTrainer)
    n = 2 * s.global_batch
    pairs = pa.Table.from_pylist([{"id": i, "content_hash": f"h{i}", "title": "", "text": f"passage {i}", "lang": "ar",
                                   "query": f"q{i}", "qid": None, "source": "gen:mt5"} for i in range(n)], schema=PAIRS_SCHEMA)
    root = checkpoints_path(raw["output_dir"], "mt5-trained")
    assert root == BUCKET + "xqg-ray/runs/xor-tydi-train/trained/mt5-trained/checkpoints"
    storage = Storage(StorageConfig(**raw["storage"]))
    for settings in (s, replace(s, use_gpu=False)):
        with pytest.raises(Stop):
            train_encoder(pairs, EncoderConfig(**raw["encoder"]), settings, root, "key16", "/nonexistent", storage)
    gpu, cpu = seen
    assert (gpu["scaling_config"].num_workers, gpu["scaling_config"].use_gpu) == (1, True)
    assert gpu["scaling_config"].resources_per_worker == {"CPU": 4, "GPU": 1}
    assert (gpu["torch_config"].backend, cpu["torch_config"].backend) == ("nccl", "gloo")
    assert cpu["scaling_config"].resources_per_worker == {"CPU": 4}
    rc = gpu["run_config"]
    assert (rc.storage_path, rc.name) == ("your-bucket/xqg-ray/runs/xor-tydi-train/trained/mt5-trained/checkpoints", "key16")
    assert rc.storage_filesystem.region == "us-east-1" and rc.checkpoint_config.num_to_keep == 2
    # Training workers at the driver's priority, not Ray's default +15 (bench/train.py).
    assert rc.worker_runtime_env == {"env_vars": {"RAY_worker_niceness": "0"}}


def test_cluster_dependencies_cover_what_training_imports():
    """Every third-party module xqg_ray/training imports comes with the cluster's pip list (or a package it needs)."""
    import ast
    import importlib.metadata as md

    imported = set()
    for f in sorted((REPO / "xqg_ray" / "training").glob("*.py")):
        for node in ast.walk(ast.parse(f.read_text())):
            if isinstance(node, ast.Import):
                imported |= {a.name.split(".")[0] for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                imported.add(node.module.split(".")[0])
    third = sorted(m for m in imported if m not in sys.stdlib_module_names)
    assert third == ["numpy", "pyarrow", "ray", "safetensors", "torch", "transformers"]
    pip = {re.split(r"[<>=\[ ;]", d)[0].lower() for d in _other_deps()}
    transitive = {re.split(r"[<>=\[ ;(]", r)[0].lower() for p in pip for r in (md.requires(p) or []) if "extra ==" not in r}
    # ray: the images' own (rayproject/ray:2.60.0); Ray Train needs nothing of ray[train] that data/default lack here.
    assert [m for m in third if m != "ray" and m not in pip | transitive] == []
