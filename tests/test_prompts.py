"""The hand-written few-shot exemplars, their per-passage draw, the causal prompt's shape (English or
target-language header) and question clean-up, and the exemplar-copy filter on the drawn exemplars (no model needed)."""

from __future__ import annotations

import json
import re
from collections import Counter
from typing import Dict, List, Tuple

from helpers_data import shared_datasets
from xqg_ray.config import LANGUAGE_NAMES, GeneratorConfig
from xqg_ray.config.validate import one_generator_problems
from xqg_ray.models.generator import QueryGenerator
from xqg_ray.models.prompts import (
    causal_prompt, clean_question, draw_exemplars, exemplar_groups, load_fewshot, load_headers, prompt_assets_sha256, prompt_words,
)

LANGS = ["en", "ar", "bn", "de", "el", "es", "fi", "hi", "ja", "ko", "ro", "ru", "te", "th", "tr", "vi", "zh"]


_SCRIPT = {
    "ar": r"[\u0600-\u06FF]",
    "bn": r"[\u0980-\u09FF]",
    "el": r"[\u0370-\u03FF]",
    "hi": r"[\u0900-\u097F]",
    "ja": r"[\u3040-\u30FF]",  # kana: tells Japanese from Chinese
    "ko": r"[\uAC00-\uD7AF]",
    "ru": r"[\u0400-\u04FF]",
    "te": r"[\u0C00-\u0C7F]",
    "th": r"[\u0E00-\u0E7F]",
    "zh": r"[\u4E00-\u9FFF]",
}


def test_fewshot_exemplars() -> None:
    fs = load_fewshot()
    assert set(LANGS) <= set(fs)
    squad_titles = set()
    shared = shared_datasets()
    d = shared / "xquad" if shared else None
    if d is not None and (d / "xquad.en.json").is_file():
        en = json.loads((d / "xquad.en.json").read_text(encoding="utf-8"))["data"]
        squad_titles = {a["title"].replace("_", " ").lower() for a in en}
    assert sorted(LANGS) == sorted(LANGUAGE_NAMES)
    for lang in LANGS:
        items = fs[lang]
        assert len(items) >= 8, lang
        # each on its own topic (and title) within a language
        assert len({it["topic"] for it in items}) == len(items), lang
        assert len({it["title"] for it in items}) == len(items), lang
        for it in items:
            assert set(it) == {"title", "topic", "passage", "question"}
            assert len(it["passage"].split()) <= 40, it["title"]
            assert it["title"].lower() not in squad_titles, it["title"]
            q = it["question"]
            assert q.strip() == q and "\n" not in q and clean_question(" " + q) == q, (lang, q)
            if lang in _SCRIPT:
                assert re.search(_SCRIPT[lang], q), (lang, q)
            else:
                assert re.fullmatch(r"[\w\s\-'’?¿.,]+", q), (lang, q)
        if lang == "zh":
            assert not any(re.search(_SCRIPT["ja"], it["question"]) for it in items)


def test_causal_prompt_shape() -> None:
    fs = load_fewshot()
    long_text = " ".join(f"w{i}" for i in range(500))
    p = causal_prompt("Some title", long_text, "de", "German", fs["de"][:2], max_passage_words=50)
    assert p.endswith("\nGerman question:")
    assert p.count("German question:") == 3
    for ex in fs["de"][:2]:
        assert f"German question: {ex['question']}\n" in p
    assert "w49" in p and "w50" not in p
    # a newline inside the passage must not break the block structure
    p2 = causal_prompt("T", "line one\nline two", "es", "Spanish", fs["es"][:1])
    assert "Passage: line one line two\nSpanish question:" in p2
    p0 = causal_prompt("T", "x", "fi", "", [])
    assert p0.endswith("fi question:")


def test_clean_question() -> None:
    assert clean_question(" Wie hoch ist der Berg?\n\nTitle: Next") == "Wie hoch ist der Berg?"
    assert clean_question(' "¿Qué es esto?" Answer: nothing') == "¿Qué es esto?"
    assert clean_question(" 长城有多长？后面的文字") == "长城有多长？"
    assert clean_question(" ما هذا؟ x") == "ما هذا؟"
    assert clean_question(" ผึ้งงานเก็บอะไร\nTitle:") == "ผึ้งงานเก็บอะไร"
    assert clean_question(" Kuka keksi pianon Title: Piano") == "Kuka keksi pianon"
    assert clean_question(" Was ist das German question: Noch eine?") == "Was ist das"
    assert clean_question(" Who?<eos>") == "Who?"
    assert clean_question("\n\nTitle: x") == ""
    assert clean_question("   ") == ""
    assert clean_question(' "" ?') == ""


def _words(text: str) -> List[str]:
    return re.findall(r"\w+", text.lower())


def _windows(text: str, n: int = 12) -> set:
    w = _words(text)
    return {tuple(w[i : i + n]) for i in range(len(w) - n + 1)}


