"""Question-quality measures (xqg_ray.evaluation.quality) on hand-made cases with exact expected values."""

from __future__ import annotations

import json

import numpy as np
import pytest

from xqg_ray.evaluation import quality as Q
from xqg_ray.evaluation import question_quality as QQ
from xqg_ray.retrieval.topk import exact_topk

APOLLO = "Apollo 16 की Apollo Apollo के 16 के 16 16 Apollo spacecraft"

# Two of the German few-shot exemplars, as in assets/fewshot.json.
DE_EXEMPLARS = [
    {
        "title": "Great Wall of China",
        "passage": "The Great Wall of China is a series of fortifications ... Ming dynasty ...",
        "question": "In welcher Dynastie wurde der größte Teil der heute erhaltenen Chinesischen Mauer gebaut?",
    },
    {"title": "Coffee", "passage": "Coffee is brewed from the roasted seeds ...", "question": "Woraus wird Kaffee zubereitet?"},
]


def test_normalise_and_tokens_across_scripts() -> None:
    assert Q.normalise("  ¿Cuántas  LUNAS tiene Júpiter?  ") == "cuántas lunas tiene júpiter"
    assert Q.normalise("ماذا يجمع النحل؟") == "ماذا يجمع النحل"
    assert Q.tokens("工蜂从花中采集什么？") == ["工", "蜂", "从", "花", "中", "采", "集", "什", "么"]
    # Devanagari vowel signs are marks, not punctuation: the words stay whole.
    assert Q.tokens("अपोलो 16 मिशन कब था?") == ["अपोलो", "16", "मिशन", "कब", "था"]


def test_target_language_flags_an_english_question_in_the_hindi_slot() -> None:
    texts = [
        "What year did the Apollo 16 mission land on the Moon?",
        "अपोलो 16 मिशन चंद्रमा पर किस वर्ष उतरा?",
        "",
        "Wann landete Apollo 16 auf dem Mond?",
        "In welchem Jahr landete Apollo 16 auf dem Mond?",
    ]
    expected = ["hi", "hi", "hi", "de", "xx"]
    # "xx" is not among the allowed languages: the identifier cannot say yes or no.
    assert Q.target_language(texts, expected, ["hi", "de", "en", "xx"]) == [False, True, None, True, None]


def test_target_language_chooses_only_among_the_allowed_languages() -> None:
    # XQuAD questions that all 140 languages would give to a neighbour (mr, wuu, arz, gl).
    texts = ["लेडी गागा ने क्या गाया?", "谁是梅尔菲伯爵？", "ماذا كان هويهوي؟", "¿Cuánto duraría esta coalición?"]
    langs = ["hi", "zh", "ar", "es"]
    assert Q.target_language(texts, langs, langs + ["en"]) == [True, True, True, True]
    # Spanish is not allowed, so a Spanish question can only be judged "not German".
    assert Q.target_language(["¿En qué país se inventó el piano?"], ["es"], ["de", "en"]) == [None]
    assert Q.target_language(["¿En qué país se inventó el piano?"], ["de"], ["de", "en"]) == [False]
    with pytest.raises(ValueError, match="2 texts but 1 expected"):
        Q.target_language(["a", "b"], ["de"], ["de"])


def test_exemplar_copies_exact_near_and_clean() -> None:
    questions = [
        # the exemplar's question, other case and punctuation
        "in welcher Dynastie wurde der größte Teil der heute erhaltenen Chinesischen Mauer gebaut",
        # the exemplar's title, in English inside a German question
        "Wie lang ist die Great Wall of China?",
        # the exemplar's question with one word changed
        "In welcher Dynastie wurde der größte Teil der heute erhaltenen Chinesischen Mauer errichtet?",
        # an ordinary question on another passage
        "Wer gewann den Super Bowl 50?",
        # shares the exemplar's opening only
        "Woraus wird Bier gebraut?",
        "",
    ]
    assert Q.exemplar_copies(questions, DE_EXEMPLARS) == [Q.EXACT, Q.NEAR, Q.NEAR, None, None, None]


