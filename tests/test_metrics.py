"""Tests for xqg_ray.evaluation.metrics: hand-computed R@kt, Recall@k, MRR and aggregation cases."""

from __future__ import annotations

import math

import pyarrow as pa
import pytest

from xqg_ray.evaluation import metrics
from xqg_ray.evaluation.metrics import (
    METRIC_NAMES,
    TOKENIZER,
    aggregate,
    headline_metrics,
    hit_at_kt,
    hit_at_kt_tokens,
    metric_names,
    mrr_at_k,
    per_query_metrics,
    recall_at_k,
    tokenize,
    usable_answers,
)


def filler(n: int, word: str = "filler") -> str:
    """A passage of exactly n word tokens."""
    return " ".join([word] * n)


# ---------------------------------------------------------------- tokenizer


def test_tokenizer_constant_and_tokenize():
    assert TOKENIZER == "nltk.word_tokenize(preserve_line=True)"
    # preserve_line=True: no punkt; punctuation and clitics are still split.
    assert tokenize("Hello, world. It's here.") == ["Hello", ",", "world.", "It", "'s", "here", "."]
    assert len(tokenize(filler(2500))) == 2500


def test_answer_must_match_tokenized_text():
    # The joined string is "Hello , world": an answer with the comma attached
    # does not match, exactly like the official script.
    assert hit_at_kt(["Hello, world"], ["Hello, world"], 2000) is False
    assert hit_at_kt(["Hello, world"], ["Hello , world"], 2000) is True


# ---------------------------------------------------------------- answers


def test_usable_answers():
    assert usable_answers(["yes", "no", "Yes", "Paris"]) == ["Yes", "Paris"]
    assert usable_answers(["yes", "no"]) == []
    assert usable_answers([]) == []
    assert usable_answers(None) == []
    assert usable_answers("Paris") == ["Paris"]


# ---------------------------------------------------------------- R@kt, token level


def test_token_cut_just_inside_and_just_outside():
    passages = [["a", "b", "c"], ["d", "e", "f"]]
    # Cut at 5 tokens keeps "a b c d e".
    assert hit_at_kt_tokens(passages, ["e"], 5) is True  # 5th token: just inside
    assert hit_at_kt_tokens(passages, ["f"], 5) is False  # 6th token: just outside
    assert hit_at_kt_tokens(passages, ["f"], 6) is True
    assert hit_at_kt_tokens(passages, ["d e"], 5) is True
    assert hit_at_kt_tokens(passages, ["e f"], 5) is False


def test_answer_spanning_passage_boundary():
    # Concatenation joins the last token of one passage and the first of the
    # next with a single space.
    passages = [["New"], ["York", "City"]]
    assert hit_at_kt_tokens(passages, ["New York"], 10) is True
    assert hit_at_kt_tokens(passages, ["NewYork"], 10) is False
    assert hit_at_kt(["It is in New", "York City."], ["New York City"], 2000) is True


def test_case_sensitive():
    passages = [["the", "Eiffel", "Tower"]]
    assert hit_at_kt_tokens(passages, ["Eiffel Tower"], 10) is True
    assert hit_at_kt_tokens(passages, ["eiffel tower"], 10) is False


def test_yes_no_ignored_and_skipped():
    passages = [["yes", "no", "maybe"]]
    # "yes" is in the text but does not count; the remaining answer decides.
    assert hit_at_kt_tokens(passages, ["yes", "Paris"], 10) is False
    assert hit_at_kt_tokens(passages, ["no", "maybe"], 10) is True
    # Only yes/no (or nothing): skipped, not a miss.
    assert hit_at_kt_tokens(passages, ["yes"], 10) is None
    assert hit_at_kt_tokens(passages, ["yes", "no"], 10) is None
    assert hit_at_kt_tokens(passages, [], 10) is None
    # "Yes" is not exactly "yes", so it is usable.
    assert hit_at_kt_tokens([["Yes"]], ["Yes"], 10) is True


def test_substring_not_whole_token():
    # The official check is a plain substring test on the joined string.
    assert hit_at_kt_tokens([["Parisian", "cafe"]], ["Paris"], 10) is True


def test_stops_reading_after_cut():
    def passages():
        yield ["a", "b", "c"]
        yield ["d", "e"]
        raise AssertionError("read a passage beyond the cut")

    assert hit_at_kt_tokens(passages(), ["e"], 5) is True


