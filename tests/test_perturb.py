"""Tests for xqg_ray.evaluation.perturb: seeded, exact-count, Unicode-safe query noise."""

from __future__ import annotations

import unicodedata
from collections import Counter

import numpy as np
import pyarrow as pa
import pytest

from xqg_ray.config import PERTURBATION_KINDS, PerturbationConfig
from xqg_ray.errors import UserError
from xqg_ray.evaluation.perturb import (
    apply_noise, graphemes, keyboard_neighbours, perturb_table,
    perturb_text, script_of, split_words,
)


def latin_text(n_letters: int, seed: int = 0) -> str:
    """Words of 3-8 lowercase letters, no letter equal to its neighbour, n_letters in all."""
    rng = np.random.default_rng(seed)
    words, total = [], 0
    while total < n_letters:
        size = min(int(rng.integers(3, 9)), n_letters - total)
        w = ""
        while len(w) < size:
            c = "abcdefghijklmnopqrstuvwxyz"[int(rng.integers(26))]
            if not w or c != w[-1]:
                w += c
        words.append(w)
        total += size
    return " ".join(words)


def is_subsequence(short, long) -> bool:
    it = iter(long)
    return all(any(c == d for d in it) for c in short)


def rng(seed=1):
    return np.random.default_rng(seed)


# ---------------------------------------------------------------- segmentation


def test_graphemes_keep_marks_with_their_base():
    assert graphemes("กี่ทำ") == ["กี่", "ทำ"]  # Thai vowel + tone mark; SARA AM extends
    assert graphemes("क्षत्रिय") == ["क्ष", "त्रि", "य"]  # virama conjuncts and matra
    assert graphemes("مَا") == ["مَ", "ا"]  # Arabic fatha stays on meem
    assert graphemes("e\u0301x") == ["e\u0301", "x"]  # decomposed é
    assert graphemes("\u1100\u1161\u11a8") == ["\u1100\u1161\u11a8"]  # conjoining jamo
    assert graphemes("\u0301a") == ["\u0301", "a"]  # a leading orphan stays apart
    assert "".join(graphemes("ประเทศไทย 北京 क्या")) == "ประเทศไทย 北京 क्या"


def test_split_words_spaces_and_no_space_scripts():
    assert split_words(" a, b  c ") == (["a,", "b", "c"], [" ", " ", "  ", " "])
    assert split_words("北京 大学？") == (["北", "京", "大", "学", "？"], ["", "", " ", "", "", ""])
    assert split_words("iPhone 12 ราคา")[0] == ["iPhone", "12", "ร", "า", "ค", "า"]
    assert split_words("") == ([], [""])


def test_keyboard_neighbours():
    assert keyboard_neighbours("a", "en") == "sqwz"
    assert keyboard_neighbours("S", "en") == "ADWEZX"
    assert keyboard_neighbours("z", "de") == "tugh"  # QWERTZ: z sits where y is
    assert keyboard_neighbours("ф", "ru") == "ыйця"
    assert keyboard_neighbours("北", "zh") == ""
    assert script_of("ก") == "Thai" and script_of("北") == "Han" and script_of("!") is None


# ---------------------------------------------------------------- exact counts


@pytest.mark.parametrize("rate,k", [(0.1, 50), (0.2, 100)])
def test_exact_character_edit_counts(rate, k):
    text = latin_text(500)
    assert sum(c.isalpha() for c in text) == 500

    out, n = apply_noise(text, "en", "keyboard", rate, rng())
    assert n == k and len(out) == len(text)
    diff = [i for i, (a, b) in enumerate(zip(text, out)) if a != b]
    assert len(diff) == k
    assert all(out[i] in keyboard_neighbours(text[i], "en") for i in diff)

    out, n = apply_noise(text, "en", "drop", rate, rng())
    assert n == k and len(out) == len(text) - k and is_subsequence(out, text)

    out, n = apply_noise(text, "en", "insert", rate, rng())
    assert n == k and len(out) == len(text) + k and is_subsequence(text, out)

    out, n = apply_noise(text, "en", "swap", rate, rng())
    assert n == k and len(out) == len(text)
    swapped, i = 0, 0
    while i < len(text) - 1:
        if out[i] != text[i] and (out[i], out[i + 1]) == (text[i + 1], text[i]):
            swapped += 1
            i += 2
        else:
            assert out[i] == text[i]
            i += 1
    assert swapped == k
    assert sum(a != b for a, b in zip(text, out)) == 2 * k

    out, n = apply_noise(text, "en", "char", rate, rng())
    assert n == k and out != text


@pytest.mark.parametrize("rate,k", [(0.1, 20), (0.2, 40)])
def test_exact_word_edit_counts(rate, k):
    words = [f"w{i:03d}" for i in range(200)]
    text = " ".join(words)
    out, n = apply_noise(text, "en", "word_drop", rate, rng())
    kept = out.split(" ")
    assert n == k and len(kept) == 200 - k and is_subsequence(kept, words)
    out, n = apply_noise(text, "en", "word_order", rate, rng())
    got = out.split(" ")
    assert n == k and sorted(got) == words
    pairs = [i for i in range(199) if got[i] != words[i] and (got[i], got[i + 1]) == (words[i + 1], words[i])]
    assert len(pairs) == k and sum(a != b for a, b in zip(words, got)) == 2 * k


def test_rounding_is_half_up_and_zero_rate_is_identity():
    assert apply_noise("ab", "en", "drop", 0.25, rng())[1] == 1  # 0.5 -> 1, not banker's 0
    assert apply_noise("abcd", "en", "keyboard", 0.1, rng())[1] == 0  # 0.4 -> 0
    for kind in PERTURBATION_KINDS:
        assert apply_noise("Where is Paris?", "en", kind, 0.0, rng()) == ("Where is Paris?", 0)


