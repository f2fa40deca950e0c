"""Seeded query perturbations: misspelling-like character noise and word noise.

Robustness experiments re-run retrieval on noisy copies of the test questions.
Every edit works on *grapheme clusters* (a base character with its combining
marks, approximating UAX #29: marks, ZWJ/ZWNJ, Thai/Lao SARA AM, Hangul
medial/final jamo and Indic virama + consonant conjuncts extend the cluster),
so no edit ever separates a base from its Thai vowel/tone marks, Devanagari
matras or Arabic harakat.  Eligible units are clusters whose base is a letter
(category L*); digits, punctuation and spaces are never edited.

Character kinds (k = round-half-up(rate * N) edits for N eligible units, the
positions a seeded sample without replacement, so counts are exact):

* ``swap``: k swaps of adjacent, different letter units (rate <= 0.5; fewer
  when the text cannot hold k disjoint pairs);
* ``drop``: k units removed; ``insert``: k units each followed by a new one;
* ``keyboard``: k units whose base is replaced;
* ``char``: k units, each given one of the four edits at random.

Replacement and inserted letters: a QWERTY neighbour for Latin (QWERTZ when
lang is ``de``), a ЙЦУКЕН neighbour for Cyrillic, a Greek-layout neighbour for
Greek; for other scripts (Han, Thai, Arabic, Devanagari, ...) a different letter
*of the same script found in the query itself*, and only when the query has
none, a letter from that script's Unicode block (``_SCRIPT_RANGES``).  A letter
of an unknown script with no such candidate is left unchanged (one edit short).

Word kinds: ``word_order`` swaps k adjacent words (rate <= 0.5), ``word_drop``
removes k words (k = round(rate * W) for W words holding a letter).  Words are
whitespace-separated tokens, except that scripts written without spaces (Han,
Hiragana, Katakana, Thai, Lao, Khmer, Myanmar) make every grapheme a token:
word noise on Chinese, Japanese or Thai falls back to grapheme spans.

Never empty: an edit that would remove every letter keeps one.  Output depends
only on (seed, qid, kind, rate) and the text, never on processing order.
"""

from __future__ import annotations

import bisect
import math
import unicodedata
from functools import lru_cache
from typing import Optional, Sequence

import numpy as np
import pyarrow as pa

from ..config import CHAR_KINDS, PERTURBATION_KINDS, WORD_KINDS, PerturbationConfig, perturbation_problems
from ..errors import UserError
from ..ids import seed_for


class PerturbError(UserError):
    """A perturbation spec or query table the user must fix."""


# ------------------------------------------------------------------ Unicode

# Lo in the UCD but a SpacingMark for grapheme breaking (UAX #29).
_EXTENDERS = frozenset("\u0e33\u0eb3\u200c\u200d")
_ZWJ = "\u200d"
# Viramas that link consonants into one cluster (Unicode 15.1 InCB=Linker).
_LINKERS = frozenset("\u094d\u09cd\u0acd\u0b4d\u0c4d\u0d4d")

_SCRIPT_RANGES = sorted([
    (0x0041, 0x024F, "Latin"), (0x1E00, 0x1EFF, "Latin"),
    (0x0370, 0x03FF, "Greek"), (0x1F00, 0x1FFF, "Greek"),
    (0x0400, 0x052F, "Cyrillic"), (0x0530, 0x058F, "Armenian"), (0x0590, 0x05FF, "Hebrew"),
    (0x0600, 0x06FF, "Arabic"), (0x0750, 0x077F, "Arabic"), (0x08A0, 0x08FF, "Arabic"),
    (0xFB50, 0xFDFF, "Arabic"), (0xFE70, 0xFEFF, "Arabic"),
    (0x0900, 0x097F, "Devanagari"), (0x0980, 0x09FF, "Bengali"), (0x0A00, 0x0A7F, "Gurmukhi"),
    (0x0A80, 0x0AFF, "Gujarati"), (0x0B00, 0x0B7F, "Oriya"), (0x0B80, 0x0BFF, "Tamil"),
    (0x0C00, 0x0C7F, "Telugu"), (0x0C80, 0x0CFF, "Kannada"), (0x0D00, 0x0D7F, "Malayalam"),
    (0x0D80, 0x0DFF, "Sinhala"), (0x0E00, 0x0E7F, "Thai"), (0x0E80, 0x0EFF, "Lao"),
    (0x0F00, 0x0FFF, "Tibetan"), (0x1000, 0x109F, "Myanmar"), (0x10A0, 0x10FF, "Georgian"),
    (0x1100, 0x11FF, "Hangul"), (0x3130, 0x318F, "Hangul"), (0xAC00, 0xD7AF, "Hangul"),
    (0x1200, 0x139F, "Ethiopic"), (0x1780, 0x17FF, "Khmer"),
    (0x3040, 0x309F, "Hiragana"), (0x30A0, 0x30FF, "Katakana"), (0x31F0, 0x31FF, "Katakana"),
    (0x3400, 0x4DBF, "Han"), (0x4E00, 0x9FFF, "Han"), (0xF900, 0xFAFF, "Han"), (0x20000, 0x2FA1F, "Han"),
])
_RANGE_STARTS = [lo for lo, _, _ in _SCRIPT_RANGES]
# Scripts written without spaces between words: each grapheme is a word token.
NO_SPACE_SCRIPTS = frozenset({"Han", "Hiragana", "Katakana", "Thai", "Lao", "Khmer", "Myanmar"})