def test_exemplars_are_not_from_xquad_or_squad(shared_datasets):
    """No exemplar is an evaluated passage: no title of a SQuAD dev article (XQuAD's 48 included),
    no 12-word window shared with an XQuAD or SQuAD dev paragraph."""
    articles = json.loads((shared_datasets / "xquad" / "xquad.en.json").read_text(encoding="utf-8"))["data"]
    for part in ("part1.json", "part2.json"):
        articles += json.loads((shared_datasets / "squad-v1.1-dev" / part).read_text(encoding="utf-8"))["data"]
    titles = {a["title"].replace("_", " ").lower() for a in articles}
    contexts = set()
    for a in articles:
        for para in a["paragraphs"]:
            contexts |= _windows(para["context"])
    assert len(titles) == 48 and len(contexts) > 100_000
    exemplars = [it for items in load_fewshot().values() for it in items]
    assert not {it["title"].lower() for it in exemplars} & titles
    assert not set().union(*(_windows(it["passage"]) for it in exemplars)) & contexts
    # the check can fail: a window of an XQuAD paragraph is found
    para = articles[0]["paragraphs"][0]["context"]
    assert _windows("An exemplar quoting " + " ".join(para.split()[:12])) & contexts


def test_exemplar_pool_spreads_over_topics():
    fs = load_fewshot()
    topics = Counter(it["topic"] for it in fs["de"])
    assert sorted(topics) == ["animals", "architecture", "food", "geology", "history", "literature", "medicine",
                              "painting", "plants", "transport"]
    assert len({it["topic"] for items in fs.values() for it in items}) == 16


def test_draw_is_pinned_per_seed_passage_and_language():
    fs = load_fewshot()
    pool = fs["de"]
    titles = lambda seed, pid, lang="de", k=2: [e["title"] for e in draw_exemplars(fs[lang], k, seed, pid, lang)]  # noqa: E731
    groups = [[pool[i]["title"] for i in g] for g in exemplar_groups(pool, 2, 0, "de")]
    assert groups == [["Penicillin", "Mona Lisa"], ["Mount Fuji", "Shinkansen"], ["Rosetta Stone", "Bamboo"],
                      ["Coffee", "Don Quixote"], ["Great Wall of China", "Blue whale"]]
    assert titles(0, 1) == ["Penicillin", "Mona Lisa"]
    assert titles(0, 11) == ["Mount Fuji", "Shinkansen"]
    assert titles(5, 11) == ["Coffee", "Mona Lisa"]  # the generator's seed changes the draw
    assert titles(0, 11, "es") == ["Great Wall of China", "Penicillin"]  # so does the language
    assert titles(0, 11, k=3) == ["Coffee", "Blue whale", "Don Quixote"]
    assert titles(0, 11) == titles(0, 11)  # a rerun (or a resumed unit) draws the same
    # in pool order; the groups do not depend on the pool's order
    assert [e["title"] for e in draw_exemplars(pool[::-1], 2, 0, 11, "de")] == ["Shinkansen", "Mount Fuji"]
    # every group shows up across passages, each exemplar in about 1 of 5 prompts (the old prompt: 2 exemplars in all)
    shown = Counter(t for pid in range(2000) for t in titles(0, pid))
    assert sorted(shown) == sorted(e["title"] for e in pool) and 300 < min(shown.values()) and max(shown.values()) < 500
    assert draw_exemplars(pool, 0, 0, 1, "de") == [] and draw_exemplars([], 2, 0, 1, "de") == []
    # k=3 of 10: three full groups; the tenth exemplar's group of one is never shown
    assert sorted(len(g) for g in exemplar_groups(pool, 3, 0, "de")) == [1, 3, 3, 3]
    assert len({t for pid in range(200) for t in titles(0, pid, k=3)}) == 9


def test_draw_takes_distinct_topics():
    pool = [{"title": f"T{i}", "topic": "same" if i < 6 else f"t{i}", "question": "q"} for i in range(9)]
    for pid in range(50):
        drawn = draw_exemplars(pool, 3, 0, pid, "de")
        assert len(drawn) == 3 and len({e["topic"] for e in drawn}) == 3
        assert sum(e["topic"] == "same" for e in drawn) <= 1
    assert len(draw_exemplars(pool, 5, 0, 1, "de")) == 4  # only 4 topics: one group, short
    assert sorted(len(g) for g in exemplar_groups(pool, 5, 0, "de")) == [1, 1, 1, 1, 1, 4]