def test_never_empty():
    for kind in PERTURBATION_KINDS:
        rate = 0.5 if kind in ("swap", "word_order") else 1.0
        for text in ("a", "北", "ก", "क्ष", "x?"):
            out = perturb_text(text, "xx", PerturbationConfig("p", kind, rate, 3), "q")
            assert any(unicodedata.category(c)[0] == "L" for c in out), (kind, text, out)
    assert perturb_text("a", "en", PerturbationConfig("p", "drop", 1.0), "q") == "a"
    assert perturb_text("北京", "zh", PerturbationConfig("p", "word_drop", 1.0), "q") in ("北", "京")
    assert perturb_text("", "en", PerturbationConfig("p", "drop", 1.0), "q") == ""
    assert perturb_text("123 ?", "en", PerturbationConfig("p", "char", 1.0), "q") == "123 ?"  # no letters


# ---------------------------------------------------------------- multi-byte scripts

SCRIPT_TEXTS = {
    "th": "ประเทศไทยมีกี่จังหวัดและเมืองหลวงของประเทศไทยชื่ออะไรกรุงเทพมหานคร",
    "zh": "北京大学是中国最早的国立综合性大学创办于一八九八年初名京师大学堂",
    "ar": "مَا هِيَ عَاصِمَةُ فَرَنْسَا وَمَتَى تَأَسَّسَتِ المَدِينَةُ الكَبِيرَةُ",
    "hi": "भारत की राजधानी क्या है और क्षत्रिय राजाओं ने कितने वर्ष शासन किया",
}


@pytest.mark.parametrize("lang", sorted(SCRIPT_TEXTS))
@pytest.mark.parametrize("kind", PERTURBATION_KINDS)
def test_multibyte_scripts_stay_valid(lang, kind):
    text = SCRIPT_TEXTS[lang]
    rate = 0.2
    out, n = apply_noise(text, lang, kind, rate, rng(5))
    assert n > 0 and out != text
    out.encode("utf-8")  # valid text (no lone surrogates)
    # No edit invents characters: the query's own letters are the pool.
    assert set(out) <= set(text)
    units_in, units_out = graphemes(text), graphemes(out)
    assert all(unicodedata.category(u[0])[0] != "M" for u in units_out)  # no orphan marks
    if kind in ("swap", "drop", "word_order", "word_drop"):
        # Moving or dropping whole clusters: every output cluster is an input cluster.
        assert not Counter(units_out) - Counter(units_in)
    if kind in ("swap", "word_order"):
        assert sorted(out) == sorted(text)


def test_script_table_fallback_stays_in_script():
    for ch, script in (("ก", "Thai"), ("北", "Han"), ("م", "Arabic"), ("क", "Devanagari")):
        out, n = apply_noise(ch, "xx", "keyboard", 1.0, rng())
        assert n == 1 and out != ch and script_of(out) == script
        assert unicodedata.category(out)[0] == "L"


# ---------------------------------------------------------------- determinism, specs, tables


def test_seeded_deterministic_and_seed_sensitive():
    text = latin_text(200, seed=4)
    for kind in PERTURBATION_KINDS:
        spec = PerturbationConfig("p", kind, 0.2, seed=11)
        a = perturb_text(text, "en", spec, "q7")
        assert a == perturb_text(text, "en", spec, "q7") != text
        assert perturb_text(text, "en", PerturbationConfig("p", kind, 0.2, seed=12), "q7") != a
        assert perturb_text(text, "en", spec, "q8") != a
    # The name is a label only: two specs differing only by name agree.
    assert perturb_text(text, "en", PerturbationConfig("a", "char", 0.1, 1), "q") == \
        perturb_text(text, "en", PerturbationConfig("b", "char", 0.1, 1), "q")


def test_perturb_table_keeps_rows_and_is_order_independent():
    qids = [f"q{i}" for i in range(6)]
    texts = ["Where is Paris?", "北京大学在哪里", None, "ประเทศไทย", "Где Москва?", "a"]
    langs = ["en", "zh", "en", "th", "ru", "en"]
    t = pa.table({"qid": qids, "lang": langs, "text": pa.array(texts, pa.large_string()),
                  "answers": [[str(i)] for i in range(6)]})
    spec = PerturbationConfig("noisy", "char", 0.3, seed=2)
    out = perturb_table(t, spec)
    assert out.schema == t.schema
    assert out["qid"].to_pylist() == qids and out["answers"].equals(t["answers"])
    got = out["text"].to_pylist()
    assert got[2] is None and all(g for i, g in enumerate(got) if i != 2)
    assert got[0] == perturb_text(texts[0], "en", spec, "q0") != texts[0]
    rev = perturb_table(t.take(list(range(5, -1, -1))), spec)
    assert rev["text"].to_pylist() == got[::-1]
    with pytest.raises(UserError, match="text"):
        perturb_table(t.drop(["text"]), spec)


def test_an_invalid_spec_is_refused_by_the_functions():
    # The spec's messages are tested in test_validation.py; here, that the functions check it.
    with pytest.raises(UserError, match="kind"):
        perturb_text("abc", "en", PerturbationConfig("p", "nope", 0.1), "q")
    with pytest.raises(UserError, match=r"^perturbation.rate=1.5: must be a number in \[0, 1\]$"):
        perturb_table(pa.table({"qid": ["q"], "lang": ["en"], "text": ["abc"]}), PerturbationConfig("p", "drop", 1.5))