def test_exemplar_title_is_no_leak_when_the_own_passage_names_it() -> None:
    questions = ["Wie lang ist die Great Wall?", "Wie lang ist die Great Wall?", "Wann wurde die Mauer gebaut?"]
    passages = ["The Great Wall is long.", "Super Bowl 50 was an American football game.", "The Berlin Wall fell in 1989."]
    assert Q.exemplar_copies(questions, DE_EXEMPLARS, passages=passages) == [None, Q.NEAR, None]
    # Target-language keywords of an exemplar count like its title.
    keyed = [dict(DE_EXEMPLARS[0], keywords=["Mauer"]), DE_EXEMPLARS[1]]
    assert Q.exemplar_copies(questions, keyed, passages=passages) == [None, Q.NEAR, Q.NEAR]
    assert Q.exemplar_marks(keyed[0]) == ["great wall", "mauer"]
    assert Q.exemplar_marks(keyed[1]) == ["coffee"]


def test_exemplar_copies_in_arabic_and_chinese() -> None:
    ar = [{"title": "Coffee", "passage": "", "question": "أين نشأت القهوة على الأرجح؟"}]
    zh = [{"title": "Printing press", "passage": "", "question": "古腾堡在哪座城市发明了活字印刷机？"}]
    assert Q.exemplar_copies(["أين نشأت القهوة على الأرجح ؟", "أين نشأت القهوة؟", "من فاز بالسوبر بول 50؟"], ar) == [
        Q.EXACT,
        Q.NEAR,
        None,
    ]
    assert Q.exemplar_copies(["古腾堡在哪座城市发明了印刷机？", "谁赢得了超级碗？"], zh) == [Q.NEAR, None]


def test_overlap_and_jaccard_values() -> None:
    assert Q.overlap(["ab", "bc", "cd"], ["bc", "cd"]) == 1.0
    assert Q.jaccard(["ab", "bc", "cd"], ["bc", "cd", "de"]) == 0.5
    assert Q.overlap([], ["ab"]) == 0.0
    assert Q.jaccard([], []) == 0.0


def test_duplicates_within_passage_keep_the_first() -> None:
    questions = [
        "Wer gewann den Super Bowl 50?",
        "wer gewann den super bowl 50",  # exact after normalisation
        "Wer verlor den Super Bowl 50?",
        "Wer gewann den Super Bowl 50 ?",  # exact again: still compared with the first
        "Wer gewann denn den Super Bowl 50?",  # near: one word added
        "",
        "",
    ]
    assert Q.duplicates_within_passage(questions) == [False, True, False, True, True, False, False]
    # A chain: the third is near the flagged second (5-gram Jaccard 0.88) but not the kept first (0.78).
    chain = [
        "Wer gewann den Super Bowl 50 in Santa Clara?",
        "Wer gewann den Super Bowl 50 in Santa Clara 2016?",
        "Wer gewann den Super Bowl 50 in Santa Clara 2016 knapp?",
    ]
    assert Q.duplicates_within_passage(chain) == [False, True, False]


def test_degenerate_flags_loops_only() -> None:
    assert Q.repetition(APOLLO) == {"repeated_tokens": 7 / 12, "max_run": 2, "repeated_grams": 0.375}
    assert Q.degenerate(APOLLO) is True
    assert Q.degenerate("什么是什么是什么是什么是什么是") is True  # 15 character tokens, 3 distinct
    assert Q.degenerate("Wann wann wann wurde es gebaut?") is True  # one token three times in a row
    assert Q.degenerate("ผู้ชนะคือใครผู้ชนะคือใครผู้ชนะคือใครผู้ชนะคือใคร") is True  # unspaced Thai loop: 4-grams
    # Real questions with repeats (XQuAD): German "die die", a name three times, Chinese 石油 three times.
    assert Q.degenerate("Wie heißt der Prozess, mit dem sich die die Primzahleigenschaft einer Zahl n prüfen lässt?") is False
    assert Q.degenerate(
        "Wo liegen die Harvard Medical School, School of Dental Medicine und School of Public Health?"
    ) is False
    assert Q.degenerate("石油危机导致石油公司在哪个地区增加石油供应?") is False
    # XQuAD's largest token share (0.389) and 4-gram share (0.339), under 0.45 and 0.4.
    harvard = (
        "Unde este poziționată Școala de Medicină Harvard, școala de Medicină Dentară Harvard, "
        "și școala de Sănătate Publică Harvard?"
    )
    assert Q.repetition(harvard) == {"repeated_tokens": 7 / 18, "max_run": 1, "repeated_grams": 40 / 118}
    assert Q.degenerate(harvard) is False
    assert Q.degenerate("Who? Who?") is False
    assert Q.degenerate("") is False


