"""Question quality: is a generated question in its language, original, well formed, and about its passage?

Generated questions can only help retrieval if they are good queries for their
own passage.  The demo's Gemma questions were not (issue 15): their own passage
ranked first for 28% of them against 80% for human questions, 5.2% were in the
wrong language (Hindi 17.5%), some copied the few-shot exemplar (50 of 240
German questions name its "Great Wall"; the Arabic exemplar's question came
back verbatim 5 times), and some were loops ("Apollo 16 की Apollo Apollo के 16
के 16 16 Apollo ...").  Each measure here is a pure function over plain Python
and numpy values, so the generate stage can filter with it and metrics.json /
the report can count with it, from the same definitions:

* **target language** (:func:`target_language`): py3langid 0.4.0 (langid.py's
  naive Bayes over byte n-grams; model inside the 4.6 MB wheel, numpy only, no
  pickle, loaded once per process, about 2.6 s here), restricted to the run's
  languages plus English.  Chosen by accuracy on the 7,140 XQuAD questions of
  ar, de, es, hi, zh, en, restricted to those six, on this 2-core machine:
  py3langid 99.99% (1 error: an English question), 93 us a question;
  langid 1.1.6 99.83% (12), 168 us, 5.1 MB, pickled model; lingua 2.1.1 (2.2.0
  is not on the index) 99.40% (43), 206 us, 96 MB; langdetect 1.0.9 97.11%
  (206; zh 88.4%), 5 ms.  On all 12 XQuAD languages (14,280 questions,
  restricted to the 12) py3langid gets 99.91% (ro 4, tr 4, el 3, en 1, vi 1).
  Unrestricted (140 languages) it gives 177 of the 5,950 de, es, hi, ar, zh
  questions to a neighbour (zh -> wuu/yue 120, hi -> mr/ne 28, ar -> arz/ary 22):
  hence the restriction.
* **exemplar copies** (:func:`exemplar_copies`): "exact" = the normalised
  question equals a normalised exemplar question; "near" = at least 0.7 of the
  smaller of the two character 5-gram sets shared with an exemplar question,
  or the question names one of the exemplar's marks (its title's word bigrams,
  a one-word title, or caller-given keywords: :func:`exemplar_marks`) that its own passage does not
  contain.  The XQuAD questions of de, es, zh, ar, hi never saw the exemplars,
  so every flag among them is a false one: none of the 5 x 1,190 is flagged
  (largest 5-gram overlap 0.647, "Wie hoch ist die ..." against "Wie hoch ist
  der Fuji?"; 0.5 would flag 3).
* **duplicates within a passage** (:func:`duplicates_within_passage`): a later
  question whose normalised text equals, or whose character 5-gram Jaccard with
  an earlier kept question of the same passage is at least 0.8.  Among XQuAD's
  human questions of one paragraph this flags 117 of 14,280 (83 exact
  repeats, as "Wer gewann den Super Bowl XLIX?" asked twice).
* **degenerate** (:func:`degenerate`): a loop.  More than 45% of the tokens
  repeat an earlier one (6 tokens or more), one token three times in a row, or
  more than 40% of the character 4-grams repeat (24 of them or more).  None of
  the 14,280 XQuAD questions of the 12 languages is flagged (0.00%; the largest
  values there are 0.389, 2 and 0.339).
* **length** (:func:`length_stats`), **round trip** (:func:`round_trip_ranks`,
  :func:`round_trip_summary`): the rank of a question's own passage among the
  run's passages under the run's encoder, ties by passage id as in
  :mod:`xqg_ray.retrieval.topk`.

:func:`xqg_ray.evaluation.question_quality.quality_report` puts them together per language and overall.

Normalisation (one place, :func:`normalise`): NFKC, casefold, every punctuation
or symbol character a space, whitespace collapsed.  Tokens (:func:`tokens`): the
normalised text split on spaces, each CJK ideograph or kana its own token
(Chinese and Japanese have no spaces; Thai stays one token a phrase).
"""

from __future__ import annotations

import copy
import functools
import re
import unicodedata
from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence

import numpy as np

# Han ideographs (incl. extension A and compatibility) and kana: one token each.
_CJK = re.compile(r"([\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff])")

EXACT = "exact"
NEAR = "near"


def normalise(text: str) -> str:
    """NFKC, casefolded, punctuation and symbols as spaces, whitespace collapsed (any script)."""
    text = unicodedata.normalize("NFKC", text or "").casefold()
    # Categories P* and S*: "?", "¿", "؟", "।", "？" all go, combining marks (Hindi vowel signs) stay.
    text = "".join(" " if unicodedata.category(c)[0] in "PS" else c for c in text)
    return " ".join(text.split())


