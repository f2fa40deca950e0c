"""Question filters: the flags of each sampled question, and the reason a generator's filter rejects it.

The generator samples a question per slot; :func:`draw_flags` measures every
draw of a sampling round at once with the measures of
:mod:`xqg_ray.evaluation.quality` (the same definitions metrics.json counts
with), and :func:`reject_reason` decides, per draw, in the order of
``REJECT_ORDER``, given whether it repeats a question already kept for its
passage (:func:`repeats_kept`).  A draw with no text at all (``BLANK``) is
always rejected (the generator's only retry rule before filters); the other
reasons only when the generator's ``filters.enabled`` names them, so with none
enabled the filtered selection is the unfiltered one.  The round trip's rank
comes from :class:`xqg_ray.models.judge.RoundTripJudge`, for the draws no
cheaper reason rejects (:func:`cheap_reject`).
"""

from __future__ import annotations

from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple

from ..config.schema import FILTER_REASONS, ROUND_TRIP
from ..schemas import KEPT, PASSED, UNFILTERED
from .quality import degenerate, duplicates_within_passage, exemplar_copies, normalise, target_language

BLANK = "blank"
# One reason per rejected draw, the first that applies: counts by reason then add up to the rejections.
REJECT_ORDER = (BLANK,) + FILTER_REASONS


def draw_flags(
    texts: Sequence[str],
    langs: Sequence[str],
    passages: Sequence[str],
    exemplars: Mapping[str, Sequence[Mapping[str, Any]]],
    allowed_langs: Iterable[str],
    exemplar_overlap: float,
) -> List[Dict[str, Any]]:
    """Per draw: ``empty``, ``wrong_language`` (None: cannot tell), ``exemplar`` ("exact"/"near"/None) and
    ``degenerate``; ``passages[i]`` is draw i's passage text, ``exemplars`` language -> the exemplars the
    generator saw for it (none for seq2seq)."""
    right = target_language(texts, langs, allowed_langs)
    copies: List[Optional[str]] = [None] * len(texts)
    for lang in sorted(set(langs)):
        ex = exemplars.get(lang, ())
        idx = [i for i, l in enumerate(langs) if l == lang]
        if ex:
            found = exemplar_copies([texts[i] for i in idx], ex, threshold=exemplar_overlap, passages=[passages[i] for i in idx])
            for i, c in zip(idx, found):
                copies[i] = c
    return [
        {"empty": not normalise(t), "wrong_language": None if ok is None else not ok, "exemplar": c,
         "degenerate": bool(normalise(t)) and degenerate(t)}
        for t, ok, c in zip(texts, right, copies)
    ]


def cheap_reject(text: str, flags: Mapping[str, Any], enabled: Iterable[str]) -> bool:
    """Whether a reason other than the duplicate and the round trip rejects the draw: such a draw is not
    worth encoding for the round trip."""
    return reject_reason(text, {**flags, ROUND_TRIP: None}, False, enabled) is not None


def repeats_kept(text: str, kept: Sequence[str], jaccard: float) -> bool:
    """Whether ``text`` repeats one of the questions ``kept`` so far for its passage (the duplicate measure)."""
    return duplicates_within_passage([*kept, text], threshold=jaccard)[-1]


def reject_reason(text: str, flags: Mapping[str, Any], duplicate: bool, enabled: Iterable[str],
                  round_trip_top_k: int = 1) -> Optional[str]:
    """The first reason of ``REJECT_ORDER`` that rejects the draw ``text`` with these ``flags`` (from
    :func:`draw_flags`, plus ``round_trip``: its own passage's rank, None when not judged) and
    ``duplicate`` (from :func:`repeats_kept`), or None to keep it; a language the identifier cannot
    tell is not wrong."""
    on = set(enabled)
    rank = flags.get(ROUND_TRIP)
    hit = {
        BLANK: not text,
        "empty": flags["empty"],
        "wrong_language": flags["wrong_language"] is True,
        "exemplar_copy": flags["exemplar"] is not None,
        "duplicate": duplicate,
        "degenerate": flags["degenerate"],
        ROUND_TRIP: rank is not None and rank > round_trip_top_k,
    }
    for reason in REJECT_ORDER:
        if hit[reason] and (reason == BLANK or reason in on):
            return reason
    return None


def verdict(text: str, flags: Mapping[str, Any], kept: Sequence[str], enabled: Iterable[str], round_trip_top_k: int,
            jaccard: float) -> Tuple[Optional[bool], Optional[str]]:
    """(``duplicate``: whether ``text`` repeats a question ``kept`` so far for its passage, None for an
    empty draw; the :func:`reject_reason`) of one draw, judged in its generation's order."""
    dup = None if flags["empty"] else repeats_kept(text, kept, jaccard)
    return dup, reject_reason(text, flags, bool(dup), enabled, round_trip_top_k)


