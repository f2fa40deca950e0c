"""Typed config: YAML + dotlist merge, unknown keys, validation messages, redaction."""

from pathlib import Path

import pytest

from xqg_ray.config import ConfigError, load_config, to_yaml


def _write(tmp_path, text):
    p = tmp_path / "c.yaml"
    p.write_text(text)
    return str(p)


BASE = """
output_dir: out/x
systems:
  - {name: baseline}
"""


def test_merge_and_overrides(tmp_path):
    cfg = load_config(_write(tmp_path, BASE), ["index.num_shards=3", "encoder.pooling=mean"])
    assert cfg.index.num_shards == 3 and cfg.encoder.pooling == "mean"
    assert cfg.systems[0].name == "baseline" and cfg.systems[0].aggregation == "sum"


def test_unknown_key_is_an_error(tmp_path):
    with pytest.raises(ConfigError, match="num_shard"):
        load_config(_write(tmp_path, BASE + "index:\n  num_shard: 3\n"))
    with pytest.raises(ConfigError):
        load_config(_write(tmp_path, BASE), ["encoder.poolin=mean"])


def test_wrong_type_is_an_error(tmp_path):
    with pytest.raises(ConfigError):
        load_config(_write(tmp_path, BASE), ["index.num_shards=two"])


@pytest.mark.parametrize(
    "extra, message",
    [
        ("  - {name: x, generator: nope}\n", "generator 'nope'"),
        ("  - {name: baseline}\n", "unique"),
        ("  - {name: 'a b', generator: ''}\n", "names files"),
    ],
)
def test_system_rules(tmp_path, extra, message):
    with pytest.raises(ConfigError, match=message):
        load_config(_write(tmp_path, BASE + extra))


def test_generator_rules(tmp_path):
    text = BASE + "generators:\n  g: {kind: seq2seq, model: '', languages: [xx]}\n"
    with pytest.raises(ConfigError) as e:
        load_config(_write(tmp_path, text))
    assert "generators.g.model is empty" in str(e.value) and "unknown codes ['xx']" in str(e.value)


def test_secrets_are_redacted(tmp_path):
    cfg = load_config(_write(tmp_path, BASE), ["storage.secret_key=hunter2", "storage.access_key=AKIA"])
    y = to_yaml(cfg)
    assert "hunter2" not in y and "AKIA" not in y and "***" in y
    assert cfg.storage.secret_key == "hunter2"  # only the saved copy is redacted


def test_shipped_configs_validate():
    conf = Path(__file__).resolve().parents[1] / "conf"
    for name in ("smoke.yaml", "demo.yaml", "xor-tydi.yaml"):
        load_config(str(conf / name))
    exp = load_config(str(conf / "experiments.yaml"))
    assert [s.name for s in exp.systems] == [
        "baseline", "xqg", "xqg@alpha=0.05", "xqg@alpha=0.2", "xqg@alpha=0.3", "xqg@alpha=0.5", "xqg@n=1", "xqg@n=2",
        "xqg@aggregation=sum", "cls-baseline", "cls-xqg"]
    assert [p.name for p in exp.perturbations] == ["typos-5", "typos-15", "word-order", "word-drop"]


def test_stage_pools_inherit_and_override():
    from xqg_ray.config import stage_pool

    cfg = load_config("conf/smoke.yaml", ["ray.actor_num_gpus=1", "ray.max_actors=3", "ray.encode.num_gpus=0.5",
                                          "ray.generate.max_actors=5", "ray.generate.num_cpus=2"])
    gen, enc, srch = (stage_pool(cfg.ray, s) for s in ("generate", "encode", "search"))
    assert (gen.num_gpus, gen.max_actors, gen.num_cpus, gen.torch_threads) == (1.0, 5, 2.0, 1)
    assert (enc.num_gpus, enc.max_actors, enc.num_cpus) == (0.5, 3, 1.0)
    assert srch.num_gpus == 0.0  # faiss-cpu: no GPU unless ray.search.num_gpus says so


def test_bad_stage_pool_and_dtype_are_refused():
    with pytest.raises(ConfigError) as e:
        load_config("conf/smoke.yaml", ["ray.encode.num_gpus=1.5", "ray.generate.min_actors=3", "encoder.dtype=float8"])
    msg = str(e.value)
    assert "ray.encode.num_gpus=1.5" in msg and "ray.generate (or ray.actor_*)" in msg and "encoder.dtype='float8'" in msg


def _with_systems(tmp_path, systems: str) -> str:
    import yaml

    raw = yaml.safe_load(Path("conf/smoke.yaml").read_text())
    raw["systems"] = yaml.safe_load(systems)
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(raw))
    return str(path)


SMOKE_SYSTEMS = """
- {name: baseline}
- {name: xqg, generator: t5, alpha: 0.01, sweep: {alpha: [0.01, 0.1, 0.5], n: [1, 2], aggregation: [mean]}}
- {name: xqg-a0.3, generator: t5, alpha: 0.3}
- {name: causal-mean, generator: gpt2, alpha: 0.1, aggregation: mean}
"""


def test_sweeps_expand_once_and_survive_a_reload(tmp_path):
    from xqg_ray.config.systems import point_name

    cfg = load_config(_with_systems(tmp_path, SMOKE_SYSTEMS))
    names = [s.name for s in cfg.systems]
    assert names == ["baseline", "xqg", "xqg@alpha=0.1", "xqg@alpha=0.5", "xqg@n=1", "xqg@aggregation=mean", "xqg-a0.3", "causal-mean"]
    by = {s.name: s for s in cfg.systems}
    assert (by["xqg@n=1"].n, by["xqg@n=1"].alpha, by["xqg@n=1"].sweep_of, by["xqg@n=1"].sweep_param) == (1, 0.01, "xqg", "n")
    assert (by["xqg@alpha=0.5"].alpha, by["xqg@alpha=0.5"].aggregation) == (0.5, "sum")
    assert point_name("x", "alpha", 0.25) == "x@alpha=0.25"
    saved = tmp_path / "config.yaml"
    saved.write_text(to_yaml(cfg))
    assert [s.name for s in load_config(str(saved)).systems] == names  # idempotent


def test_bad_sweeps_and_encoders_are_refused(tmp_path):
    bad = """
- {name: baseline, sweep: {alpha: [0.1]}}
- {name: xqg, generator: t5, sweep: {n: [3]}}
- {name: xqg-a0.3, generator: t5, encoder: nope}
- {name: causal-mean, generator: gpt2, n: 5}
"""
    with pytest.raises(ConfigError) as e:
        load_config(_with_systems(tmp_path, bad))
    msg = str(e.value)
    assert "system 'xqg': sweep.n values must be in 1..2" in msg
    assert "system 'baseline': a sweep over ['alpha'] needs a generator" in msg
    assert "system 'xqg-a0.3' uses encoder 'nope', not in encoders []" in msg
    assert "system 'causal-mean': n=5 must be in 0..2" in msg