def tokens(text: str) -> List[str]:
    """Words of the normalised text; a CJK ideograph or kana is a word of its own."""
    return _CJK.sub(r" \1 ", normalise(text)).split()


def char_ngrams(text: str, n: int) -> List[str]:
    """Character n-grams of the normalised text (spaces included, so word boundaries count)."""
    s = normalise(text)
    if not s:
        return []
    if len(s) < n:
        return [s]
    return [s[i : i + n] for i in range(len(s) - n + 1)]


# -- target language ---------------------------------------------------------------
@functools.lru_cache(maxsize=1)
def _full_identifier():
    """py3langid's model, loaded once per process (about 2.6 s, 140 languages)."""
    from py3langid.langid import MODEL_FILE, LanguageIdentifier

    return LanguageIdentifier.from_model_file(MODEL_FILE)


@functools.lru_cache(maxsize=16)
def _identifier(langs: tuple):
    """A copy restricted to ``langs`` (set_languages rebinds the copy's arrays; the shared model is untouched)."""
    ident = copy.copy(_full_identifier())
    ident.set_languages(list(langs))
    return ident


def identifiable_languages() -> List[str]:
    """The language codes the identifier knows (ISO 639-1 where one exists)."""
    return list(_full_identifier().labels)


def target_language(
    texts: Sequence[str], expected_langs: Sequence[str], allowed_langs: Iterable[str]
) -> List[Optional[bool]]:
    """Per text, whether its identified language is its expected one.

    The identifier chooses only among ``allowed_langs`` (the run's languages
    plus English: a question that is really English is the usual failure, and a
    choice among 140 languages would confuse close ones such as hi/mr or es/gl).
    None when it cannot tell: an empty text, or an expected language that is
    not allowed or that the model does not know (:func:`identifiable_languages`);
    codes of ``allowed_langs`` it does not know are left out.  The raw text is
    classified (py3langid reads bytes n-grams; punctuation is evidence too).
    """
    if len(texts) != len(expected_langs):
        raise ValueError(f"{len(texts)} texts but {len(expected_langs)} expected languages")
    known = set(identifiable_languages())
    allowed = tuple(sorted({lang for lang in allowed_langs if lang in known}))
    ident = _identifier(allowed) if allowed else None
    out: List[Optional[bool]] = []
    for text, lang in zip(texts, expected_langs):
        if ident is None or lang not in allowed or not normalise(text):
            out.append(None)
        else:
            out.append(ident.classify(text)[0] == lang)
    return out


# -- exemplar copies ---------------------------------------------------------------
# 5-grams span most word pairs in alphabetic scripts and two to three words in
# Chinese.  0.7 is above the largest overlap of any XQuAD question of de, es,
# zh, ar, hi with its language's exemplars (0.647; 0.5 would flag 3 of 5,950).
EXEMPLAR_NGRAM = 5
EXEMPLAR_OVERLAP = 0.7


def overlap(a: Sequence[str], b: Sequence[str]) -> float:
    """|A & B| / min(|A|, |B|) over the distinct grams: 1.0 when one is inside the other, 0.0 if either is empty."""
    sa, sb = set(a), set(b)
    if not sa or not sb:
        return 0.0
    return len(sa & sb) / min(len(sa), len(sb))


def jaccard(a: Sequence[str], b: Sequence[str]) -> float:
    """|A & B| / |A | B| over the distinct grams (0.0 when both are empty)."""
    sa, sb = set(a), set(b)
    return len(sa & sb) / len(sa | sb) if sa | sb else 0.0


def exemplar_marks(exemplar: Mapping[str, Any]) -> List[str]:
    """Normalised phrases that name an exemplar's passage: its title's word bigrams of two words of at
    least 3 characters ("great wall", not "of china": a preposition makes a bigram common), the title
    itself when it is one word of at least 4 characters, and its ``keywords`` (target-language names the
    title does not give, e.g. "mauer" for the Great Wall in German)."""
    words = tokens(exemplar.get("title", ""))
    marks = [f"{a} {b}" for a, b in zip(words, words[1:]) if len(a) >= 3 and len(b) >= 3]
    if len(words) == 1 and len(words[0]) >= 4:
        marks.append(words[0])
    marks += [normalise(k) for k in exemplar.get("keywords", ()) if normalise(k)]
    return list(dict.fromkeys(marks))


def _names(text_norm: str, mark: str) -> bool:
    """``mark`` occurs in ``text_norm`` on word boundaries (anywhere for CJK marks, which have none)."""
    if _CJK.search(mark):
        return mark in text_norm
    return f" {mark} " in f" {text_norm} "