# ---------------------------------------------------------------- R@kt, text level


def test_text_level_2kt_cut():
    # 1998 filler tokens, then "Zanzibar"(1999th) "island"(2000th) "harbour"(2001st).
    texts = [filler(1998), "Zanzibar island harbour", filler(10, "tail")]
    assert len(tokenize(texts[0])) == 1998
    assert hit_at_kt(texts, ["Zanzibar island"], 2000) is True  # ends at token 2000
    assert hit_at_kt(texts, ["island harbour"], 2000) is False  # needs token 2001
    assert hit_at_kt(texts, ["harbour"], 2000) is False
    assert hit_at_kt(texts, ["island harbour"], 5000) is True
    assert hit_at_kt(texts, ["tail"], 5000) is True
    assert hit_at_kt(texts, ["yes"], 5000) is None


# ---------------------------------------------------------------- Recall / MRR


def test_recall_at_k():
    ranked = ["d1", "d2", "d3", "d4"]
    assert recall_at_k(ranked, "d1", 1) == 1.0
    assert recall_at_k(ranked, "d3", 2) == 0.0
    assert recall_at_k(ranked, "d3", 3) == 1.0
    assert recall_at_k(ranked, "d9", 20) == 0.0
    assert recall_at_k([], "d1", 5) == 0.0
    assert recall_at_k(ranked, None, 5) is None
    assert recall_at_k(ranked, "", 5) is None
    with pytest.raises(ValueError):
        recall_at_k(ranked, "d1", 0)


def test_mrr_at_k():
    ranked = ["d1", "d2", "d3", "d4"]
    assert mrr_at_k(ranked, "d1", 10) == 1.0
    assert mrr_at_k(ranked, "d2", 10) == 0.5
    assert mrr_at_k(ranked, "d4", 10) == 0.25
    assert mrr_at_k(ranked, "d4", 3) == 0.0  # outside the top k
    assert mrr_at_k(ranked, "d9", 10) == 0.0
    assert mrr_at_k(ranked, None, 10) is None
    # First occurrence counts if a docid is repeated.
    assert mrr_at_k(["d1", "d2", "d2"], "d2", 10) == 0.5


# ---------------------------------------------------------------- per-query table


PASSAGES = {
    "p1": "Paris is the capital of France.",
    "p2": "Berlin is the capital of Germany.",
    "p3": "Madrid is the capital of Spain.",
}


def make_queries():
    return [
        {"qid": "q1", "lang": "fi", "answers": ["Paris"], "gold_docid": "p1"},
        {"qid": "q2", "lang": "fi", "answers": ["Madrid"], "gold_docid": "p3"},
        {"qid": "q3", "lang": "ja", "answers": ["yes"], "gold_docid": "p2"},
        {"qid": "q4", "lang": "ja", "answers": ["Rome"], "gold_docid": None},
    ]


RANKINGS = {
    "q1": ["p1", "p2", "p3"],
    "q2": ["p1", "p2", "p3"],
    "q3": ["p2", "p1"],
    "q4": ["p3"],
}


def test_per_query_metrics_table():
    table = per_query_metrics(make_queries(), RANKINGS, PASSAGES)
    assert table.column_names == ["qid", "lang"] + METRIC_NAMES
    for name in METRIC_NAMES:
        assert table.schema.field(name).type == pa.float64()
    rows = table.to_pylist()
    assert [r["qid"] for r in rows] == ["q1", "q2", "q3", "q4"]
    q1, q2, q3, q4 = rows
    assert (q1["R@2kt"], q1["R@5kt"], q1["Recall@1"], q1["MRR@10"]) == (1.0, 1.0, 1.0, 1.0)
    assert (q2["R@2kt"], q2["Recall@1"], q2["Recall@5"], q2["MRR@10"]) == (1.0, 0.0, 1.0, pytest.approx(1 / 3))
    # yes-only question: R@kt skipped, gold-based metrics still computed.
    assert q3["R@2kt"] is None and q3["R@5kt"] is None
    assert q3["Recall@1"] == 1.0
    # no gold passage: gold-based metrics skipped, R@kt computed.
    assert q4["R@2kt"] == 0.0
    assert q4["Recall@1"] is None and q4["MRR@10"] is None