def script_of(ch: str) -> Optional[str]:
    """The script of one character by Unicode block (``_SCRIPT_RANGES``), None if not listed."""
    o = ord(ch)
    i = bisect.bisect_right(_RANGE_STARTS, o) - 1
    if i >= 0 and o <= _SCRIPT_RANGES[i][1]:
        return _SCRIPT_RANGES[i][2]
    return None


def _extends(prev: str, c: str) -> bool:
    if unicodedata.category(c)[0] == "M" or c in _EXTENDERS or 0x1160 <= ord(c) <= 0x11FF:
        return True
    # After ZWJ (emoji, Indic half forms) and after a linking virama the next
    # letter belongs to the same cluster: dropping it would strand the joiner.
    return prev[-1] == _ZWJ or (prev[-1] in _LINKERS and unicodedata.category(c) == "Lo")


def graphemes(text: str) -> list[str]:
    """Split ``text`` into (approximate extended) grapheme clusters; ``"".join`` gives it back."""
    units: list[str] = []
    for c in text:
        if units and _extends(units[-1], c):
            units[-1] += c
        else:
            units.append(c)
    return units


def _is_letter(unit: str) -> bool:
    return unicodedata.category(unit[0])[0] == "L" and unit[0] not in _EXTENDERS


@lru_cache(maxsize=None)
def _script_letters(script: str) -> tuple[str, ...]:
    """Every base letter of a script's blocks (the fallback pool), in code point order."""
    return tuple(chr(o) for lo, hi, s in _SCRIPT_RANGES if s == script for o in range(lo, hi + 1)
                 if unicodedata.category(chr(o))[0] == "L" and chr(o) not in _EXTENDERS)


# ------------------------------------------------------------------ keyboards

# Rows of letter keys; a space is a non-letter key kept so columns line up.
# On a staggered keyboard key (r, c) touches (r, c+-1), (r-1, c), (r-1, c+1),
# (r+1, c-1) and (r+1, c).
_LAYOUTS = {
    "qwerty": ("qwertyuiop", "asdfghjkl", "zxcvbnm"),
    "qwertz": ("qwertzuiopü", "asdfghjklöä", "yxcvbnm"),
    "jcuken": ("йцукенгшщзхъ", "фывапролджэ", "ячсмитьбю"),
    "greek": (" ςερτυθιοπ", "ασδφγηξκλ", "ζχψωβνμ"),
}


@lru_cache(maxsize=None)
def _neighbour_map(layout: str) -> dict[str, str]:
    rows = _LAYOUTS[layout]
    out: dict[str, str] = {}
    for r, row in enumerate(rows):
        for c, ch in enumerate(row):
            if ch == " ":
                continue
            near = [(r, c - 1), (r, c + 1), (r - 1, c), (r - 1, c + 1), (r + 1, c - 1), (r + 1, c)]
            out[ch] = "".join(rows[rr][cc] for rr, cc in near
                              if 0 <= rr < len(rows) and 0 <= cc < len(rows[rr]) and rows[rr][cc] != " ")
    return out


def keyboard_neighbours(ch: str, lang: str) -> str:
    """Keys next to ``ch`` on its script's keyboard (case kept), '' when there is no map for it."""
    script = script_of(ch)
    layout = {"Latin": "qwertz" if lang == "de" else "qwerty", "Cyrillic": "jcuken", "Greek": "greek"}.get(script or "")
    if layout is None:
        return ""
    near = _neighbour_map(layout).get(ch.lower(), "")
    return near.upper() if ch.isupper() else near


