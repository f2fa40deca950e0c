"""Language order for per-language views: by pretraining resource level, or as configured.

The low-resource question ("does xQG help languages the encoder saw little
of?") is read off a per-language table sorted from high to low resource.  The
default key is the size of each language's pretraining text in CC-100, the
corpus of XLM-R and of the XLM-R-initialised multilingual-e5 (GiB, rounded, from
Conneau et al. 2020, "Unsupervised Cross-lingual Representation Learning at
Scale", Table 6).  mBERT was trained on Wikipedia instead, whose order differs
in places: set ``eval.language_order`` (and ``eval.language_groups``) for it.
"""

from __future__ import annotations

from typing import Dict, List, Mapping, Sequence

# GiB of CC-100 text per language (zh: simplified Chinese).  Used only to order.
CC100_GIB: Dict[str, float] = {
    "en": 300.8, "ru": 278.0, "vi": 137.3, "th": 71.7, "ja": 69.3, "de": 66.6, "ro": 61.4,
    "fi": 54.3, "ko": 54.2, "es": 53.3, "el": 46.9, "zh": 46.9, "ar": 28.0, "tr": 20.9,
    "hi": 20.2, "bn": 8.4, "te": 4.7,
}


def language_order(langs: Sequence[str], configured: Sequence[str] = ()) -> List[str]:
    """``langs`` in the configured order, else by resource level (high to low), unknown ones last by code."""
    present = list(dict.fromkeys(langs))
    if configured:
        rank = {lang: i for i, lang in enumerate(configured)}
        return sorted(present, key=lambda lang: (rank.get(lang, len(rank)), lang))
    return sorted(present, key=lambda lang: (-CC100_GIB.get(lang, -1.0), lang))


def resource_level(lang: str) -> float | None:
    """GiB of CC-100 pretraining text, or None when the table does not list the language."""
    return CC100_GIB.get(lang)


def group_of(groups: Mapping[str, Sequence[str]]) -> Dict[str, str]:
    """language -> group name for ``eval.language_groups``."""
    return {lang: g for g, langs in groups.items() for lang in langs}
