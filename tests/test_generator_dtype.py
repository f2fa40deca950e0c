"""``dtype: auto`` for generators: bfloat16 where the generate pool's CPU has bfloat16 units, float32 elsewhere.

The rule (``models.loading.generator_dtype``), the CPU flags it reads, the run's resolution
(``runtime.devices``) and what it does to the generation's key: a CPU with AMX or AVX512-BF16 gets the
key (and the questions) of a config naming bfloat16; any other CPU keeps the key ``auto`` always had.
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml

from xqg_ray.config import load_config
from xqg_ray.models.loading import BF16_CPU_FLAGS, cpu_flags, generator_dtype
from xqg_ray.runtime.devices import auto_generators, pool_cpu_flags, resolve_generator_dtypes
from xqg_ray.stages.generate import generator_fingerprint

REPO = Path(__file__).resolve().parents[1]
DEMO = str(REPO / "conf" / "demo.yaml")
SMOKE = str(REPO / "conf" / "smoke.yaml")

# Two processors of a /proc/cpuinfo, cut down: the first flags line is the machine's.
CPUINFO = """processor\t: 0
vendor_id\t: AuthenticAMD
model name\t: AMD EPYC
flags\t\t: fpu sse2 avx2 fma avx512f avx512_bf16 amx_bf16
bogomips\t: 4000.00

processor\t: 1
flags\t\t: fpu sse2
"""


def test_cpu_flags_are_the_first_flags_line(tmp_path):
    p = tmp_path / "cpuinfo"
    p.write_text(CPUINFO)
    assert cpu_flags(str(p)) == frozenset({"fpu", "sse2", "avx2", "fma", "avx512f", "avx512_bf16", "amx_bf16"})
    assert cpu_flags(str(tmp_path / "absent")) == frozenset()  # not Linux: read as no bfloat16 units
    (tmp_path / "noflags").write_text("processor\t: 0\nmodel name\t: x\n")
    assert cpu_flags(str(tmp_path / "noflags")) == frozenset()


def test_auto_is_bfloat16_on_cuda_and_on_cpus_with_bfloat16_units():
    assert BF16_CPU_FLAGS == frozenset({"amx_bf16", "avx512_bf16"})
    assert generator_dtype("auto", "cpu", frozenset({"avx2", "fma", "amx_bf16"})) == "bfloat16"
    assert generator_dtype("auto", "cpu", frozenset({"avx512f", "avx512_bf16"})) == "bfloat16"
    # AVX-512 without its bfloat16 extension, or AVX2 only (this project's slow CI machine): float32.
    assert generator_dtype("auto", "cpu", frozenset({"avx2", "avx512f", "avx512_vnni"})) == "float32"
    assert generator_dtype("auto", "cpu", frozenset()) == "float32"
    assert generator_dtype("auto", "cuda", frozenset()) == "bfloat16"
    # An explicit dtype is itself, whatever the CPU.
    assert [generator_dtype(d, "cpu", frozenset({"amx_bf16"})) for d in ("float32", "bfloat16", "float16")] == ["float32", "bfloat16", "float16"]
    assert generator_dtype("bfloat16", "cpu", frozenset()) == "bfloat16"


def demo(*overrides: str):
    return load_config(DEMO, list(overrides))


def key(cfg) -> str:
    return generator_fingerprint(SimpleNamespace(cfg=cfg), "gemma")


def test_a_cpu_with_bfloat16_units_gets_the_key_of_a_config_naming_bfloat16():
    auto = demo()
    assert auto.generators["gemma"].dtype == "auto" and auto_generators(auto) == ["gemma"]
    fast = resolve_generator_dtypes(auto, frozenset({"avx2", "amx_bf16"}))
    assert fast.generators["gemma"].dtype == "bfloat16"
    assert auto.generators["gemma"].dtype == "auto"  # the caller's config is not changed in place
    # The demo named bfloat16 before auto existed: on such a CPU its stored questions are reused as they are.
    assert key(fast) == key(demo("generators.gemma.dtype=bfloat16")) != key(auto)


def test_any_other_cpu_keeps_the_key_auto_always_had():
    auto = demo()
    slow = resolve_generator_dtypes(auto, frozenset({"avx2", "fma", "avx512f"}))
    assert slow is auto and key(slow) == key(auto)
    # float32 and auto on such a CPU compute alike, but their keys were always distinct: unchanged.
    assert key(slow) != key(demo("generators.gemma.dtype=float32"))


def test_only_cpu_torch_generators_with_auto_are_resolved():
    bf16 = frozenset({"amx_bf16"})
    # On GPUs auto is bfloat16 in the actor already: the config (and every stored key) stays as it is.
    gpu = demo("ray.actor_num_gpus=1")
    assert resolve_generator_dtypes(gpu, bf16) is gpu
    named = demo("generators.gemma.dtype=float32")
    assert auto_generators(named) == [] and resolve_generator_dtypes(named, bf16) is named
    # The smoke config: two auto generators (seq2seq and causal) are both resolved; a provided one never is.
    smoke = load_config(SMOKE, [])
    assert auto_generators(smoke) == ["t5", "gpt2"]
    assert {n: g.dtype for n, g in resolve_generator_dtypes(smoke, bf16).generators.items()} == {"t5": "bfloat16", "gpt2": "bfloat16"}
    assert auto_generators(demo()) == ["gemma"]  # the demo's `human` (provided) has no model to run


def test_a_joined_cluster_asks_a_task_on_the_generate_pool(ray_local, monkeypatch):
    """On a cluster the driver joined, the flags come from a task with the pool's resources (here the same machine)."""
    from xqg_ray.runtime import devices
    from xqg_ray.runtime.cluster import Cluster

    local = pool_cpu_flags(demo())
    assert local == cpu_flags() and len(local) > 0
    asked = []
    real = devices.run_tasks
    monkeypatch.setattr(devices, "current", lambda: Cluster(local=False))
    monkeypatch.setattr(devices, "run_tasks", lambda fn, args, cpus: asked.append((fn.__name__, args, cpus)) or real(fn, args, cpus))
    assert pool_cpu_flags(demo("ray.generate.num_cpus=0.5")) == local
    assert asked == [("cpu_flags", [()], 0.5)]


