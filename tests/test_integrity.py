"""Every committed file is checked when read; manifests are sealed and relative; copies are independent.

Each test copies one finished smoke run, damages one file, and reruns with a
setting that makes the stage holding that file read it: the run must stop with
an IntegrityError naming exactly that file, never use different data.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest

from corpus_versions import current
from xqg_ray.cli import main
from xqg_ray.config import load_config
from xqg_ray.store.integrity import IntegrityError
from xqg_ray.pipeline import run

REPO = Path(__file__).resolve().parents[1]
SMOKE = str(REPO / "conf" / "smoke.yaml")


def _cfg(out: Path, shared: Path, *extra: str):
    cfg = load_config(SMOKE, [f"output_dir={out}", f"benchmark.source={shared}", "ray.progress=false",
                              "benchmark.corpus_limit=24", "benchmark.max_queries_per_language=6", *extra])
    cfg.systems = [s for s in cfg.systems if s.name in ("baseline", "xqg")]
    return cfg


@pytest.fixture(scope="module")
def done(tmp_path_factory, ray_local, shared_datasets, tiny_models):
    out = tmp_path_factory.mktemp("integrity") / "run"
    run(_cfg(out, shared_datasets))
    return out


def _copy(done: Path, tmp_path: Path) -> Path:
    work = tmp_path / "copy"
    shutil.copytree(done, work)
    return work


def _flip(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01  # one bit in the middle of the file
    path.write_bytes(bytes(data))


def _first(out: Path, stage: str, key: str = "units") -> Path:
    return out / current(out, stage)[key][0]["file"]


@pytest.mark.parametrize(
    "stage,key,extra",
    [
        ("corpus", None, ["generators.t5.seed=7"]),  # generation reads the corpus partitions again
        ("generated/t5", "units", ["encoder.max_passage_length=100"]),  # encoding reads the generated queries
        ("embeddings", "units", ["alpha"]),  # a new alpha rebuilds the index from the embeddings
        ("index/xqg", "shards", []),  # search reads the shards
        ("benchmark", None, []),  # the evaluated questions are read on every run
    ],
)
def test_a_flipped_bit_is_caught_with_the_file_named(done, tmp_path, shared_datasets, stage, key, extra):
    work = _copy(done, tmp_path)
    if stage == "corpus":
        snap = json.loads((work / current(work, "benchmark")["snapshot_file"]).read_text())
        target = work / snap["partitions"][0]["file"]
    elif stage == "benchmark":
        target = work / current(work, "benchmark")["files"]["queries"]["file"]
    else:
        target = _first(work, stage, key)
    _flip(target)
    cfg = _cfg(work, shared_datasets, *[e for e in extra if e != "alpha"])
    if "alpha" in extra:
        cfg.systems[1].alpha = 0.02
    with pytest.raises(IntegrityError) as e:
        run(cfg)
    msg = str(e.value)
    assert msg.startswith(f"{target} does not match its sha256") and "\n" not in msg, msg
    assert "delete it and rerun" in msg


def test_cli_prints_one_line_for_a_damaged_file(done, tmp_path, shared_datasets, capsys):
    work = _copy(done, tmp_path)
    target = _first(work, "index/xqg", "shards")
    _flip(target)
    rc = main(["run", SMOKE, f"output_dir={work}", f"benchmark.source={shared_datasets}", "ray.progress=false",
               "benchmark.corpus_limit=24", "benchmark.max_queries_per_language=6"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2
    assert err[-1] == f"xqg-ray: {target} does not match its sha256 in the index/xqg manifest: the file changed after it was committed; delete it and rerun the same command to recompute it"


def test_an_edited_manifest_is_refused(done, tmp_path, shared_datasets):
    work = _copy(done, tmp_path)
    ptr = json.loads((work / "index" / "xqg" / "current.json").read_text())
    path = work / ptr["manifest"]
    m = json.loads(path.read_text())
    m["alpha"] = 0.5  # a report would show this alpha if it were not sealed
    path.write_text(json.dumps(m))
    with pytest.raises(IntegrityError, match=f"{path} was edited after it was written"):
        run(_cfg(work, shared_datasets))


def _digests(root: Path) -> dict:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(root.rglob("*")) if p.is_file()}


def test_a_copied_output_dir_reruns_without_touching_the_original(done, tmp_path, shared_datasets):
    before = _digests(done)
    for p in done.rglob("*.json"):
        assert str(done) not in p.read_text(), f"{p} holds an absolute path into the output directory"
    work = _copy(done, tmp_path)
    cfg = _cfg(work, shared_datasets)
    cfg.systems[1].alpha = 0.05
    metrics = run(cfg)
    assert metrics["indexes"]["xqg"]["alpha"] == 0.05
    assert metrics["stages"]["generated/t5"]["reused"] and metrics["stages"]["embeddings"]["reused"]
    assert _digests(done) == before
    m = current(work, "index/xqg")
    assert all((work / sh["file"]).is_file() and not (done / sh["file"]).exists() for sh in m["shards"])