def test_target_language_header_and_label():
    fs = load_fewshot()
    ex = draw_exemplars(fs["de"], 2, 0, 1, "de")
    p = causal_prompt("Some title", "some text", "de", "German", ex, header_language="target")
    assert p.startswith("Fragen auf Deutsch zu Abschnitten aus einer englischen Enzyklopädie.\n\nTitle: Penicillin\n")
    assert p.endswith("\nPassage: some text\nDeutsche Frage:")
    assert p.count("Deutsche Frage:") == 3 and "question" not in p and "Questions in" not in p
    assert "Deutsche Frage: Wer entdeckte das Penicillin?\n" in p and "Deutsche Frage: In welchem Museum hängt die Mona Lisa?\n" in p
    english = causal_prompt("Some title", "some text", "de", "German", ex)
    assert english.startswith("Questions in German about English encyclopedia passages.\n")
    assert english.endswith("\nGerman question:")
    assert prompt_words("zh", "Chinese", "target") == ("关于英文百科全书段落的中文问题。", "中文问题:")
    assert prompt_words("zh", "Chinese") == ("Questions in Chinese about English encyclopedia passages.", "Chinese question:")
    heads = load_headers()
    assert sorted(heads) == sorted(LANGUAGE_NAMES)
    for lang, w in heads.items():
        assert set(w) == {"header", "label"} and w["label"].endswith(":") and "\n" not in w["header"], lang
        if lang in _SCRIPT:
            assert re.search(_SCRIPT[lang], w["header"]) and re.search(_SCRIPT[lang], w["label"]), lang
    # the model writing the next block's target-language label ends the question
    assert clean_question(" Wie hoch ist der Fuji Deutsche Frage: Wer?") == "Wie hoch ist der Fuji"
    assert clean_question(" 富士山有多高 中文问题: 谁") == "富士山有多高"


def test_header_language_is_a_checked_choice():
    ok = GeneratorConfig(kind="causal", model="m", languages=["de"], header_language="target")
    assert one_generator_problems("generators.g", ok) == []
    bad = GeneratorConfig(kind="causal", model="m", languages=["de"], header_language="german")
    assert one_generator_problems("generators.g", bad) == ["generators.g.header_language='german': use one of english, target"]
    assert len(prompt_assets_sha256()) == 64


class Scripted(QueryGenerator):
    """A causal QueryGenerator without a model: ``script[(pid, lang)]`` gives each draw's text in turn."""

    def __init__(self, cfg: GeneratorConfig, draw_exemplars: bool = True):  # noqa: D107 - no model to load
        self.name, self.cfg, self.draw_exemplars = "g", cfg, draw_exemplars
        self.fewshot = load_fewshot()
        self.script: Dict[Tuple[int, str], List[str]] = {}

    def prompt_ids(self, pid, title, text, lang):  # noqa: ANN001
        return (), []

    def _run(self, prompts):  # noqa: ANN001
        return [[self.script[(self.rows_[p.row][0], p.lang)].pop(0) for _ in p.seeds] for p in prompts]

    def generate_attempts(self, rows, judge=None):  # noqa: ANN001
        self.rows_ = list(rows)
        return super().generate_attempts(rows, judge=judge)


LUTHER = (1, "Martin Luther", "Martin Luther was a German priest who wrote the Ninety-five Theses in 1517.")


def test_exemplar_copy_filter_uses_the_prompts_own_exemplars():
    cfg = GeneratorConfig(kind="causal", model="x", languages=["de"], n_per_language=2, few_shot=2, seed=0)
    gen = Scripted(cfg)
    shown = gen.exemplars_for(1, "de")
    assert [e["title"] for e in shown] == ["Penicillin", "Mona Lisa"]
    drawn_copy = "Wer entdeckte das Penicillin?"  # the question of a drawn exemplar
    undrawn_copy = "Wie hoch ist der Fuji?"  # the question of an exemplar this prompt does not show
    good = "Wann schrieb Martin Luther seine Thesen?"
    gen.script = {(1, "de"): [drawn_copy, undrawn_copy, good]}
    draws = gen.generate_attempts([LUTHER])[0]
    assert [(d["round"], d["text"], d["exemplar"], d["reason"]) for d in draws] == [
        (0, drawn_copy, "exact", "exemplar_copy"), (0, undrawn_copy, None, None), (1, good, None, None)]
    # the prompt before draws showed the pool's first two (Great Wall, Coffee): neither question was a copy
    old = Scripted(cfg, draw_exemplars=False)
    assert [e["title"] for e in old.exemplars_for(1, "de")] == ["Great Wall of China", "Coffee"]
    old.script = {(1, "de"): [drawn_copy, undrawn_copy]}
    assert [d["reason"] for d in old.generate_attempts([LUTHER])[0]] == [None, None]


def test_generator_prompt_shows_the_drawn_exemplars():
    gen = Scripted(GeneratorConfig(kind="causal", model="x", languages=["de", "zh"], few_shot=2, seed=0,
                                   header_language="target"))
    p1, p2 = gen.prompt(1, "T", "x", "de"), gen.prompt(11, "T", "x", "de")
    assert "Title: Penicillin\n" in p1 and "Title: Mount Fuji\n" not in p1
    assert "Title: Mount Fuji\n" in p2 and "Title: Penicillin\n" not in p2
    assert p1.startswith("Fragen auf Deutsch") and p1.endswith("Deutsche Frage:")
    assert gen.prompt(1, "T", "x", "zh").endswith("中文问题:")
    assert gen.prompt(1, "T", "x", "de") == p1