def test_length_stats_exact() -> None:
    stats = Q.length_stats(["Wer gewann?", "  ", "工蜂从花中采集什么？"])
    assert stats == {
        "n": 3,
        "chars": {"mean": 7.0, "min": 0, "max": 11},
        "tokens": {"mean": 11 / 3, "min": 0, "max": 9},
        "empty": 1,
        "empty_rate": 1 / 3,
    }
    assert Q.length_stats([]) == {
        "n": 0,
        "chars": {"mean": None, "min": None, "max": None},
        "tokens": {"mean": None, "min": None, "max": None},
        "empty": 0,
        "empty_rate": None,
    }


def test_round_trip_ranks_with_a_tie_broken_by_passage_id() -> None:
    # Rows 0 and 2 are the same vector; their ids 10 and 5 put row 2 first on a tie.
    passages = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0]], dtype=np.float32)
    ids = [10, 20, 5]
    questions = np.array([[1.0, 0.0], [1.0, 0.0], [0.5, 1.0], [0.0, 1.0]], dtype=np.float32)
    rows = [0, 2, 1, 0]
    expected = [2, 1, 1, 3]
    assert Q.round_trip_ranks(questions, rows, passages, passage_ids=ids).tolist() == expected
    assert Q.round_trip_ranks(questions, rows, passages, metric="l2", passage_ids=ids).tolist() == expected
    # Default ids are the row numbers: row 0 now wins the tie.
    assert Q.round_trip_ranks(questions, rows, passages).tolist() == [1, 2, 1, 2]
    # Blocks of one question give the same ranks.
    assert Q.round_trip_ranks(questions, rows, passages, passage_ids=ids, block=1).tolist() == expected


def test_round_trip_ranks_ip_and_l2_differ_on_unnormalised_vectors() -> None:
    passages = np.array([[1.0, 0.0], [3.0, 0.0]], dtype=np.float32)
    q = np.array([[1.0, 0.0]], dtype=np.float32)
    assert Q.round_trip_ranks(q, [0], passages, metric="ip").tolist() == [2]  # 1 < 3
    assert Q.round_trip_ranks(q, [0], passages, metric="l2").tolist() == [1]  # 0 < 4
    with pytest.raises(ValueError, match="metric must be 'ip' or 'l2'"):
        Q.round_trip_ranks(q, [0], passages, metric="cos")
    with pytest.raises(ValueError, match=r"passage rows must be in \[0, 2\)"):
        Q.round_trip_ranks(q, [2], passages)


def test_round_trip_ranks_agree_with_the_exhaustive_search() -> None:
    rng = np.random.default_rng(7)
    passages = rng.standard_normal((40, 8)).astype(np.float32)
    ids = rng.permutation(1000)[:40].astype(np.int64)
    questions = rng.standard_normal((25, 8)).astype(np.float32)
    rows = rng.integers(0, 40, 25)
    _, found = exact_topk(questions, passages, ids, 40)
    expected = [int(np.flatnonzero(found[i] == ids[r])[0]) + 1 for i, r in enumerate(rows)]
    assert Q.round_trip_ranks(questions, rows, passages, passage_ids=ids).tolist() == expected


