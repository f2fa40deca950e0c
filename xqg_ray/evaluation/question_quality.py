"""Question quality of a run: per generate unit from its stored draws, summed over units for metrics.json.

The generate stage stores every draw of a partition with its flags
(``ATTEMPTS_SCHEMA``) and commits, per unit, :func:`filter_counts` (draws kept
and rejected, by reason) and :func:`unit_quality` (mergeable
:func:`~xqg_ray.evaluation.quality.tally` per selection and language: the
flags need the passages, which only the generate stage reads).  The evaluate
stage adds the units' records up with :func:`run_quality` from the published
``generated/NAME`` manifests alone, never reading a passage or a question.

Both selections are measured: ``unfiltered`` (the first non-empty draws, the
questions the data file's ``queries`` hold) and ``kept`` (what the filter
kept), each in :func:`~xqg_ray.evaluation.quality.quality_report`'s shape.
"""

from __future__ import annotations

from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence

import pyarrow as pa

from ..schemas import KEPT, UNFILTERED
from ..config.schema import PROVIDED_KIND
from .quality import duplicates_within_passage, finish_tally, merge_tallies, quality_report, tally
from .question_filter import REJECT_ORDER

SELECTIONS = (UNFILTERED, KEPT)


def filter_counts(attempts: pa.Table, langs: Sequence[str], n: int) -> Dict[str, Any]:
    """What a unit's filter did: ``draws``, ``kept``, ``rejected`` (total and ``by_reason``, every reason of
    ``REJECT_ORDER``, the first reason that rejected each draw) and ``left_empty`` (slots of ``n`` per
    passage and language of ``langs`` the kept questions do not fill)."""
    reasons = attempts["reason"].to_pylist()
    kept = attempts[KEPT].to_pylist()
    per_slot: Dict[tuple, int] = {}
    for pid, lang, k in zip(attempts["id"].to_pylist(), attempts["lang"].to_pylist(), kept):
        per_slot[(pid, lang)] = per_slot.get((pid, lang), 0) + bool(k)
    passages = set(attempts["id"].to_pylist())
    left = sum(max(0, n - per_slot.get((pid, lang), 0)) for pid in passages for lang in langs)
    by_reason = {r: sum(1 for x in reasons if x == r) for r in REJECT_ORDER}
    return {"draws": len(reasons), "kept": sum(bool(k) for k in kept),
            "rejected": {"total": sum(by_reason.values()), "by_reason": by_reason}, "left_empty": left}


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
        chosen = [r for r in rows if r[sel]]
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
    "filter": summed counts, "settings": the generator's filters}``; None when its units carry no quality
    (a provided generator, or output written before filters)."""
    units = manifest.get("units", [])
    if not units or any(u.get("quality") is None for u in units):
        return None
    out: Dict[str, Any] = {sel: report_of(u["quality"].get(sel, {}) for u in units) for sel in SELECTIONS}
    out["filter"] = sum_filter_counts(u.get("filter") for u in units)
    out["settings"] = dict(manifest.get("generator", {}).get("filters", {}))
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


def provided_quality(storage: Any, root: str, manifest: Mapping[str, Any]) -> Dict[str, Any]:
    """``{"unfiltered": quality_report}`` of a provided generator's questions (e.g. the held-out human ones),
    read from its data files: the reference figures beside a generator's (no exemplars: they never saw any)."""
    from ..store.integrity import read_table_verified

    rows = []
    for u in manifest.get("units", []):
        t = read_table_verified(storage, root, u, ["id", "queries"], where="the generated manifest")
        rows += [{"passage_id": pid, "lang": q["lang"], "text": q["text"]} for pid, qs in zip(t["id"].to_pylist(), t["queries"].to_pylist()) for q in qs]
    return {UNFILTERED: quality_report(rows)}


def read_run_quality(storage: Any, root: str, generators: Iterable[str]) -> Dict[str, Any]:
    """:func:`run_quality` of the ``generated/NAME`` manifests published under ``root`` (the evaluate stage's
    one call), plus :func:`provided_quality` for provided generators: a generating kind's figures come from
    its manifest alone."""
    from ..store.ledger import Ledger

    manifests = {name: Ledger(storage, root, f"generated/{name}").current() for name in generators}
    out = run_quality(manifests)
    for name, m in manifests.items():
        if m and m.get("generator", {}).get("kind") == PROVIDED_KIND and m.get("units"):
            out[name] = provided_quality(storage, root, m)
    return {name: out[name] for name in sorted(out)}