def fill_slots(draws: List[List[Dict[str, Any]]], kept: Dict[Tuple[int, str], List[str]], by_passage: Dict[int, List[str]],
               n: int, jaccard: float) -> None:
    """``filters.fill_empty``: each slot the rounds left empty takes its best draw that only the round trip
    rejected (own passage ranked highest; then the earliest), marked kept with its reason left as the round
    trip; in place.  Every passage then holds ``n`` questions per language where such a draw exists, so no
    passage lacks a language's question that its neighbours have (a query in that language scores its
    own language's questions higher: unequal coverage favours the passages that kept one)."""
    for i, ds in enumerate(draws):
        for d in sorted((d for d in ds if d["reason"] == ROUND_TRIP), key=lambda d: (d[ROUND_TRIP], d["round"], d["draw"])):
            key = (i, d["lang"])
            if len(kept[key]) < n and not repeats_kept(d["text"], by_passage[i], jaccard):
                d["kept"] = True
                kept[key].append(d["text"])
                by_passage[i].append(d["text"])


def replay(draws: Sequence[Mapping[str, Any]], langs: Sequence[str], n: int, enabled: Iterable[str], round_trip_top_k: int,
           rounds: int, jaccard: float, fill_empty: bool) -> Tuple[List[Dict[str, Any]], int]:
    """One passage's stored draws judged as a generation with a looser round trip (``round_trip_top_k``
    at least the generation's) or fewer ``rounds`` would have judged them: (the draws it would have
    made, each a copy with ``duplicate``, ``reason`` and ``kept`` recomputed, in stored order; the
    draws it would have needed that the generation never made).

    Exact because draws are seeded per (passage, language, round, draw): such a generation makes a
    prefix of the stored draws.  At a looser k a slot is filled no later than it was, so it needs no
    draw the stored rounds lack; fewer rounds drop the later ones.  The one exception is a duplicate
    that only the looser verdicts create (a question kept earlier now repeats across two languages),
    which can leave a slot wanting a draw never made: counted in the second value, the slot left to
    ``fill_empty`` like any other.  Draw dicts as :meth:`QueryGenerator.generate_attempts` stores
    them (``round_trip``: the own passage's rank, None where not judged).
    """
    made: Dict[Tuple[str, int], List[Mapping[str, Any]]] = {}
    for d in draws:
        made.setdefault((d["lang"], d["round"]), []).append(d)
    kept: Dict[str, List[str]] = {lang: [] for lang in langs}
    by_passage: List[str] = []
    out: Dict[Tuple[str, int, int], Dict[str, Any]] = {}
    missing = 0
    # The generation's order: round by round, languages in order, draws in order (the duplicate
    # measure compares each draw with the questions kept before it).
    for r in range(rounds):
        for lang in langs:
            need = n - len(kept[lang])
            if need <= 0:
                continue
            these = sorted(made.get((lang, r), ()), key=lambda d: d["draw"])
            missing += max(0, need - len(these))
            for d in these[:need]:
                dup, reason = verdict(d["text"], d, by_passage, enabled, round_trip_top_k, jaccard)
                out[(lang, r, d["draw"])] = {**d, "duplicate": dup, "reason": reason, "kept": reason is None}
                if reason is None:
                    kept[lang].append(d["text"])
                    by_passage.append(d["text"])
    if fill_empty:
        fill_slots([list(out.values())], {(0, lang): kept[lang] for lang in langs}, {0: by_passage}, n, jaccard)
    return [out[k] for k in ((d["lang"], d["round"], d["draw"]) for d in draws) if k in out], missing


# Whether a stored draw is in each selection (``systems[].questions``).
SELECTED = {UNFILTERED: lambda d: d[UNFILTERED], KEPT: lambda d: d[KEPT], PASSED: lambda d: d[KEPT] and d["reason"] is None}


def selection(draws: Sequence[Dict[str, Any]], langs: Sequence[str], n: int, which: str) -> Tuple[List[Dict[str, str]], int]:
    """One passage's queries ``[{"lang", "text"}]`` (languages in ``langs`` order, draws in stored order)
    and its empty slots, for the ``which`` selection (``UNFILTERED``, ``KEPT`` or ``PASSED``) of its draws."""
    if which not in SELECTED:
        raise ValueError(f"selection must be one of {', '.join(map(repr, SELECTED))}, not {which!r}")
    chosen = SELECTED[which]
    out = [{"lang": lang, "text": d["text"]} for lang in langs for d in draws if d["lang"] == lang and chosen(d)]
    return out, sum(max(0, n - sum(1 for q in out if q["lang"] == lang)) for lang in langs)
