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
from xqg_ray.store.sealed import read_published, read_sealed, write_sealed
from xqg_ray.store.storage import Storage
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
        ("index/xqg", "shards", ["search.top_k=21"]),  # search reads the shards (another k: not a committed result)
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


# -- every way a manifest read fails is one line naming the file, and its advice works ------------------------

@pytest.fixture
def published(tmp_path):
    """A stage ``s`` with a sealed manifest and its pointer, as the ledger writes them."""
    storage = Storage()
    write_sealed(storage, str(tmp_path), "s/manifests/ab.json", {"stage": "s", "alpha": 0.1, "units": [{"file": "s/data/x.parquet"}]})
    write_sealed(storage, str(tmp_path), "s/current.json", {"manifest": "s/manifests/ab.json", "fingerprint": "ab"})
    return storage, tmp_path


@pytest.mark.parametrize(
    "damage,problem",
    [
        (lambda raw: raw[: len(raw) // 2], "is truncated (Expecting ',' delimiter at line 7 column 3)"),
        (lambda raw: b"", "is truncated (Expecting value at line 1 column 1)"),
        (lambda raw: raw[:10] + b"\xff" + raw[11:], "is not UTF-8 text (byte 10): the file is damaged;"),
        (lambda raw: b"alpha: 0.1\n", "is not valid JSON (Expecting value at line 1 column 1)"),
        (lambda raw: raw.replace(b"0.1", b"0.5"), "was edited after it was written (its seal does not match)"),
        (lambda raw: b"[1]\n", "was edited after it was written (its seal does not match)"),
    ],
    ids=["truncated", "empty", "not-utf8", "not-json", "edited", "not-an-object"],
)
def test_a_damaged_manifest_is_one_line_and_deleting_the_pointer_unpublishes(published, damage, problem):
    storage, root = published
    path = root / "s" / "manifests" / "ab.json"
    path.write_bytes(damage(path.read_bytes()))
    with pytest.raises(IntegrityError) as e:
        read_published(storage, str(root), "s/current.json")
    sep = " " if problem.endswith(";") else ": "
    edited = "; change settings in the config, not in manifests" if "edited" in problem else ""
    assert str(e.value) == f"{path} {problem}{sep}delete {root}/s/current.json and rerun the same command to recompute it{edited}"
    (root / "s" / "current.json").unlink()  # the advice
    assert read_published(storage, str(root), "s/current.json") is None  # not published: the rerun recomputes


@pytest.mark.parametrize("damage", [lambda raw: raw[:-20], lambda raw: b"\xfe" + raw, lambda raw: raw.replace(b"ab", b"cd", 1)],
                         ids=["truncated", "not-utf8", "edited"])
def test_a_damaged_pointer_says_delete_it_and_deleting_it_unpublishes(published, damage):
    storage, root = published
    ptr = root / "s" / "current.json"
    ptr.write_bytes(damage(ptr.read_bytes()))
    with pytest.raises(IntegrityError) as e:
        read_published(storage, str(root), "s/current.json")
    msg = str(e.value)
    assert msg.startswith(f"{ptr} ") and "\n" not in msg
    assert "delete it and rerun the same command to recompute it" in msg
    ptr.unlink()
    assert read_published(storage, str(root), "s/current.json") is None


def test_a_deleted_manifest_or_pointer_means_not_published(published):
    storage, root = published
    assert read_published(storage, str(root), "s/current.json")["alpha"] == 0.1
    (root / "s" / "manifests" / "ab.json").unlink()
    assert read_published(storage, str(root), "s/current.json") is None
    (root / "s" / "current.json").unlink()
    assert read_published(storage, str(root), "s/current.json") is None


def test_a_missing_sealed_file_is_one_line_naming_it_and_what_to_delete(published):
    storage, root = published
    (root / "s" / "manifests" / "ab.json").unlink()
    with pytest.raises(IntegrityError) as e:
        read_sealed(storage, str(root), "s/manifests/ab.json", reset="s/current.json")
    assert str(e.value) == f"{root}/s/manifests/ab.json is missing: delete {root}/s/current.json and rerun the same command to recompute it"
    with pytest.raises(IntegrityError) as e:
        read_sealed(storage, str(root), "s/commits/p0-0123.json")
    assert str(e.value) == f"{root}/s/commits/p0-0123.json is missing: rerun the same command to recompute it"


def _systems(out: Path) -> dict:
    return json.loads((out / "metrics.json").read_text())["systems"]


def test_a_non_utf8_pointer_stops_the_run_in_one_line_and_the_advice_works(done, tmp_path, shared_datasets):
    work = _copy(done, tmp_path)
    ptr = work / "index" / "xqg" / "current.json"
    ptr.write_bytes(b"\xff" + ptr.read_bytes()[1:])
    with pytest.raises(IntegrityError) as e:
        run(_cfg(work, shared_datasets))
    assert str(e.value) == f"{ptr} is not UTF-8 text (byte 0): the file is damaged; delete it and rerun the same command to recompute it"
    ptr.unlink()
    assert run(_cfg(work, shared_datasets))["systems"] == _systems(done)


def test_a_deleted_published_manifest_is_recomputed(done, tmp_path, shared_datasets):
    """Needs Ledger.current() to read through read_published (a missing manifest means not published)."""
    work = _copy(done, tmp_path)
    ptr = json.loads((work / "index" / "xqg" / "current.json").read_text())
    (work / ptr["manifest"]).unlink()
    assert run(_cfg(work, shared_datasets))["systems"] == _systems(done)
    assert (work / ptr["manifest"]).is_file()


def test_a_deleted_snapshot_is_recomputed_by_the_next_run(done, tmp_path, shared_datasets):
    """The planner checks the published benchmark's corpus snapshot is there: a deleted one makes the
    rerun rebuild it (no advice to follow), with the same results."""
    work = _copy(done, tmp_path)
    snap = work / current(work, "benchmark")["snapshot_file"]
    snap.unlink()
    assert run(_cfg(work, shared_datasets))["systems"] == _systems(done)
    assert snap.is_file()
