"""The llama.cpp runtime of the causal generator: its key, its config checks, and its draws.

The key and config tests run everywhere.  The generation tests load the
bundled Gemma GGUF in llama.cpp and are skipped where ``llama-cpp-py-sync``
is not installed or its library does not load (its wheel needs glibc 2.38).
"""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from xqg_ray.config import ConfigError, load_config, section_dict
from xqg_ray.models.prompts import prompt_assets_sha256
from xqg_ray.stages.context import PIPELINE_VERSION
from xqg_ray.stages.generate import generator_fingerprint, generator_settings
from xqg_ray.store.ledger import fingerprint

REPO = Path(__file__).resolve().parents[1]
SMOKE = str(REPO / "conf" / "smoke.yaml")
GGUF_GEMMA = ["generators.gpt2.model=bundled:gemma3-270m"]


def _lines(e: pytest.ExceptionInfo) -> list:
    return str(e.value).splitlines()[1:]


def test_runtime_enters_the_key_only_when_not_torch():
    torch_cfg = load_config(SMOKE, ["generators.gpt2.filters.draw_ahead=0"])  # as before draws ahead (smoke's gpt2 has 1)
    llama_cfg = load_config(SMOKE, ["generators.gpt2.model=bundled:gemma3-270m-gguf"])
    llama_cfg.generators["gpt2"].runtime = "llamacpp"  # the library need not load to compute a key
    torch_llama = load_config(SMOKE, ["generators.gpt2.model=bundled:gemma3-270m-gguf"])
    g = torch_cfg.generators["gpt2"]
    assert g.runtime == "torch"
    # torch: the key of the section without the field, as every config had before runtimes and layouts (and the
    # filters' section as it was before the round trip, whose settings enter only when it is on)
    old = {k: v for k, v in section_dict(g).items() if k not in ("runtime", "prompt_layout")}  # prompt_layout: as runtime
    old["filters"] = {"enabled": ["empty", "wrong_language", "exemplar_copy", "duplicate", "degenerate"], "exemplar_overlap": 0.7,
                      "duplicate_jaccard": 0.8, "max_attempts": 3}
    assert generator_fingerprint(SimpleNamespace(cfg=torch_cfg), "gpt2") == fingerprint(
        {"v": PIPELINE_VERSION, "name": "gpt2", "gen": old, "prompt": prompt_assets_sha256()})
    assert "runtime" not in generator_settings(g)
    assert generator_settings(llama_cfg.generators["gpt2"])["runtime"] == "llamacpp"
    # the same model and settings on the two runtimes: two keys
    assert generator_fingerprint(SimpleNamespace(cfg=llama_cfg), "gpt2") != generator_fingerprint(SimpleNamespace(cfg=torch_llama), "gpt2")


def test_llamacpp_on_a_model_without_gguf_weights_is_refused():
    with pytest.raises(ConfigError) as e:
        load_config(SMOKE, ["generators.gpt2.runtime=llamacpp"])
    assert _lines(e) == [
        "  - generators.gpt2.runtime='llamacpp': model 'tiny:tiny-gpt2' has no GGUF weights; use bundled:gemma3-270m, "
        "bundled:gemma3-270m-gguf, a .gguf file or gguf_file; or set runtime: torch",
    ]


def test_llamacpp_runs_causal_generators_only_and_runtime_is_a_choice():
    with pytest.raises(ConfigError) as e:
        load_config(SMOKE, ["generators.t5.runtime=llamacpp", "generators.gpt2.runtime=onnx"])
    assert _lines(e) == [
        "  - generators.t5.runtime='llamacpp': llama.cpp runs causal generators only; set runtime: torch (kind seq2seq)",
        "  - generators.gpt2.runtime='onnx': use one of torch, llamacpp",
    ]


def test_llamacpp_without_its_package_is_refused(monkeypatch):
    monkeypatch.setitem(sys.modules, "llama_cpp_py_sync.llama", None)  # import fails as if not installed
    with pytest.raises(ConfigError) as e:
        load_config(SMOKE, [*GGUF_GEMMA, "generators.gpt2.runtime=llamacpp"])
    assert _lines(e) == [
        "  - generators.gpt2.runtime='llamacpp': llama.cpp needs the llama-cpp-py-sync package "
        "(pip install llama-cpp-py-sync; the project's llamacpp extra); or set runtime: torch",
    ]