def test_per_query_metrics_cut_matches_text_level():
    # R@2kt and R@5kt differ when the answer sits between token 2000 and 5000.
    passages = {"a": filler(1998), "b": "Zanzibar island harbour", "c": filler(3000, "tail")}
    queries = [
        {"qid": "in", "lang": "sw", "answers": ["Zanzibar island"], "gold_docid": "b"},
        {"qid": "out", "lang": "sw", "answers": ["island harbour"], "gold_docid": "c"},
    ]
    rankings = {"in": ["a", "b", "c"], "out": ["a", "b", "c"]}
    rows = per_query_metrics(queries, rankings, passages).to_pylist()
    assert (rows[0]["R@2kt"], rows[0]["R@5kt"]) == (1.0, 1.0)
    assert (rows[1]["R@2kt"], rows[1]["R@5kt"]) == (0.0, 1.0)
    for q, row in zip(queries, rows):
        texts = [passages[d] for d in rankings[q["qid"]]]
        assert row["R@2kt"] == float(hit_at_kt(texts, q["answers"], 2000))
        assert row["R@5kt"] == float(hit_at_kt(texts, q["answers"], 5000))
    assert rows[0]["Recall@1"] == 0.0 and rows[0]["MRR@10"] == 0.5
    assert rows[1]["MRR@10"] == pytest.approx(1 / 3)


def test_per_query_metrics_custom_ks():
    table = per_query_metrics(make_queries(), RANKINGS, PASSAGES, kt=(1,), recall_ks=(2,), mrr_k=3)
    assert table.column_names == ["qid", "lang", "R@1kt", "Recall@2", "MRR@3"]
    table = per_query_metrics(make_queries(), RANKINGS, PASSAGES, kt=(), recall_ks=(1, 2), mrr_k=20)
    assert table.column_names == ["qid", "lang", "Recall@1", "Recall@2", "MRR@20"]
    assert table.column("MRR@20").to_pylist() == [1.0, pytest.approx(1 / 3), 1.0, None]


def test_metric_names_and_headline():
    assert METRIC_NAMES == metric_names() == ["R@2kt", "R@5kt", "Recall@1", "Recall@5", "Recall@20", "MRR@10"]
    assert metric_names([2, 5], [1, 5, 20], 20) == ["R@2kt", "R@5kt", "Recall@1", "Recall@5", "Recall@20", "MRR@20"]
    assert metric_names((1,), (), 3) == ["R@1kt", "MRR@3"]
    assert headline_metrics(METRIC_NAMES) == ["R@2kt", "R@5kt", "MRR@10"]
    assert headline_metrics(metric_names(mrr_k=20)) == ["R@2kt", "R@5kt", "MRR@20"]
    assert headline_metrics(metric_names((), (5,), 7)) == ["MRR@7"]


def test_missing_qid_raises():
    rankings = {k: v for k, v in RANKINGS.items() if k != "q2"}
    with pytest.raises(ValueError, match="q2"):
        per_query_metrics(make_queries(), rankings, PASSAGES)


def test_duplicate_qid_raises():
    queries = make_queries() + [make_queries()[0]]
    with pytest.raises(ValueError, match="q1"):
        per_query_metrics(queries, RANKINGS, PASSAGES)


def test_missing_passage_text_raises_only_when_needed():
    # p9 is read before the cut: error.
    with pytest.raises(KeyError, match="p9"):
        per_query_metrics(
            [{"qid": "q", "lang": "fi", "answers": ["x"], "gold_docid": None}],
            {"q": ["p1", "p9"]}, PASSAGES,
        )
    # p9 is past the 5000-token cut: never needed, never looked up.
    big = {"big": filler(6000)}
    table = per_query_metrics(
        [{"qid": "q", "lang": "fi", "answers": ["x"], "gold_docid": "p9"}],
        {"q": ["big", "p9"]}, big,
    )
    assert table.column("Recall@5").to_pylist() == [1.0]


def test_each_passage_tokenized_once(monkeypatch):
    calls: list[str] = []
    real = metrics.tokenize

    def counting(text):
        calls.append(text)
        return real(text)

    monkeypatch.setattr(metrics, "tokenize", counting)
    queries = [
        {"qid": f"q{i}", "lang": "fi", "answers": ["Nowhere"], "gold_docid": None}
        for i in range(20)
    ]
    rankings = {f"q{i}": ["p1", "p2", "p3"] for i in range(20)}
    per_query_metrics(queries, rankings, PASSAGES)
    assert sorted(calls) == sorted(PASSAGES.values())


