"""Retrieval metrics for cross-lingual dense retrieval (questions in language L, English passages).

Two families of metrics are computed per query:

* ``R@Nkt`` -- the XOR-Retrieve metric, following the official XOR-TyDi
  ``eval_xor_retrieve.py`` script: walk the retrieved passages in rank order,
  word-tokenize each, concatenate the token lists, stop as soon as at least
  ``N*1000`` tokens are collected, cut to exactly ``N*1000`` tokens, join with
  single spaces, and count a hit if any usable answer (not exactly ``"yes"`` or
  ``"no"``) is a case-sensitive substring of that string.  Questions without a
  usable answer are skipped (value ``None``) and are not in the denominator.
* ``Recall@k`` / ``MRR@k`` against a single gold passage id (``None`` when the
  query has no gold passage).

The one deliberate deviation from the official script is the tokenizer: the
script calls ``word_tokenize(text)``, which needs the punkt sentence model; punkt
cannot be downloaded in our environment, so we call
``word_tokenize(text, preserve_line=True)`` (no sentence splitting).  The only
difference is that sentence-internal periods stay attached to the preceding
word, which can shift where the N*1000-token cut falls.  ``TOKENIZER`` records
this choice so that metrics.json says which variant produced the numbers.

Aggregation: a language's value is the mean over its non-null per-query values;
the macro value is the unweighted mean over languages that have a value (this
is how XOR-Retrieve reports its headline number).  A system whose encoder was
not trained on a query language has that language marked not covered and left
out of its macro (``coverage.py``).
"""

from __future__ import annotations

import math
from typing import Any, Iterable, Mapping, Sequence

import pyarrow as pa

TOKENIZER = "nltk.word_tokenize(preserve_line=True)"



def metric_names(kt: Sequence[int] = (2, 5), recall_k: Sequence[int] = (1, 5, 20), mrr_k: int = 10) -> list[str]:
    """The metric columns, in order: ``R@{N}kt`` per N in ``kt``, ``Recall@{k}`` per k in
    ``recall_k``, then ``MRR@{mrr_k}`` (the run's ``eval.kt``, ``eval.recall_k``, ``eval.mrr_k``).

    The one place these names are spelled; everything else derives them from here
    or reads them from metrics.json's ``metric_names``.
    """
    return [f"R@{n}kt" for n in kt] + [f"Recall@{k}" for k in recall_k] + [f"MRR@{mrr_k}"]


def headline_metrics(names: Sequence[str]) -> list[str]:
    """Of a run's ``metric_names``: the R@kt metrics (XOR-Retrieve's headline) and the MRR
    (rank-sensitive: it still moves where R@kt saturates on small corpora), in that order.

    These get a per-language table, a bar chart and the experiment tables; Recall@k
    stays in metrics.json.
    """
    return [n for n in names if n.startswith("R@")] + [n for n in names if n.startswith("MRR@")]


# The names with the default eval settings.
METRIC_NAMES = metric_names()

# Answers the official script drops: XOR-TyDi boolean questions cannot be
# answered by span matching, so they are excluded from XOR-Retrieve scoring.
_BOOLEAN_ANSWERS = frozenset({"yes", "no"})


def usable_answers(answers: Sequence[str] | str | None) -> list[str]:
    """Answers that count for R@kt: every answer that is not exactly "yes" or "no".

    The comparison is exact and case-sensitive, as in the official script
    ("Yes" is kept).  Empty strings are also kept, as the official script does
    (they trivially match); the data loader is the place to clean those.  A bare
    string is treated as a single answer rather than iterated character by
    character, which would silently turn "Paris" into five one-letter answers.
    """
    if answers is None:
        return []
    if isinstance(answers, str):
        answers = [answers]
    return [a for a in answers if a not in _BOOLEAN_ANSWERS]


def tokenize(text: str) -> list[str]:
    """Word-tokenize one passage exactly as R@kt does (see ``TOKENIZER``).

    Kept as a separate function so callers can memoise per passage: thousands of
    queries retrieve the same passages and tokenization dominates the cost.
    """
    # Imported at first use: nltk pulls in scipy.stats, about 0.9 CPU-s in every driver that
    # imports the pipeline, most of which (a resumed or killed run, `xqg-ray prepare`) never evaluates.
    from nltk.tokenize import word_tokenize

    return word_tokenize(text, preserve_line=True)


