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


def test_the_draw_shows_passages_every_language_has_a_question_for():
    fs, langs = load_fewshot(), ["de", "zh", "ar"]
    common = set.intersection(*[{ex["title"] for ex in fs[lang]} for lang in langs])
    assert len(common) == 6  # the bundled pools: 6 passages with a question in each of the three
    seen = set()
    for pid in range(40):
        shown = draw_shared_exemplars(fs, langs, 2, 0, pid)
        titles = [[ex["title"] for ex in shown[lang]] for lang in langs]
        assert titles[0] == titles[1] == titles[2] and len(titles[0]) == 2 and set(titles[0]) <= common, pid
        assert draw_shared_exemplars(fs, langs, 2, 0, pid) == shown  # a pure function of (seed, passage id)
        seen.add(tuple(titles[0]))
    assert len(seen) == 3 and len({t for pair in seen for t in pair}) == 6  # 3 disjoint pairs of the 6: every one is shown
    # Fewer common passages than few_shot: each language's own groups, one group number in every language.
    pools = {"de": fs["de"], "zh": [{**ex, "title": f"zh {ex['title']}"} for ex in fs["zh"]]}
    for pid in range(10):
        shown = draw_shared_exemplars(pools, ["de", "zh"], 2, 0, pid)
        number = {lang: [tuple(g) for g in exemplar_groups(pools[lang], 2, 0, lang)].index(
            tuple(sorted(pools[lang].index(ex) for ex in shown[lang]))) for lang in ("de", "zh")}
        assert number["de"] == number["zh"], pid


def test_a_parallel_block_lists_its_questions_starting_at_a_new_language_each_block():
    two = {lang: [{"title": t, "passage": f"{t} text.", "question": f"{lang} {t}?"} for t in ("A", "B")] for lang in ("de", "zh", "ar")}
    ex_part, _ = shared_prompt_parts("C", "c", ["de", "zh", "ar"], LANGUAGE_NAMES, two)
    assert ex_part == (f"{SHARED_HEADER}\n\n"
                       "Title: A\nPassage: A text.\nGerman question: de A?\nChinese question: zh A?\nArabic question: ar A?\n\n"
                       "Title: B\nPassage: B text.\nChinese question: zh B?\nArabic question: ar B?\nGerman question: de B?\n\n")


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
    assert len(g.prefixes.base_kv) == len(draws) >= 2 and len(g.prefixes.bases) == len(ROWS)
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