def test_round_trip_summary_exact() -> None:
    assert Q.round_trip_summary([1, 2, 1, 7], k=(1, 5)) == {
        "n": 4,
        "hits@1": 2,
        "rate@1": 0.5,
        "hits@5": 3,
        "rate@5": 0.75,
        "mrr": (1 + 1 / 2 + 1 + 1 / 7) / 4,
        "median_rank": 1.5,
    }
    assert Q.round_trip_summary([], k=(1,)) == {"n": 0, "hits@1": 0, "rate@1": None, "mrr": None, "median_rank": None}


def test_quality_report_counts_per_language_and_overall() -> None:
    rows = [
        {"passage_id": 1, "lang": "de", "text": "Woraus wird Kaffee zubereitet?"},  # exemplar, exact
        {"passage_id": 1, "lang": "hi", "text": "What year did the Apollo 16 mission land on the Moon?"},  # English
        {"passage_id": 2, "lang": "de", "text": "Wer gewann den Super Bowl 50?"},  # fine
        {"passage_id": 2, "lang": "de", "text": "Wer gewann den Super Bowl 50?"},  # duplicate
        {"passage_id": 3, "lang": "hi", "text": APOLLO},  # degenerate
        {"passage_id": 3, "lang": "hi", "text": ""},  # empty
    ]
    report = QQ.quality_report(rows, exemplars={"de": DE_EXEMPLARS}, ranks=[1, 3, 1, 1, 12, 40])
    json.dumps(report)  # ready for metrics.json as it is
    assert report["overall"]["n"] == 6
    assert report["overall"]["counts"] == {
        "empty": 1,
        "wrong_language": 1,
        "exemplar_exact": 1,
        "exemplar_near": 0,
        "duplicate": 1,
        "degenerate": 1,
        "language_unknown": 1,
        "rejected": 5,
    }
    assert report["overall"]["rates"]["rejected"] == 5 / 6
    assert list(report["by_language"]) == ["de", "hi"]
    de, hi = report["by_language"]["de"], report["by_language"]["hi"]
    assert (de["n"], de["counts"]["exemplar_exact"], de["counts"]["duplicate"], de["counts"]["rejected"]) == (3, 1, 1, 2)
    assert (hi["counts"]["wrong_language"], hi["counts"]["degenerate"], hi["counts"]["empty"]) == (1, 1, 1)
    assert hi["rates"]["rejected"] == 1.0
    assert de["round_trip"]["hits@1"] == 3 and hi["round_trip"]["hits@10"] == 1
    assert report["overall"]["length"]["empty"] == 1
    assert QQ.question_flags(rows[:2], exemplars={"de": DE_EXEMPLARS}) == [
        {"empty": False, "wrong_language": False, "exemplar": Q.EXACT, "duplicate": False, "degenerate": False},
        {"empty": False, "wrong_language": True, "exemplar": None, "duplicate": False, "degenerate": False},
    ]
    # The same question on two passages is no duplicate: duplicates are within one passage.
    twice = [{"passage_id": p, "lang": "de", "text": "Wer gewann den Super Bowl 50?"} for p in (1, 2)]
    assert [f["duplicate"] for f in QQ.question_flags(twice)] == [False, False]
    with pytest.raises(ValueError, match="6 rows but 1 round-trip ranks"):
        QQ.quality_report(rows, ranks=[1])


def test_quality_report_of_no_questions() -> None:
    counts = {
        "empty": 0,
        "wrong_language": 0,
        "exemplar_exact": 0,
        "exemplar_near": 0,
        "duplicate": 0,
        "degenerate": 0,
        "language_unknown": 0,
        "rejected": 0,
    }
    assert QQ.quality_report([]) == {
        "overall": {
            "n": 0,
            "counts": counts,
            "rates": dict.fromkeys(counts),
            "length": {
                "n": 0,
                "chars": {"mean": None, "min": None, "max": None},
                "tokens": {"mean": None, "min": None, "max": None},
                "empty": 0,
                "empty_rate": None,
            },
        },
        "by_language": {},
    }
