"""Question quality of a run: per generate unit from its stored draws, summed over units for metrics.json.

The generate stage stores every draw of a partition with its flags
(``ATTEMPTS_SCHEMA``) and commits, per unit, :func:`filter_counts` (draws kept
and rejected, by reason) and :func:`unit_quality` (mergeable
:func:`~xqg_ray.evaluation.quality.tally` per selection and language: the
flags need the passages, which only the generate stage reads).  The evaluate
stage adds the units' records up with :func:`run_quality` from the published
``generated/NAME`` manifests alone, never reading a passage or a question (its
I/O, the human questions and the round trip live in
:mod:`xqg_ray.stages.question_quality`).

Both selections are measured: ``unfiltered`` (the first draws with any text, the
questions the data file's ``queries`` hold) and ``kept`` (what the filter
kept), each in :func:`~xqg_ray.evaluation.quality.quality_report`'s shape.
"""

from __future__ import annotations

from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence

import numpy as np
import pyarrow as pa

from ..schemas import KEPT, PASSED, UNFILTERED
from .quality import (
    EXACT, NEAR, degenerate, duplicates_within_passage, exemplar_copies, normalise, round_trip_summary,
    target_language, tokens,
)
from .question_filter import REJECT_ORDER, SELECTED

# -- per-question flags and their mergeable tallies -----------------------------
def question_flags(
    rows: Sequence[Mapping[str, Any]],
    exemplars: Optional[Mapping[str, Sequence[Mapping[str, Any]]]] = None,
    allowed_langs: Optional[Iterable[str]] = None,
) -> List[Dict[str, Any]]:
    """Per row (``{"passage_id", "lang", "text"}``, optionally ``"passage"``: its passage's text), every
    measure: ``empty``, ``wrong_language`` (None: cannot tell), ``exemplar`` ("exact"/"near"/None),
    ``duplicate`` (within the rows of one passage id, in row order), ``degenerate``."""
    langs = [str(r["lang"]) for r in rows]
    texts = [str(r.get("text") or "") for r in rows]
    allowed = set(allowed_langs) if allowed_langs is not None else set(langs) | {"en"}
    right = target_language(texts, langs, allowed)
    copies: List[Optional[str]] = [None] * len(rows)
    for lang in sorted(set(langs)):
        idx = [i for i, l in enumerate(langs) if l == lang]
        ex = (exemplars or {}).get(lang, ())
        if ex:
            has_passage = all("passage" in rows[i] for i in idx)
            found = exemplar_copies(
                [texts[i] for i in idx], ex, passages=[str(rows[i]["passage"]) for i in idx] if has_passage else None
            )
            for i, c in zip(idx, found):
                copies[i] = c
    dups: List[bool] = [False] * len(rows)
    by_passage: Dict[int, List[int]] = {}
    for i, r in enumerate(rows):
        by_passage.setdefault(int(r["passage_id"]), []).append(i)
    for idx in by_passage.values():
        for i, d in zip(idx, duplicates_within_passage([texts[i] for i in idx])):
            dups[i] = d
    return [
        {
            "empty": not normalise(t),
            "wrong_language": None if ok is None else not ok,
            "exemplar": c,
            "duplicate": d,
            "degenerate": bool(normalise(t)) and degenerate(t),
        }
        for t, ok, c, d in zip(texts, right, copies, dups)
    ]


# What quality_report counts, per question flags (question_flags), in its order.
# A question flagged by any of them is "rejected": what a filter would drop.
FLAGGED = {
    "empty": lambda f: f["empty"],
    "wrong_language": lambda f: f["wrong_language"] is True,
    "exemplar_exact": lambda f: f["exemplar"] == EXACT,
    "exemplar_near": lambda f: f["exemplar"] == NEAR,
    "duplicate": lambda f: f["duplicate"],
    "degenerate": lambda f: f["degenerate"],
}
MEASURES = tuple(FLAGGED)


def tally(texts: Sequence[str], flags: Sequence[Mapping[str, Any]]) -> Dict[str, Any]:
    """Mergeable counts of one group of questions and their :func:`question_flags`: ``n``, ``counts`` (each
    of ``MEASURES``, ``language_unknown``, ``rejected``) and character / token ``chars`` and ``tokens`` as
    [sum, min, max] (None when empty).  Summed with :func:`merge_tallies`, read with :func:`finish_tally`:
    the generate stage tallies each partition, metrics.json adds them up."""
    counts = {m: sum(bool(flagged(f)) for f in flags) for m, flagged in FLAGGED.items()}
    counts["language_unknown"] = sum(f["wrong_language"] is None for f in flags)
    counts["rejected"] = sum(any(flagged(f) for flagged in FLAGGED.values()) for f in flags)

    def span(values: List[int]) -> Optional[List[int]]:
        return [sum(values), min(values), max(values)] if values else None

    return {"n": len(flags), "counts": counts, "chars": span([len((t or "").strip()) for t in texts]),
            "tokens": span([len(tokens(t)) for t in texts])}