def _concat_tokens(token_lists: Iterable[Sequence[str]], max_tokens: int) -> list[str]:
    """Concatenate passages' tokens in rank order, stopping once >= max_tokens, cut to max_tokens.

    Accepts any iterable (including a lazy generator) so that passages past the
    cut are never tokenized.
    """
    tokens: list[str] = []
    for toks in token_lists:
        tokens.extend(toks)
        if len(tokens) >= max_tokens:
            break
    return tokens[:max_tokens]


def _any_answer_in(tokens: Sequence[str], answers: Sequence[str]) -> bool:
    # Joining with single spaces is what lets an answer match across a passage
    # boundary -- same as the official script, so we keep it.
    joined = " ".join(tokens)
    return any(answer in joined for answer in answers)


def hit_at_kt_tokens(
    token_lists: Iterable[Sequence[str]],
    answers: Sequence[str] | str | None,
    max_tokens: int,
) -> bool | None:
    """R@kt hit on pre-tokenized passages (in rank order); None if no usable answer.

    ``max_tokens`` is N*1000 for R@Nkt; small values are handy in tests.
    """
    if max_tokens < 0:
        raise ValueError(f"max_tokens must be >= 0, got {max_tokens}")
    usable = usable_answers(answers)
    if not usable:
        return None
    return _any_answer_in(_concat_tokens(token_lists, max_tokens), usable)


def hit_at_kt(
    texts: Iterable[str],
    answers: Sequence[str] | str | None,
    max_tokens: int,
) -> bool | None:
    """R@kt hit on raw passage texts (in rank order); None if no usable answer."""
    # A generator keeps tokenization lazy: passages beyond the cut are skipped.
    return hit_at_kt_tokens((tokenize(t) for t in texts), answers, max_tokens)


def _check_k(k: int) -> None:
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")


def recall_at_k(ranked_docids: Sequence[str], gold_docid: str | None, k: int) -> float | None:
    """1.0 if the gold passage is in the top k, else 0.0; None when there is no gold passage."""
    _check_k(k)
    if not gold_docid:
        return None
    return 1.0 if gold_docid in list(ranked_docids[:k]) else 0.0


def mrr_at_k(ranked_docids: Sequence[str], gold_docid: str | None, k: int) -> float | None:
    """1/rank of the gold passage if it is within the top k, else 0.0; None without gold."""
    _check_k(k)
    if not gold_docid:
        return None
    for rank, docid in enumerate(ranked_docids[:k], start=1):
        if docid == gold_docid:
            return 1.0 / rank
    return 0.0


def _as_float(value: bool | float | None) -> float | None:
    if value is None:
        return None
    return float(value)