def test_the_run_saves_the_config_as_resolved(ray_local, shared_datasets, tmp_path, monkeypatch):
    """config.yaml shows what the run computes in, and every stage's context holds the same."""
    from xqg_ray.flows import job_context
    from xqg_ray.runtime import devices

    overrides = [f"output_dir={tmp_path / 'out'}", f"benchmark.source={shared_datasets}", "ray.progress=false"]
    monkeypatch.setattr(devices, "cpu_flags", lambda: frozenset({"avx2", "avx512_bf16"}))
    with job_context(load_config(SMOKE, overrides), whole_job=True) as ctx:
        assert {n: g.dtype for n, g in ctx.cfg.generators.items()} == {"t5": "bfloat16", "gpt2": "bfloat16"}
    saved = yaml.safe_load((tmp_path / "out" / "config.yaml").read_text())
    assert {n: g["dtype"] for n, g in saved["generators"].items()} == {"t5": "bfloat16", "gpt2": "bfloat16"}
    monkeypatch.setattr(devices, "cpu_flags", lambda: frozenset({"avx2"}))
    with job_context(load_config(SMOKE, overrides), whole_job=True) as ctx:
        assert {n: g.dtype for n, g in ctx.cfg.generators.items()} == {"t5": "auto", "gpt2": "auto"}
    saved = yaml.safe_load((tmp_path / "out" / "config.yaml").read_text())
    assert {n: g["dtype"] for n, g in saved["generators"].items()} == {"t5": "auto", "gpt2": "auto"}


@pytest.mark.parametrize("dtype,computed", [("auto", "float32"), ("float32", "float32"), ("bfloat16", "bfloat16")])
def test_the_generator_says_what_it_computes_in(tiny_models, dtype, computed):
    """What each unit's commit record holds (``computed_in``): auto does not say it, the model does."""
    from xqg_ray.config import GeneratorConfig
    from xqg_ray.models.generator import QueryGenerator

    gen = QueryGenerator("g", GeneratorConfig(kind="causal", model=tiny_models["tiny-gpt2"], languages=["de"], n_per_language=1,
                                              max_new_tokens=4, few_shot=1, dtype=dtype))
    assert gen.computed_in == {"dtype": computed, "device": "cpu"}