def merge_tallies(parts: Iterable[Mapping[str, Any]]) -> Dict[str, Any]:
    """The :func:`tally` of the union of the groups ``parts`` tallied."""
    out: Dict[str, Any] = {"n": 0, "counts": {}, "chars": None, "tokens": None}
    for p in parts:
        out["n"] += p["n"]
        for k, c in p["counts"].items():
            out["counts"][k] = out["counts"].get(k, 0) + c
        for k in ("chars", "tokens"):
            a, b = out[k], p[k]
            out[k] = b if a is None else a if b is None else [a[0] + b[0], min(a[1], b[1]), max(a[2], b[2])]
    return out


def finish_tally(t: Mapping[str, Any]) -> Dict[str, Any]:
    """A :func:`tally` as :func:`quality_report` shows a group: ``n``, ``counts``, ``rates`` (count / n) and
    ``length`` (:func:`~xqg_ray.evaluation.quality.length_stats`' shape)."""
    n = t["n"]
    counts = {k: t["counts"].get(k, 0) for k in (*MEASURES, "language_unknown", "rejected")}

    def stats(span: Optional[Sequence[int]]) -> Dict[str, Any]:
        if not span:
            return {"mean": None, "min": None, "max": None}
        return {"mean": span[0] / n, "min": span[1], "max": span[2]}

    empty = counts["empty"]
    return {
        "n": n,
        "counts": counts,
        "rates": {m: (c / n if n else None) for m, c in counts.items()},
        "length": {"n": n, "chars": stats(t["chars"]), "tokens": stats(t["tokens"]), "empty": empty,
                   "empty_rate": empty / n if n else None},
    }


def _group_report(texts: List[str], flags: List[Dict[str, Any]], ranks: Optional[np.ndarray]) -> Dict[str, Any]:
    """Counts and rates of one group of questions (a language, or all)."""
    out = finish_tally(tally(texts, flags))
    if ranks is not None:
        out["round_trip"] = round_trip_summary(ranks)
    return out


def quality_report(
    rows: Sequence[Mapping[str, Any]],
    exemplars: Optional[Mapping[str, Sequence[Mapping[str, Any]]]] = None,
    allowed_langs: Optional[Iterable[str]] = None,
    ranks: Optional[Sequence[int]] = None,
) -> Dict[str, Any]:
    """Quality of one generator's questions, ready for metrics.json: ``{"overall": G, "by_language": {lang: G}}``.

    G has ``n``, exact ``counts`` and ``rates`` (count / n) of each of
    ``MEASURES`` plus ``language_unknown`` and ``rejected`` (flagged by any
    measure), ``length`` (:func:`~xqg_ray.evaluation.quality.length_stats`) and, when ``ranks`` (one per
    row, from :func:`round_trip_ranks`) are given, ``round_trip``
    (:func:`round_trip_summary`).  ``exemplars``: language -> the few-shot
    exemplars the generator saw; ``allowed_langs`` default: the rows'
    languages plus English.  Languages are listed sorted by code.
    """
    if ranks is not None and len(ranks) != len(rows):
        raise ValueError(f"{len(rows)} rows but {len(ranks)} round-trip ranks")
    flags = question_flags(rows, exemplars, allowed_langs)
    texts = [str(r.get("text") or "") for r in rows]
    r = None if ranks is None else np.asarray(ranks, dtype=np.int64)
    langs = [str(row["lang"]) for row in rows]
    by_language = {}
    for lang in sorted(set(langs)):
        idx = [i for i, l in enumerate(langs) if l == lang]
        by_language[lang] = _group_report([texts[i] for i in idx], [flags[i] for i in idx], None if r is None else r[idx])
    return {"overall": _group_report(texts, flags, r), "by_language": by_language}


SELECTIONS = tuple(SELECTED)  # unfiltered, kept, passed: the report's order


def filter_counts(attempts: pa.Table, langs: Sequence[str], n: int) -> Dict[str, Any]:
    """What a unit's filter did: ``draws``, ``kept``, ``rejected`` (total and ``by_reason``, every reason of
    ``REJECT_ORDER``, the first reason that rejected each draw), ``left_empty`` (slots of ``n`` per
    passage and language of ``langs`` the kept questions do not fill) and, where ``filters.fill_empty``
    kept any, ``filled`` (kept draws the round trip had rejected)."""
    reasons = attempts["reason"].to_pylist()
    kept = attempts[KEPT].to_pylist()
    filled = sum(1 for r, k in zip(reasons, kept) if k and r)  # filters.fill_empty: kept though the round trip rejected it
    reasons = [None if k else r for r, k in zip(reasons, kept)]
    per_slot: Dict[tuple, int] = {}
    for pid, lang, k in zip(attempts["id"].to_pylist(), attempts["lang"].to_pylist(), kept):
        per_slot[(pid, lang)] = per_slot.get((pid, lang), 0) + bool(k)
    passages = set(attempts["id"].to_pylist())
    left = sum(max(0, n - per_slot.get((pid, lang), 0)) for pid in passages for lang in langs)
    by_reason = {r: sum(1 for x in reasons if x == r) for r in REJECT_ORDER}
    out = {"draws": len(reasons), "kept": sum(bool(k) for k in kept),
           "rejected": {"total": sum(by_reason.values()), "by_reason": by_reason}, "left_empty": left}
    if filled:
        out["filled"] = filled
    return out