def per_query_metrics(
    queries: Sequence[Mapping[str, Any]],
    rankings: Mapping[str, Sequence[str]],
    passage_texts: Mapping[str, str],
    kt: Sequence[int] = (2, 5),
    recall_ks: Sequence[int] = (1, 5, 20),
    mrr_k: int = 10,
    token_cache: dict[str, list[str]] | None = None,
) -> pa.Table:
    """One row per query: qid, lang, then a float64 column per metric (null when skipped).

    Column names are ``metric_names(kt, recall_ks, mrr_k)``; with the defaults
    they are ``METRIC_NAMES``.
    Rows follow the input query order.

    Raises ValueError for a qid missing from ``rankings`` (a lost ranking must
    not be scored as a miss) or for a duplicated qid (rows are later paired by
    qid for significance tests, which needs qids to be unique), and KeyError
    for a retrieved docid with no text when R@kt needs that passage.
    ``token_cache``: docid -> its R@kt tokens, shared by calls over one corpus (filled here).
    """
    if any(n < 1 for n in kt):
        raise ValueError(f"kt values must be >= 1, got {list(kt)}")
    for k in recall_ks:
        _check_k(k)
    _check_k(mrr_k)

    names = metric_names(kt, recall_ks, mrr_k)
    kt_names, recall_names, mrr_name = names[:len(kt)], names[len(kt):-1], names[-1]
    if len(set(names)) != len(names):
        raise ValueError(f"duplicate metric columns: {names}")
    max_tokens = max(kt) * 1000 if kt else 0

    # Memo: many queries share passages, and word_tokenize is by far the slowest step.  Never
    # module-level, so a changed corpus can never hit a stale entry: local to the call, or
    # ``token_cache``, which a caller shares across the calls of one corpus (the evaluate stage:
    # every system and query set retrieves from the same passages; 1,000 passages take 0.4 s).
    if token_cache is None:
        token_cache = {}

    def passage_tokens(docid: str) -> list[str]:
        toks = token_cache.get(docid)
        if toks is None:
            try:
                text = passage_texts[docid]
            except KeyError:
                raise KeyError(f"retrieved docid {docid!r} has no passage text") from None
            toks = tokenize(text)
            token_cache[docid] = toks
        return toks

    qids: list[str] = []
    langs: list[str] = []
    columns: dict[str, list[float | None]] = {name: [] for name in names}
    seen: set[str] = set()

    for query in queries:
        qid = query["qid"]
        if qid in seen:
            raise ValueError(f"duplicate qid {qid!r} in queries")
        seen.add(qid)
        if qid not in rankings:
            raise ValueError(f"qid {qid!r} has no ranking")
        ranked = list(rankings[qid])
        qids.append(qid)
        langs.append(query["lang"])

        usable = usable_answers(query.get("answers"))
        if usable and kt:
            # Concatenate once up to the largest cut; a smaller cut is a prefix of
            # it, because the official walk for N*1000 stops at the first passage
            # that reaches N*1000 tokens and the longer walk passes the same point.
            tokens = _concat_tokens((passage_tokens(d) for d in ranked), max_tokens)
            for n, name in zip(kt, kt_names):
                columns[name].append(float(_any_answer_in(tokens[: n * 1000], usable)))
        else:
            for name in kt_names:
                columns[name].append(None)

        gold = query.get("gold_docid")
        for k, name in zip(recall_ks, recall_names):
            columns[name].append(_as_float(recall_at_k(ranked, gold, k)))
        columns[mrr_name].append(_as_float(mrr_at_k(ranked, gold, mrr_k)))

    arrays = [pa.array(qids, type=pa.string()), pa.array(langs, type=pa.string())]
    arrays += [pa.array(columns[name], type=pa.float64()) for name in names]
    return pa.Table.from_arrays(arrays, names=["qid", "lang"] + names)


def _mean(values: Sequence[float]) -> float | None:
    return float(math.fsum(values) / len(values)) if values else None


def aggregate(per_query: pa.Table, metric_names: Sequence[str] = METRIC_NAMES) -> dict:
    """Per-language and macro averages of per-query metrics.

    Returns ``{"per_language": {lang: {metric: value, "n": n_queries,
    "n_<metric>": n_counted}}, "macro": {metric: value, "n": n_queries,
    "n_<metric>": n_counted, "n_languages_<metric>": languages averaged}}``.
    Nulls (and NaNs) are skipped, so ``n_<metric>`` is the denominator actually
    used.  A value is None when nothing was counted.  The macro value is the
    unweighted mean over languages with a value, so small languages weigh as
    much as large ones (the XOR-Retrieve convention).  Languages are sorted.
    """
    langs = per_query.column("lang").to_pylist()
    cols = {m: per_query.column(m).to_pylist() for m in metric_names}

    rows_by_lang: dict[str, list[int]] = {}
    for i, lang in enumerate(langs):
        rows_by_lang.setdefault(lang, []).append(i)

    per_language: dict[str, dict[str, Any]] = {}
    for lang in sorted(rows_by_lang):
        rows = rows_by_lang[lang]
        entry: dict[str, Any] = {}
        for m in metric_names:
            vals = [cols[m][i] for i in rows]
            vals = [float(v) for v in vals if v is not None and not math.isnan(v)]
            entry[m] = _mean(vals)
            entry[f"n_{m}"] = len(vals)
        entry["n"] = len(rows)
        per_language[lang] = entry

    return {"per_language": per_language, "macro": macro_average(per_language, metric_names, per_query.num_rows)}


def macro_average(per_language: Mapping[str, Mapping[str, Any]], metric_names: Sequence[str], n: int) -> dict:
    """The macro block of :func:`aggregate` from its per-language blocks (every one given is averaged).

    ``{metric: unweighted mean over languages with a value, "n_<metric>": queries
    counted, "n_languages_<metric>": languages averaged, "n": n}``; ``n`` is the
    caller's query count (every query, or those of the languages kept).
    """
    macro: dict[str, Any] = {}
    for m in metric_names:
        lang_vals = [e[m] for e in per_language.values() if e[m] is not None]
        macro[m] = _mean(lang_vals)
        macro[f"n_{m}"] = sum(e[f"n_{m}"] for e in per_language.values())
        macro[f"n_languages_{m}"] = len(lang_vals)
    macro["n"] = n
    return macro
