"""Query languages an encoder does not cover: reported as such, never silently scored.

mUSE (``encoder.kind: use``) was trained on 16 languages (``USE_LANGUAGES``); its
scores on, say, Hindi questions measure nothing it was built for, and a macro
over them would mix that in.  So, for a system on such an encoder, each query
language outside its set gets the per-language block ``{"covered": False, "n":
queries}`` (no metric values), its macro is taken over the covered languages
only (``n`` counting their queries), and the system's block lists the dropped
languages under ``"languages_not_covered"`` for the report to say so.  An HF
encoder covers every language (its pretraining set is not checked): its
systems' blocks are returned unchanged.  For paired comparisons,
:func:`covered_per_query` nulls such a system's per-query values in the
languages it does not cover, so no pair there is tested and the pooled row
pools covered languages only.
"""

from __future__ import annotations

from typing import Any, Collection, Dict, FrozenSet, Mapping, Optional, Sequence

import pyarrow as pa
import pyarrow.compute as pc

from ..config import EncoderConfig, RunConfig, encoder_cfg
from ..config.schema import USE_ENCODER
from .metrics import macro_average

# The system-level key listing the languages left out of a system's macro.
NOT_COVERED = "languages_not_covered"


def is_covered(block: Mapping[str, Any]) -> bool:
    """Whether a per-language block holds scores (False only for one :func:`coverage` marked)."""
    return block.get("covered", True) is not False


def covered_languages(enc: EncoderConfig) -> Optional[FrozenSet[str]]:
    """The query languages ``enc`` covers, or None for "every language" (HF encoders)."""
    if enc.kind == USE_ENCODER:
        from ..models.use_encoder import USE_LANGUAGES

        return USE_LANGUAGES
    return None


def system_covered(cfg: RunConfig, name: str) -> Optional[FrozenSet[str]]:
    """The query languages system ``name``'s encoder covers; None for every language (or a name no system has)."""
    s = next((s for s in cfg.systems if s.name == name), None)
    return None if s is None else covered_languages(encoder_cfg(cfg, s.encoder))


def coverage(aggregated: Mapping[str, Any], covered: Optional[Collection[str]], metric_names: Sequence[str]) -> Dict[str, Any]:
    """One system's :func:`~xqg_ray.evaluation.metrics.aggregate` result with the languages outside ``covered`` marked.

    Pure: returns a new dict.  ``covered`` None, or covering every language,
    returns a copy equal to ``aggregated`` (unrestricted systems' metrics.json
    blocks keep their bytes).  Otherwise a language outside it
    becomes ``{"covered": False, "n": n}``, the macro is :func:`macro_average`
    over the covered languages with ``n`` their queries, and
    ``"languages_not_covered"`` lists the marked languages (sorted).
    """
    per_language = aggregated["per_language"]
    out_of = sorted(lang for lang in per_language if covered is not None and lang not in covered)
    if not out_of:
        return dict(aggregated)
    kept = {lang: e for lang, e in per_language.items() if lang not in out_of}
    marked = {lang: e if lang in kept else {"covered": False, "n": e["n"]} for lang, e in per_language.items()}
    macro = macro_average(kept, metric_names, sum(e["n"] for e in kept.values()))
    return {**aggregated, "per_language": marked, "macro": macro, NOT_COVERED: out_of}


def apply_coverage(cfg: RunConfig, systems: Mapping[str, Mapping[str, Any]], metric_names: Sequence[str]) -> Dict[str, Any]:
    """metrics.json's ``systems`` (name -> aggregate result) with :func:`coverage` applied by each system's encoder."""
    return {name: coverage(agg, system_covered(cfg, name), metric_names) for name, agg in systems.items()}


def mask_not_covered(per_query: pa.Table, covered: Optional[Collection[str]], metric_names: Sequence[str]) -> pa.Table:
    """``per_query`` (per_query_metrics' table) with every metric null in rows whose language is outside ``covered``.

    Pure; ``covered`` None, or covering every row's language, returns the table
    as it is.  Null values are not paired (significance.compare), so a
    comparison of this system skips those queries on both sides.
    """
    if covered is None:
        return per_query
    outside = pc.invert(pc.is_in(per_query["lang"], value_set=pa.array(sorted(covered), pa.string())))
    if not pc.any(outside).as_py():
        return per_query
    for m in metric_names:
        col = per_query[m]
        per_query = per_query.set_column(per_query.schema.get_field_index(m), m, pc.if_else(outside, pa.scalar(None, col.type), col))
    return per_query


def covered_per_query(cfg: RunConfig, per_query: Mapping[str, pa.Table], metric_names: Sequence[str]) -> Dict[str, pa.Table]:
    """Each system's per-query table with :func:`mask_not_covered` applied by its encoder (for paired comparisons)."""
    return {name: mask_not_covered(t, system_covered(cfg, name), metric_names) for name, t in per_query.items()}