def selection_flags(rows: Sequence[Mapping[str, Any]]) -> List[Dict[str, Any]]:
    """:func:`~xqg_ray.evaluation.quality.question_flags` of one selection's stored draws (``ATTEMPTS_SCHEMA``
    rows, in stored order): the per-draw flags as the filter measured them, duplicates measured again
    within the selection (per passage, in row order) as :func:`question_flags` does."""
    dups = [False] * len(rows)
    by_passage: Dict[int, List[int]] = {}
    for i, r in enumerate(rows):
        by_passage.setdefault(int(r["id"]), []).append(i)
    for idx in by_passage.values():
        for i, d in zip(idx, duplicates_within_passage([str(rows[i]["text"] or "") for i in idx])):
            dups[i] = d
    return [{"empty": bool(r["empty"]), "wrong_language": r["wrong_language"], "exemplar": r["exemplar"],
             "duplicate": d, "degenerate": bool(r["degenerate"])} for r, d in zip(rows, dups)]


def unit_quality(attempts: pa.Table) -> Dict[str, Dict[str, Any]]:
    """``{selection: {lang: tally}}`` of one unit's draws, for each of ``SELECTIONS``."""
    rows = attempts.to_pylist()
    out: Dict[str, Dict[str, Any]] = {}
    for sel in SELECTIONS:
        chosen = [r for r in rows if SELECTED[sel](r)]
        flags = selection_flags(chosen)
        out[sel] = {}
        for lang in sorted({r["lang"] for r in chosen}):
            idx = [i for i, r in enumerate(chosen) if r["lang"] == lang]
            out[sel][lang] = tally([str(chosen[i]["text"] or "") for i in idx], [flags[i] for i in idx])
    return out


def sum_filter_counts(parts: Iterable[Optional[Mapping[str, Any]]]) -> Dict[str, Any]:
    """:func:`filter_counts` of the union of units (parts without counts are skipped)."""
    out: Dict[str, Any] = {"draws": 0, "kept": 0, "rejected": {"total": 0, "by_reason": {r: 0 for r in REJECT_ORDER}}, "left_empty": 0}
    for p in parts:
        if not p:
            continue
        for k in ("draws", "kept", "left_empty"):
            out[k] += p[k]
        if p.get("filled"):
            out["filled"] = out.get("filled", 0) + p["filled"]
        out["rejected"]["total"] += p["rejected"]["total"]
        for r, c in p["rejected"]["by_reason"].items():
            out["rejected"]["by_reason"][r] = out["rejected"]["by_reason"].get(r, 0) + c
    return out


def report_of(tallies: Iterable[Mapping[str, Mapping[str, Any]]]) -> Dict[str, Any]:
    """``{"overall", "by_language"}`` (:func:`quality_report`'s shape, without round trip) of per-language tallies."""
    parts = list(tallies)
    langs = sorted({lang for t in parts for lang in t})
    by_language = {lang: finish_tally(merge_tallies(t[lang] for t in parts if lang in t)) for lang in langs}
    return {"overall": finish_tally(merge_tallies(t[lang] for t in parts for lang in t)), "by_language": by_language}


def generator_quality(manifest: Mapping[str, Any]) -> Optional[Dict[str, Any]]:
    """One generator's quality from its published manifest: ``{"unfiltered": report, "kept": report,
    "filter": summed counts, "settings": the generator's filters}``, and ``"passed"`` (the kept questions
    without the fill's) where ``filters.fill_empty`` is on (else it is the kept one again); None when its
    units carry no quality (a provided generator, or output written before filters)."""
    units = manifest.get("units", [])
    if not units or any(u.get("quality") is None for u in units):
        return None
    settings = dict(manifest.get("generator", {}).get("filters", {}))
    sels = SELECTIONS if settings.get("fill_empty") else tuple(s for s in SELECTIONS if s != PASSED)
    out: Dict[str, Any] = {sel: report_of(u["quality"].get(sel, {}) for u in units) for sel in sels}
    out["filter"] = sum_filter_counts(u.get("filter") for u in units)
    out["settings"] = settings
    return out