def test_a_library_that_does_not_load_is_named(monkeypatch):
    def broken():
        raise RuntimeError("Failed to load llama.cpp library from /x/libllama.so: cannot load library '/x/libllama.so': "
                           "/lib/x86_64-linux-gnu/libc.so.6: version `GLIBC_2.38' not found (required by /x/libllama.so).  Additionally, ...")

    # the binding's module as installed on Debian 12: it imports, its library does not load
    monkeypatch.setitem(sys.modules, "llama_cpp_py_sync.llama", SimpleNamespace(get_lib=broken))
    from xqg_ray.models.llamacpp import load_problem

    assert load_problem() == ("the llama.cpp library of llama-cpp-py-sync does not load here "
                              "(version `GLIBC_2.38' not found (required by /x/libllama.so))")


def _why_not() -> str:
    from xqg_ray.models.llamacpp import load_problem

    return load_problem()


needs_llama = pytest.mark.skipif(bool(_why_not()), reason=_why_not() or "llama.cpp loads")

ROWS = [(11, "Berlin", "Berlin is the capital and largest city of Germany, on the river Spree, with 3.7 million people."),
        (12, "Nile", "The Nile is a major north-flowing river in northeastern Africa, about 6,650 km long."),
        (13, "Python", "Python is a high-level programming language whose design emphasises code readability.")]


@pytest.fixture(scope="module")
def gemma_llama():
    from xqg_ray.config import GeneratorConfig
    from xqg_ray.models.generator import QueryGenerator

    cfg = GeneratorConfig(kind="causal", model="bundled:gemma3-270m", runtime="llamacpp", languages=["de", "zh"],
                          n_per_language=2, batch_size=2, max_new_tokens=12)
    return QueryGenerator("gemma", cfg, 1)


@needs_llama
@pytest.mark.slow
def test_same_seeds_give_the_same_questions_and_another_seed_others(gemma_llama):
    from xqg_ray.models.generator import QueryGenerator

    first = gemma_llama.generate_attempts(ROWS)
    assert [len(d) for d in first] == [4, 4, 4] and all(d["text"] for ds in first for d in ds)
    assert gemma_llama.generate_attempts(ROWS) == first  # the same process again
    # a new model instance, the rows in another order and another batching: the same draws per passage
    again = QueryGenerator("gemma", dataclasses.replace(gemma_llama.cfg, batch_size=3), 1)
    assert again.generate_attempts(ROWS[::-1]) == first[::-1]
    other = QueryGenerator("gemma", dataclasses.replace(gemma_llama.cfg, seed=1), 1).generate_attempts(ROWS)
    assert [d["text"] for ds in other for d in ds] != [d["text"] for ds in first for d in ds]


@needs_llama
@pytest.mark.slow
def test_the_generate_stage_runs_on_llamacpp(tmp_path, gemma_llama):
    import pyarrow as pa

    from xqg_ray.config import StorageConfig
    from xqg_ray.schemas import ATTEMPTS_SCHEMA, GENERATED_SCHEMA
    from xqg_ray.stages.generate import GeneratePartition

    cfg = dataclasses.replace(gemma_llama.cfg, languages=["de"], n_per_language=1)
    actor = GeneratePartition(str(tmp_path), StorageConfig(), "generated/gemma", "gemma", cfg, 1, num_partitions=1)
    todo = pa.table({"id": [r[0] for r in ROWS], "title": [r[1] for r in ROWS], "text": [r[2] for r in ROWS],
                     "content_hash": ["h11", "h12", "h13"]})
    queries, draws = actor.generate_table(todo)
    assert queries.schema == GENERATED_SCHEMA and draws.schema == ATTEMPTS_SCHEMA
    assert queries["id"].to_pylist() == [11, 12, 13]
    # the first draw of each passage is the one the generator draws alone (the same seeds and prompts)
    alone = actor.gen.generate_many([ROWS[0]])[0][0]
    assert [q["text"] for q in queries["queries"].to_pylist()[0]] == [q["text"] for q in alone]
    assert draws.filter(draws["unfiltered"]).num_rows == 3