# ---------------------------------------------------------------- aggregate


def test_aggregate_macro_is_unweighted_and_skips_nulls():
    # fi: 3 counted questions, all hits (1.0); ja: 1 counted miss (0.0) plus one
    # yes/no-only question that must not enter the denominator.
    # Macro = (1.0 + 0.0) / 2 = 0.5; a query-weighted mean would be 0.75.
    queries = [
        {"qid": "f1", "lang": "fi", "answers": ["Paris"], "gold_docid": "p1"},
        {"qid": "f2", "lang": "fi", "answers": ["Berlin"], "gold_docid": "p1"},
        {"qid": "f3", "lang": "fi", "answers": ["Madrid"], "gold_docid": "p2"},
        {"qid": "j1", "lang": "ja", "answers": ["Rome"], "gold_docid": "p1"},
        {"qid": "j2", "lang": "ja", "answers": ["no", "yes"], "gold_docid": None},
    ]
    rankings = {q["qid"]: ["p1", "p2", "p3"] for q in queries}
    table = per_query_metrics(queries, rankings, PASSAGES)
    agg = aggregate(table, METRIC_NAMES)

    fi, ja = agg["per_language"]["fi"], agg["per_language"]["ja"]
    assert list(agg["per_language"]) == ["fi", "ja"]
    assert fi["R@2kt"] == 1.0 and fi["n_R@2kt"] == 3 and fi["n"] == 3
    assert ja["R@2kt"] == 0.0 and ja["n_R@2kt"] == 1 and ja["n"] == 2
    assert agg["macro"]["R@2kt"] == pytest.approx(0.5)
    assert agg["macro"]["n"] == 5
    assert agg["macro"]["n_R@2kt"] == 4
    # Recall@1: fi = 2/3 (f1, f2 gold p1 at rank 1; f3 gold p2), ja = 1/1.
    assert fi["Recall@1"] == pytest.approx(2 / 3)
    assert ja["Recall@1"] == 1.0 and ja["n_Recall@1"] == 1
    assert agg["macro"]["Recall@1"] == pytest.approx((2 / 3 + 1.0) / 2)
    # MRR@10: fi = (1 + 1 + 1/2) / 3.
    assert fi["MRR@10"] == pytest.approx(2.5 / 3)
    for block in [fi, ja, agg["macro"]]:
        for m in METRIC_NAMES:
            assert isinstance(block[m], float)


def test_aggregate_language_without_values():
    table = pa.table({
        "qid": ["a", "b", "c"],
        "lang": ["fi", "fi", "te"],
        "R@2kt": pa.array([1.0, 0.0, None], type=pa.float64()),
    })
    agg = aggregate(table, ["R@2kt"])
    assert agg["per_language"]["te"]["R@2kt"] is None
    assert agg["per_language"]["te"]["n"] == 1
    assert agg["per_language"]["te"]["n_R@2kt"] == 0
    # te has no value, so macro averages fi only.
    assert agg["macro"]["R@2kt"] == 0.5
    assert agg["macro"]["n_languages_R@2kt"] == 1
    empty = aggregate(table.slice(2), ["R@2kt"])
    assert empty["macro"]["R@2kt"] is None
    assert not math.isnan(agg["macro"]["R@2kt"])


def test_a_shared_token_cache_tokenizes_each_passage_once_across_calls(monkeypatch):
    calls = []
    real = metrics.tokenize
    monkeypatch.setattr(metrics, "tokenize", lambda text: calls.append(text) or real(text))
    plain = per_query_metrics(make_queries(), RANKINGS, PASSAGES)
    per_call = len(calls)
    calls.clear()
    cache: dict = {}
    # Two "systems" over the same corpus: the second call tokenizes nothing.
    first = per_query_metrics(make_queries(), RANKINGS, PASSAGES, token_cache=cache)
    assert len(calls) == per_call == len(cache) and sorted(calls) == sorted(PASSAGES[d] for d in cache)
    second = per_query_metrics(make_queries(), {q: list(reversed(r)) for q, r in RANKINGS.items()}, PASSAGES, token_cache=cache)
    assert len(calls) == per_call  # every passage the reversed rankings read was tokenized by the first call
    assert first.equals(plain) and cache == {d: real(PASSAGES[d]) for d in cache}
    assert second.equals(per_query_metrics(make_queries(), {q: list(reversed(r)) for q, r in RANKINGS.items()}, PASSAGES))
