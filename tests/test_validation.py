"""One validation path: every encoder gets every check, perturbation specs, shards, all before the work they protect.

No Ray: preflight runs before Ray starts, and ``preflight_index`` is called here
on a hand-made snapshot.
"""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest

from xqg_ray.config import ConfigError, PerturbationConfig, load_config, perturbation_problems
from xqg_ray.config.preflight import preflight, preflight_index

REPO = Path(__file__).resolve().parents[1]
SMOKE = str(REPO / "conf" / "smoke.yaml")
SECOND = ["encoders.second.model=tiny:tiny-bert", "systems=[{name: baseline}, {name: second-base, encoder: second}]"]


def _lines(e: pytest.ExceptionInfo) -> list:
    return str(e.value).splitlines()[1:]


def test_every_encoder_gets_the_static_checks():
    with pytest.raises(ConfigError) as e:
        load_config(SMOKE, [*SECOND, "encoders.second.dtype=float8", "encoders.second.batch_size=0",
                            "encoders.second.pooling=max", "encoder.pooling=max"])
    assert _lines(e) == [
        "  - encoder.pooling='max': use one of cls, mean",
        "  - encoders.second.pooling='max': use one of cls, mean",
        "  - encoders.second.dtype='float8': use one of auto, float32, float16, bfloat16",
        "  - encoders.second.batch_size=0: must be >= 1",
    ]


def test_a_wrong_second_encoder_model_fails_in_preflight_before_ray(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    import xqg_ray.flows as flows
    from xqg_ray.pipeline import run

    def never(*a, **k):
        raise AssertionError("a stage or Ray started before the preflight refused the config")

    monkeypatch.setattr(flows, "init_ray", never)
    monkeypatch.setattr(flows, "run_benchmark", never)
    out = tmp_path / "run"
    cfg = load_config(SMOKE, [*SECOND, f"output_dir={out}", "encoders.second.model=no-such-org/no-such-model"])
    with pytest.raises(ConfigError) as e:
        run(cfg)
    assert _lines(e) == ["  - encoders.second.model: 'no-such-org/no-such-model' is not in the local Hugging Face cache "
                         "and HF_HUB_OFFLINE is set: download it first or give a local path"]
    assert not out.exists()
    preflight(load_config(SMOKE, SECOND))  # the same config with a loadable model passes


def test_more_shards_than_partitions_is_refused_when_the_config_loads():
    with pytest.raises(ConfigError) as e:
        load_config(SMOKE, ["index.num_shards=5"])
    assert _lines(e) == ["  - index.num_shards=5 is more than corpus.num_partitions=4: a shard holds whole partitions, "
                         "so use at most 4 shards"]
    assert load_config(SMOKE, ["index.num_shards=4"]).index.num_shards == 4


def _ctx(cfg, rows_per_partition):
    parts = [{"partition": p, "rows": r} for p, r in enumerate(rows_per_partition)]
    return SimpleNamespace(cfg=cfg, snapshot={"partitions": parts, "num_partitions": len(parts)})


def test_more_shards_than_passages_is_refused_after_the_benchmark(tiny_models):
    cfg = load_config(SMOKE, ["index.num_shards=4"])
    with pytest.raises(ConfigError, match=r"^index.num_shards=4 is more than the corpus's 3 passages: "
                                          r"a shard needs passages, so use at most 3 shards$"):
        preflight_index(_ctx(cfg, [1, 1, 1, 0]))
    preflight_index(_ctx(cfg, [1, 1, 1, 1]))  # as many shards as passages: each gets one


def test_the_index_factory_is_checked_for_every_encoders_dimension(tmp_path, tiny_models):
    model = tmp_path / "dim30"
    model.mkdir()
    (model / "config.json").write_text(json.dumps({"hidden_size": 30}))
    cfg = load_config(SMOKE, [f"encoders.second.model={model}", "systems=[{name: baseline}, {name: second-base, encoder: second}]",
                              "index.factory=PQ8x4"])
    preflight(cfg)  # a FAISS index_factory string, and the model spec is a model directory
    with pytest.raises(ConfigError, match=r"^index.factory='PQ8x4' cannot be built or trained on the smallest shard "
                                          r"\(400 passages, dim 30\) for encoders.second: "):
        preflight_index(_ctx(cfg, [100, 200, 300, 400]))
    cfg.systems = cfg.systems[:1]  # the default encoder alone (dim 32) can use it
    preflight_index(_ctx(cfg, [100, 200, 300, 400]))


def test_perturbation_spec_messages():
    # Moved from test_perturb.py (validate_spec): the config's check is the only one.
    assert perturbation_problems(PerturbationConfig("typo10", "char", 0.1, 0)) == []
    errs = perturbation_problems(PerturbationConfig("bad name", "typo", 1.5, -1), where="perturbations[0]")
    assert errs == [
        "perturbations[0].name='bad name': use letters, digits, '-', '_' and '.' (it names files)",
        "perturbations[0].kind='typo': use one of swap, drop, insert, keyboard, char, word_order, word_drop",
        "perturbations[0].rate=1.5: must be a number in [0, 1]",
        "perturbations[0].seed=-1: must be an integer >= 0",
    ]
    assert perturbation_problems(PerturbationConfig("s", "swap", 0.6)) == [
        "perturbation.rate=0.6: swap swaps pairs, so the rate must be <= 0.5"]


def test_perturbations_are_checked_when_the_config_loads():
    with pytest.raises(ConfigError) as e:
        load_config(SMOKE, ["perturbations=[{name: clean, kind: typo}]"])
    assert _lines(e) == [
        "  - perturbations[0].kind='typo': use one of swap, drop, insert, keyboard, char, word_order, word_drop",
        "  - perturbation names must be unique and not 'clean', got ['clean']",
    ]


def test_ray_wait_timeout_must_be_positive():
    with pytest.raises(ConfigError, match=r"ray\.wait_timeout_s=0\.0: must be > 0"):
        load_config(SMOKE, ["ray.wait_timeout_s=0"])