# ------------------------------------------------------------------ edits


def _round(x: float) -> int:
    # Half up: Python's round() is banker's rounding (round(0.5) == 0).
    return int(math.floor(x + 1e-9 + 0.5))


def _pick(rng: np.random.Generator, options: Sequence[str], avoid: str) -> Optional[str]:
    if not options or (len(options) == 1 and options[0] == avoid):
        return None
    j = int(rng.integers(len(options)))
    return options[(j + 1) % len(options)] if options[j] == avoid else options[j]


def _new_letter(rng: np.random.Generator, base: str, lang: str, pools: dict) -> Optional[str]:
    """A different letter that could stand for ``base``: keyboard neighbour, query pool, script table."""
    near = keyboard_neighbours(base, lang)
    if near:
        return near[int(rng.integers(len(near)))]
    script = script_of(base)
    return _pick(rng, pools.get(script, ()), base) or (_pick(rng, _script_letters(script), base) if script else None)


def _pair_starts(items: Sequence[str], eligible: Sequence[bool], k: int, rng: np.random.Generator) -> list[int]:
    """Up to k disjoint adjacent pairs (i, i+1) of eligible, different items, in a seeded order."""
    cands = [i for i in range(len(items) - 1) if eligible[i] and eligible[i + 1] and items[i] != items[i + 1]]
    used: set[int] = set()
    starts: list[int] = []
    for i in rng.permutation(len(cands)) if cands else []:
        if len(starts) == k:
            break
        p = cands[int(i)]
        if p not in used and p + 1 not in used:
            used.update((p, p + 1))
            starts.append(p)
    return sorted(starts)


def _swap_pairs(items: list, eligible: Sequence[bool], k: int, rng: np.random.Generator) -> int:
    """Swap up to k disjoint adjacent pairs of ``items`` in place (see :func:`_pair_starts`); how many."""
    starts = _pair_starts(items, eligible, k, rng)
    for p in starts:
        items[p], items[p + 1] = items[p + 1], items[p]
    return len(starts)


def _char_noise(text: str, lang: str, kind: str, rate: float, rng: np.random.Generator) -> tuple[str, int]:
    units = graphemes(text)
    letter = [_is_letter(u) for u in units]
    positions = [i for i, ok in enumerate(letter) if ok]
    k = _round(rate * len(positions))
    if k == 0:
        return text, 0
    if kind == "swap":
        n = _swap_pairs(units, letter, k, rng)
        return "".join(units), n

    letters_by_script: dict[Optional[str], set[str]] = {}
    for i in positions:
        letters_by_script.setdefault(script_of(units[i][0]), set()).add(units[i][0])
    pools = {s: tuple(sorted(p)) for s, p in letters_by_script.items()}  # sorted: set order is not stable

    chosen = sorted(int(j) for j in rng.choice(len(positions), size=k, replace=False))
    ops_drawn = rng.integers(0, 4, size=k) if kind == "char" else None
    chosen_units = {positions[j] for j in chosen}
    plan: dict[int, tuple[str, str]] = {}  # unit index -> (op, new letter)
    for n, j in enumerate(chosen):
        i = positions[j]
        op = kind if ops_drawn is None else ("swap", "drop", "insert", "keyboard")[int(ops_drawn[n])]
        if op == "swap":
            # The partner must be an unchosen letter, so it is nobody else's partner.
            if i + 1 < len(units) and letter[i + 1] and units[i] != units[i + 1] and i + 1 not in chosen_units:
                plan[i] = ("swap", "")
                continue
            op = "keyboard"  # no partner: a substitution keeps the edit count
        if op == "drop":
            plan[i] = ("drop", "")
            continue
        new = _new_letter(rng, units[i][0], lang, pools)
        if new is not None:
            plan[i] = (op, new)
    drops = [i for i, (op, _) in plan.items() if op == "drop"]
    if drops and len(drops) == len(positions):
        del plan[min(drops)]  # never remove every letter

    out: list[str] = []
    i = 0
    while i < len(units):
        op, new = plan.get(i, ("", ""))
        u = units[i]
        if op == "swap":
            out += [units[i + 1], u]
            i += 2
            continue
        if op == "insert":
            out += [u, new]
        elif op == "keyboard":
            out.append(new + u[1:])  # keep the marks: they belong to a same-script base
        elif op != "drop":
            out.append(u)
        i += 1
    return "".join(out), len(plan)