def exemplar_copies(
    questions: Sequence[str],
    exemplars: Sequence[Mapping[str, Any]],
    ngram: int = EXEMPLAR_NGRAM,
    threshold: float = EXEMPLAR_OVERLAP,
    passages: Optional[Sequence[str]] = None,
) -> List[Optional[str]]:
    """Per question: "exact", "near" or None.

    ``exemplars`` are the few-shot exemplars the generator saw for the
    question's language (``{"title", "passage", "question"}`` as in
    ``assets/fewshot.json``, optionally ``"keywords"``).

    * "exact": ``normalise(question) == normalise(exemplar["question"])``.
    * "near": :func:`overlap` of their character ``ngram``-grams is at least
      ``threshold`` (a copy with a word changed, the exemplar question inside a
      longer one, or a fragment of it), or the question names one of
      :func:`exemplar_marks` that its own passage (``passages[i]``, when given)
      does not contain: naming the Great Wall is a leak for a passage about a
      football match, not for one about China.
    """
    if passages is not None and len(passages) != len(questions):
        raise ValueError(f"{len(questions)} questions but {len(passages)} passages")
    ex_norm = [normalise(e.get("question", "")) for e in exemplars]
    ex_grams = [char_ngrams(e.get("question", ""), ngram) for e in exemplars]
    ex_marks = [exemplar_marks(e) for e in exemplars]
    out: List[Optional[str]] = []
    for i, q in enumerate(questions):
        qn = normalise(q)
        if not qn:
            out.append(None)
            continue
        if qn in ex_norm:
            out.append(EXACT)
            continue
        grams = char_ngrams(q, ngram)
        own = normalise(passages[i]) if passages is not None else ""
        near = any(overlap(grams, g) >= threshold for g in ex_grams) or any(
            _names(qn, m) and not _names(own, m) for marks in ex_marks for m in marks
        )
        out.append(NEAR if near else None)
    return out


# -- duplicates --------------------------------------------------------------------
# Jaccard, not overlap: a short question inside a longer one about the same
# passage can be a different question ("Wer gewann?" / "Wer gewann 1995?").
DUPLICATE_NGRAM = 5
DUPLICATE_JACCARD = 0.8


def duplicates_within_passage(
    questions: Sequence[str], ngram: int = DUPLICATE_NGRAM, threshold: float = DUPLICATE_JACCARD
) -> List[bool]:
    """Per question of one passage, whether it repeats an earlier kept one.

    Repeat: the same normalised text, or character ``ngram``-gram
    :func:`jaccard` of at least ``threshold`` (the same question with a word
    changed).  The first of a group is kept and compared against; empty
    questions are never duplicates (they are counted as empty).
    """
    kept: List[tuple] = []
    out: List[bool] = []
    for q in questions:
        qn = normalise(q)
        grams = char_ngrams(q, ngram)
        dup = bool(qn) and any(qn == kn or jaccard(grams, kg) >= threshold for kn, kg in kept)
        out.append(dup)
        if qn and not dup:
            kept.append((qn, grams))
    return out


# -- degenerate repetition ---------------------------------------------------------
# Thresholds set above the largest value among all 14,280 XQuAD questions (12
# languages), which flag none of them; the Apollo loop is caught by its token
# share (7 of 12 tokens repeat: 0.583).  XQuAD maxima: token share 0.389 (a
# question naming "Harvard" three times), run 2 ("die die" is German grammar),
# 4-gram share 0.339 (the same question).
MIN_TOKENS = 6              # "Who? Who?" is too short to call a loop
MAX_REPEATED_TOKENS = 0.45  # share of tokens that repeat an earlier one (Apollo example: 7 of 12)
MAX_RUN = 2                 # the same token 3 times in a row
CHAR_GRAM = 4
MIN_CHAR_GRAMS = 24         # below that a repeated gram is chance
MAX_REPEATED_GRAMS = 0.4    # share of character 4-grams that repeat an earlier one (loops in unspaced Thai)


def repetition(text: str) -> Dict[str, float]:
    """The signals :func:`degenerate` thresholds: the share of tokens that repeat an earlier token (0.0
    under ``MIN_TOKENS``), the longest run of one token, and the share of character 4-grams that repeat
    an earlier one (0.0 under ``MIN_CHAR_GRAMS``)."""
    toks = tokens(text)
    run = best_run = 0
    for i, t in enumerate(toks):
        run = run + 1 if i and toks[i - 1] == t else 1
        best_run = max(best_run, run)
    grams = char_ngrams(text, CHAR_GRAM)
    return {
        "repeated_tokens": (len(toks) - len(set(toks))) / len(toks) if len(toks) >= MIN_TOKENS else 0.0,
        "max_run": best_run,
        "repeated_grams": (len(grams) - len(set(grams))) / len(grams) if len(grams) >= MIN_CHAR_GRAMS else 0.0,
    }


