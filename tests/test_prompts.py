"""The hand-written few-shot exemplars, the causal prompt's shape and question clean-up (no model needed)."""

from __future__ import annotations

import json
import re

from helpers_data import shared_datasets
from xqg_ray.models.prompts import causal_prompt, clean_question, load_fewshot

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
    for lang in LANGS:
        items = fs[lang]
        assert len(items) >= 3, lang
        for it in items:
            assert set(it) == {"title", "passage", "question"}
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
