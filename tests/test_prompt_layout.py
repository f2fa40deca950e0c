"""``prompt_layout: shared_passage``: every language's exemplars, then the passage, then the language's label.

Only the label depends on the target language, so one prefill of the passage serves every language
(the per-language layout prefills it once per language). The prompt text, the exemplar draw, the
batched decoding on the two-level prefix cache, the key and the config checks.
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest

from xqg_ray.config import GeneratorConfig, LANGUAGE_NAMES, load_config
from xqg_ray.config.schema import ConfigError
from xqg_ray.models.prompts import SHARED_HEADER, draw_shared_exemplars, exemplar_groups, load_fewshot, shared_prompt_parts
from xqg_ray.stages.generate import generator_fingerprint, generator_settings

REPO = Path(__file__).resolve().parents[1]
DEMO = str(REPO / "conf" / "demo.yaml")

EXEMPLARS = {
    "de": [{"title": "Bee", "passage": "Bees make honey.", "question": "Was machen Bienen?"}],
    "zh": [{"title": "Tea", "passage": "Tea comes from a\nshrub.", "question": "茶来自哪里？"}],
    "ar": [{"title": "Bee", "passage": "Bees make honey.", "question": "ماذا يصنع النحل؟"}],
}


def test_the_prompt_merges_one_passages_exemplars_and_ends_before_the_label():
    ex_part, passage = shared_prompt_parts("River", "The Rhine\nflows north.", ["de", "zh", "ar"], LANGUAGE_NAMES, EXEMPLARS)
    assert ex_part == (f"{SHARED_HEADER}\n\n"
                       "Title: Bee\nPassage: Bees make honey.\nGerman question: Was machen Bienen?\nArabic question: ماذا يصنع النحل؟\n\n"
                       "Title: Tea\nPassage: Tea comes from a shrub.\nChinese question: 茶来自哪里？\n\n")
    assert passage == "Title: River\nPassage: The Rhine flows north.\n"


def test_the_exemplar_draw_is_one_group_number_in_every_language():
    fs, langs = load_fewshot(), ["de", "zh", "ar"]
    for pid in range(40):
        shown = draw_shared_exemplars(fs, langs, 2, 0, pid)
        picks = {tuple(sorted(fs[lang].index(ex) for ex in shown[lang])) for lang in langs}
        numbers = {[tuple(g) for g in exemplar_groups(fs[lang], 2, 0, lang)].index(tuple(sorted(fs[lang].index(ex) for ex in shown[lang])))
                   for lang in langs}
        assert len(numbers) == 1 and all(len(shown[lang]) == 2 for lang in langs), (pid, picks)
        assert draw_shared_exemplars(fs, langs, 2, 0, pid) == shown  # a pure function of (seed, passage id)
    # 5 groups of 2 in 10 exemplars: passages see all of them.
    assert len({tuple(ex["title"] for ex in draw_shared_exemplars(fs, langs, 2, 0, pid)["de"]) for pid in range(40)}) == 5


def generator(tiny_models, **kw):
    from xqg_ray.models.generator import QueryGenerator

    # tiny-gpt2's tokenizer spends a token per byte: room for the exemplars (it has 1,024 positions, no window).
    cfg = GeneratorConfig(kind="causal", model=tiny_models["tiny-gpt2"], languages=["de", "zh", "ar"], n_per_language=2, max_new_tokens=6,
                          few_shot=1, prompt_layout="shared_passage", max_input_length=1000, **kw)
    return QueryGenerator("g", cfg)


ROWS = [(7, "Title", "some passage text"), (8, "Other", "another passage about rivers"), (9, "T", "x")]


def test_a_passages_prompts_share_one_prefix_and_differ_in_the_label(tiny_models):
    g = generator(tiny_models)
    ids = {lang: g.prompt_ids(7, "Title", "some passage text", lang) for lang in ("de", "zh", "ar")}
    assert len({pre for pre, _ in ids.values()}) == 1 and ids["de"][0]
    tok = g.tokenizer
    assert {lang: suf for lang, (_, suf) in ids.items()} == {
        lang: tok(f"{LANGUAGE_NAMES[lang]} question:", add_special_tokens=False)["input_ids"] for lang in ("de", "zh", "ar")}
    assert g.prompt(7, "Title", "some passage text", "zh").endswith("Title: Title\nPassage: some passage text\nChinese question:")
    # The copy filter compares with every exemplar the prompt shows, whatever the question's language.
    shown = draw_shared_exemplars(g.fewshot, ["de", "zh", "ar"], 1, 0, 7)
    assert g.exemplars_for(7, "ar") == g.exemplars_for(7, "de") == [shown["de"][0], shown["zh"][0], shown["ar"][0]]


def test_decoding_on_the_exemplar_cache_equals_whole_prompts_and_each_passage_alone(tiny_models):
    g = generator(tiny_models)
    many = g.generate_many(ROWS)
    # Each passage's prefix was prefilled on its exemplar part's cache: one per distinct exemplar draw.
    draws = {tuple(ex["title"] for ex in g.exemplars_for(pid, "de")) for pid, _, _ in ROWS}
    assert len(g._base_kv) == len(draws) >= 2 and len(g._bases) == len(ROWS)
    assert [g.generate(*r) for r in ROWS] == many  # each passage alone (other batches)
    g.prefix_reuse = False  # every prompt prefilled whole, from its first token
    assert g.generate_many(ROWS) == many
    assert [len(q) for q, _ in many] == [6, 6, 6] and [q["lang"] for q in many[0][0]] == ["de", "de", "zh", "zh", "ar", "ar"]


def test_the_layout_is_in_the_key_only_when_shared():
    base = load_config(DEMO, [])
    shared = load_config(DEMO, ["generators.gemma.prompt_layout=shared_passage", "generators.gemma.few_shot=1"])
    assert "prompt_layout" not in generator_settings(base.generators["gemma"])  # keys from before layouts stay
    assert generator_settings(shared.generators["gemma"])["prompt_layout"] == "shared_passage"
    named = load_config(DEMO, ["generators.gemma.prompt_layout=per_language"])
    key = lambda c: generator_fingerprint(SimpleNamespace(cfg=c), "gemma")  # noqa: E731
    assert key(named) == key(base) != key(shared)


def test_the_layout_is_checked_before_work():
    with pytest.raises(ConfigError) as e:
        load_config(DEMO, ["generators.gemma.prompt_layout=shared_passage", "generators.gemma.header_language=target"])
    assert str(e.value).splitlines()[1:] == ["  - generators.gemma.prompt_layout='shared_passage': one header serves every language, "
                                             "so it is English; set header_language: english"]
    with pytest.raises(ConfigError) as e:
        load_config(DEMO, ["generators.gemma.prompt_layout=sideways"])
    assert str(e.value).splitlines()[1:] == ["  - generators.gemma.prompt_layout='sideways': use one of per_language, shared_passage"]