def degenerate(text: str) -> bool:
    """A looping text: more than ``MAX_REPEATED_TOKENS`` of its tokens repeats, one token more than
    ``MAX_RUN`` times in a row, or more than ``MAX_REPEATED_GRAMS`` of its character 4-grams repeats."""
    r = repetition(text)
    return r["repeated_tokens"] > MAX_REPEATED_TOKENS or r["max_run"] > MAX_RUN or r["repeated_grams"] > MAX_REPEATED_GRAMS


# -- length ------------------------------------------------------------------------
def length_stats(texts: Sequence[str]) -> Dict[str, Any]:
    """Characters (of the stripped text) and :func:`tokens`: mean, min, max; how many and what share are
    empty (nothing left after :func:`normalise`: blank or only punctuation, as "?")."""
    n = len(texts)
    chars = [len((t or "").strip()) for t in texts]
    toks = [len(tokens(t)) for t in texts]
    empty = sum(1 for t in texts if not normalise(t))

    def stats(values: List[int]) -> Dict[str, Any]:
        if not values:
            return {"mean": None, "min": None, "max": None}
        return {"mean": sum(values) / len(values), "min": min(values), "max": max(values)}

    return {"n": n, "chars": stats(chars), "tokens": stats(toks), "empty": empty, "empty_rate": empty / n if n else None}


# -- round trip --------------------------------------------------------------------
def round_trip_ranks(
    question_vecs: np.ndarray,
    question_passage_rows: Sequence[int],
    passage_vecs: np.ndarray,
    metric: str = "ip",
    passage_ids: Optional[Sequence[int]] = None,
    block: int = 1024,
) -> np.ndarray:
    """Rank (1 = first) of each question's own passage among all ``passage_vecs``, exhaustively.

    ``question_passage_rows[i]`` is the row of question i's passage in
    ``passage_vecs``.  Scores are float32 inner products (``metric="ip"``,
    higher first) or squared L2 distances (``"l2"``, lower first), as the
    flat FAISS indexes compute them; equal scores are ordered by passage id
    ascending (``passage_ids``, default the row numbers), the rule of
    :func:`xqg_ray.retrieval.topk.merge_topk`, so the rank is the position the
    passage would have in an exhaustive search.  int64, one per question.
    """
    if metric not in ("ip", "l2"):
        raise ValueError(f"metric must be 'ip' or 'l2', not {metric!r}")
    q = np.ascontiguousarray(question_vecs, dtype=np.float32)
    p = np.ascontiguousarray(passage_vecs, dtype=np.float32)
    rows = np.asarray(question_passage_rows, dtype=np.int64)
    ids = np.arange(len(p), dtype=np.int64) if passage_ids is None else np.asarray(passage_ids, dtype=np.int64)
    if q.ndim != 2 or p.ndim != 2 or q.shape[1] != p.shape[1]:
        raise ValueError(f"question vectors {q.shape} and passage vectors {p.shape} need one dimension")
    if len(rows) != len(q) or len(ids) != len(p):
        raise ValueError("one passage row per question and one id per passage are needed")
    if len(rows) and (rows.min() < 0 or rows.max() >= len(p)):
        raise ValueError(f"passage rows must be in [0, {len(p)})")
    ranks = np.empty(len(q), dtype=np.int64)
    p_sq = np.einsum("ij,ij->i", p, p)
    # Blocks of questions keep the score matrix at block x passages.
    for start in range(0, len(q), block):
        qb = q[start : start + block]
        s = qb @ p.T
        if metric == "l2":
            s = np.einsum("ij,ij->i", qb, qb)[:, None] + p_sq[None, :] - 2.0 * s
            s = -s  # lower distance first: rank by the negation like an inner product
        own_rows = rows[start : start + block]
        own = s[np.arange(len(qb)), own_rows][:, None]
        own_id = ids[own_rows][:, None]
        better = (s > own) | ((s == own) & (ids[None, :] < own_id))
        ranks[start : start + block] = 1 + better.sum(axis=1)
    return ranks


def round_trip_summary(ranks: Sequence[int], k: Sequence[int] = (1, 5, 10)) -> Dict[str, Any]:
    """Counts and rates of own passage within the top k, mean reciprocal rank, median rank (None if no ranks)."""
    r = np.asarray(ranks, dtype=np.int64)
    n = int(len(r))
    out: Dict[str, Any] = {"n": n}
    for kk in k:
        hits = int((r <= kk).sum())
        out[f"hits@{kk}"] = hits
        out[f"rate@{kk}"] = hits / n if n else None
    out["mrr"] = float(np.mean(1.0 / r)) if n else None
    out["median_rank"] = float(np.median(r)) if n else None
    return out