def split_words(text: str) -> tuple[list[str], list[str]]:
    """(words, seps) with text == seps[0] + words[0] + seps[1] + ... + words[-1] + seps[-1].

    Words are whitespace-separated; each grapheme of a ``NO_SPACE_SCRIPTS``
    script is a word of its own (separated by empty strings).
    """
    words: list[str] = []
    seps = [""]
    cur: Optional[str] = None

    def flush() -> None:
        nonlocal cur
        if cur is not None:
            words.append(cur)
            seps.append("")
            cur = None

    for u in graphemes(text):
        if u[0].isspace():
            flush()
            seps[-1] += u
        elif script_of(u[0]) in NO_SPACE_SCRIPTS:
            flush()
            cur = u
            flush()
        else:
            cur = u if cur is None else cur + u
    flush()
    return words, seps


def _word_noise(text: str, kind: str, rate: float, rng: np.random.Generator) -> tuple[str, int]:
    words, seps = split_words(text)
    has_letter = [any(_is_letter(u) for u in graphemes(w)) for w in words]
    eligible = [i for i, ok in enumerate(has_letter) if ok]
    k = _round(rate * len(eligible))
    if k == 0:
        return text, 0
    if kind == "word_order":
        n = _swap_pairs(words, has_letter, k, rng)
        return "".join(s + w for s, w in zip(seps, words)) + seps[-1], n
    dropped = {eligible[int(j)] for j in rng.choice(len(eligible), size=k, replace=False)}
    if len(dropped) == len(eligible):
        dropped.discard(min(dropped))  # never remove every word
    parts = [seps[0]]
    prev: Optional[int] = None
    for i, w in enumerate(words):
        if i in dropped:
            continue
        if prev is not None:
            # The first real separator between two kept words: "a b c" minus b is "a c".
            parts.append(next((s for s in seps[prev + 1:i + 1] if s), ""))
        parts.append(w)
        prev = i
    parts.append(seps[-1])
    return "".join(parts), len(dropped)


def apply_noise(text: str, lang: str, kind: str, rate: float, rng: np.random.Generator) -> tuple[str, int]:
    """Perturb ``text`` with one kind of noise; returns (new text, number of edits made)."""
    if kind in WORD_KINDS:
        return _word_noise(text, kind, rate, rng)
    if kind in CHAR_KINDS:
        return _char_noise(text, lang, kind, rate, rng)
    raise PerturbError(f"unknown perturbation kind {kind!r}: use one of {', '.join(PERTURBATION_KINDS)}")


def _check(spec: PerturbationConfig) -> None:
    # Specs built in code skip the config's validation: checked here too.
    errs = perturbation_problems(spec)
    if errs:
        raise PerturbError("; ".join(errs))


def query_rng(spec: PerturbationConfig, qid: str) -> np.random.Generator:
    """The generator for one query: a stable hash of (seed, qid, kind, rate), not Python's hash()."""
    return np.random.default_rng(seed_for("perturb", spec.seed, qid, spec.kind, repr(float(spec.rate))))


def perturb_text(text: str, lang: str, spec: PerturbationConfig, qid: str) -> str:
    """The perturbed ``text`` of query ``qid`` (deterministic in spec.seed, qid, kind, rate)."""
    _check(spec)
    return apply_noise(text, lang, spec.kind, float(spec.rate), query_rng(spec, qid))[0]


def perturb_table(table: pa.Table, spec: PerturbationConfig) -> pa.Table:
    """``table`` (qid, lang, text, any other columns) with ``text`` perturbed row by row.

    Same rows, order and other columns; null texts stay null.
    """
    _check(spec)
    missing = [c for c in ("qid", "lang", "text") if c not in table.column_names]
    if missing:
        raise PerturbError(f"query table lacks column(s) {missing}; has {table.column_names}")
    rate = float(spec.rate)
    texts = [t if t is None else apply_noise(t, lang or "", spec.kind, rate, query_rng(spec, str(qid)))[0]
             for qid, lang, t in zip(
        table.column("qid").to_pylist(), table.column("lang").to_pylist(), table.column("text").to_pylist())]
    idx = table.column_names.index("text")
    return table.set_column(idx, table.schema.field(idx), pa.array(texts, type=table.schema.field(idx).type))