def run_quality(manifests: Mapping[str, Optional[Mapping[str, Any]]]) -> Dict[str, Any]:
    """metrics.json's ``question_quality``: generator name -> :func:`generator_quality`, for the generators
    whose manifests carry it, in name order."""
    out = {}
    for name in sorted(manifests):
        m = manifests[name]
        q = generator_quality(m) if m else None
        if q is not None:
            out[name] = q
    return out


# Round trip: a seeded sample of each generator's questions per language, re-encoded with the run's
# encoder (the encode stage keeps only per-passage sums of question vectors) and ranked against the
# passages of the question's own partition (exhaustive, from the stored E(p)).  Cost per generator:
# encoding SAMPLE_PER_LANGUAGE questions per language and one score per sampled question and passage
# of the partitions read; partitions are read in a seeded order until every language has its sample,
# so at 18M passages in 32 partitions a question competes with about 560k passages, not 18M (its rank
# is a lower bound on its rank in the whole index).
SAMPLE_PER_LANGUAGE = 200


def sample_draws(tables: Iterable[pa.Table], generator: str, seed: int, per_language: int = SAMPLE_PER_LANGUAGE) -> List[Dict[str, Any]]:
    """Up to ``per_language`` draws per language of either selection from ``tables`` (ATTEMPTS_SCHEMA
    rows): those of smallest seed_for(seed, "round-trip", generator, id, lang, round, draw), so the sample
    never depends on the order of files or rows; each as ``{"id", "lang", "text", "unfiltered", "kept",
    "passed"}`` (passed draws are kept ones: the sample is drawn from the first two)."""
    from ..ids import seed_for

    by_lang: Dict[str, List[tuple]] = {}
    for t in tables:
        for r in t.to_pylist():
            if r[UNFILTERED] or r[KEPT]:
                key = seed_for(seed, "round-trip", generator, r["id"], r["lang"], r["round"], r["draw"])
                row = {k: r[k] for k in ("id", "lang", "text", UNFILTERED, KEPT)}
                by_lang.setdefault(r["lang"], []).append((key, {**row, PASSED: SELECTED[PASSED](r)}))
    return [row for lang in sorted(by_lang) for _, row in sorted(by_lang[lang], key=lambda kr: kr[0])[:per_language]]


def sample_provided(tables: Iterable[pa.Table], generator: str, seed: int, languages: Iterable[str],
                    per_language: int = SAMPLE_PER_LANGUAGE) -> List[Dict[str, Any]]:
    """The provided questions' counterpart of :func:`sample_draws`: up to ``per_language`` questions per
    language of ``languages`` from ``tables`` (GENERATED_SCHEMA rows: a passage ``id`` and its ``queries``),
    those of smallest seed_for(seed, "round-trip", generator, id, lang, i) with ``i`` the question's place
    in its passage's list; each as ``{"id", "lang", "text", "unfiltered": True, "kept": False}`` (a
    provided generator's one selection).  Only ``languages``: the human questions' round trip is the
    reference for the generators' languages, and their other languages would cost encodings that nothing
    compares."""
    from ..ids import seed_for

    wanted = set(languages)
    by_lang: Dict[str, List[tuple]] = {}
    for t in tables:
        for pid, qs in zip(t["id"].to_pylist(), t["queries"].to_pylist()):
            for i, q in enumerate(qs or ()):
                if q["lang"] in wanted and (q["text"] or "").strip():
                    key = seed_for(seed, "round-trip", generator, pid, q["lang"], i)
                    by_lang.setdefault(q["lang"], []).append((key, {"id": pid, "lang": q["lang"], "text": q["text"], UNFILTERED: True, KEPT: False}))
    return [row for lang in sorted(by_lang) for _, row in sorted(by_lang[lang], key=lambda kr: kr[0])[:per_language]]


def add_round_trip(quality: Dict[str, Any], samples: Mapping[str, List[Dict[str, Any]]], ranks: Mapping[str, List[int]],
                   about: Mapping[str, Any]) -> None:
    """Put each selection's ``round_trip`` (:func:`round_trip_summary` of its sampled questions' ranks) into
    ``quality[generator][selection]`` overall and per language, and ``round_trip_sample`` (``about``: how)."""

    for gen, rows in samples.items():
        for sel in SELECTIONS:
            rep = quality.get(gen, {}).get(sel)
            if not rep:
                continue
            chosen = [(r["lang"], k) for r, k in zip(rows, ranks[gen]) if r.get(sel)]  # a provided sample: unfiltered only
            rep["overall"]["round_trip"] = round_trip_summary([k for _, k in chosen])
            for lang, g in rep["by_language"].items():
                g["round_trip"] = round_trip_summary([k for l, k in chosen if l == lang])
        if gen in quality:
            quality[gen]["round_trip_sample"] = dict(about)


