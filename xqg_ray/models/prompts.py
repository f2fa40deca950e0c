"""Few-shot prompts that make a *base* causal LM write one question.

A base (non-instruction-tuned) model such as Gemma 3 270M does not follow
"Generate a question ..." instructions; it continues documents.  So the
prompt is a document whose pattern is obvious: a one-line header, then
blocks of ``Title / Passage / <Language> question`` taken from the bundled
exemplars (``xqg_ray/assets/fewshot.json``), and finally the target passage
with an open ``<Language> question:`` line.  The most likely continuation is
a question in that language followed by a newline, which
:func:`clean_question` cuts off.

Which exemplars a passage's prompt shows is drawn per passage
(:func:`draw_exemplars`): one fixed pair for every passage made the model copy
it (50 of 240 German questions named the Great Wall, issue 15).  The header
and question label are English or in the target language
(``assets/prompt_headers.json``, :func:`prompt_words`).
"""

from __future__ import annotations

import hashlib
import json
import re
from functools import lru_cache
from importlib import resources
from typing import Dict, List, Sequence, Tuple

from ..ids import seed_for

_FEWSHOT = "assets/fewshot.json"
_HEADERS = "assets/prompt_headers.json"
ENGLISH_HEADER = "english"


@lru_cache(maxsize=2)
def _load_raw(path: str) -> str:
    return resources.files("xqg_ray").joinpath(path).read_text(encoding="utf-8")


def load_fewshot() -> Dict[str, List[dict]]:
    """Hand-written exemplars per language code: ``{lang: [{title, topic, passage, question}]}``.

    Passages are short English texts; questions are in the language of the key;
    no two exemplars of a language share a ``topic``.  A fresh copy is
    returned so callers may shuffle or trim it.
    """
    return json.loads(_load_raw(_FEWSHOT))


def load_headers() -> Dict[str, Dict[str, str]]:
    """Per language code, the prompt's header line and question label written in that language:
    ``{lang: {"header", "label"}}`` (the label ends with ``:``)."""
    return json.loads(_load_raw(_HEADERS))


def prompt_assets_sha256() -> str:
    """sha256 over the bundled exemplars and headers: what a causal prompt depends on besides the
    config and this module, for a generator's output key (edited exemplars must not reuse old questions)."""
    h = hashlib.sha256()
    for path in (_FEWSHOT, _HEADERS):
        h.update(_load_raw(path).encode("utf-8"))
    return h.hexdigest()


def prompt_words(language: str, language_name: str, header_language: str = ENGLISH_HEADER) -> Tuple[str, str]:
    """(header line, question label) of a ``language`` prompt.

    ``header_language`` "english" names the language in English ("German
    question:"); "target" writes both in the language itself ("Deutsche
    Frage:"), from :func:`load_headers`.
    """
    if header_language == ENGLISH_HEADER:
        name = language_name or language
        return f"Questions in {name} about English encyclopedia passages.", f"{name} question:"
    words = load_headers()[language]
    return words["header"], words["label"]


def _topic(exemplar: dict) -> str:
    return exemplar.get("topic") or exemplar["title"]


def exemplar_groups(pool: Sequence[dict], k: int, seed: int, language: str) -> List[List[int]]:
    """``pool``'s indices split into groups of up to ``k`` exemplars of distinct topics (each in pool order).

    Exemplars are taken in the order of ``seed_for(seed, "fewshot", language,
    title)`` and each joins the first group that still has room and lacks its
    topic, so each exemplar is in one group and the split depends only on
    (seed, language) and the pool.
    """
    if k <= 0:
        return []
    order = sorted(range(len(pool)), key=lambda i: (seed_for(seed, "fewshot", language, pool[i]["title"]), i))
    groups: List[List[int]] = []
    for i in order:
        for g in groups:
            if len(g) < k and _topic(pool[i]) not in {_topic(pool[j]) for j in g}:
                g.append(i)
                break
        else:
            groups.append([i])
    return [sorted(g) for g in groups]


def draw_exemplars(pool: Sequence[dict], k: int, seed: int, pid: int, language: str) -> List[dict]:
    """The ``k`` exemplars of ``pool`` shown in passage ``pid``'s ``language`` prompt, in pool order.

    One of the full groups of :func:`exemplar_groups`, chosen by
    ``seed_for(seed, "fewshot", pid, language)``: a pure function of (seed,
    passage id, language), so a rerun, a resumed unit or another batch shows
    the same ones, and neighbouring passages see different ones.  Disjoint
    groups show every exemplar to as many passages as random k-subsets would
    (1 in len(pool)/k) while a language has only len(pool)/k distinct prompt
    prefixes, so a generator's batches still share a prefix and its KV cache
    (random pairs of 10 would make 45, and batches of one).  Fewer than ``k``
    when the pool has fewer topics.
    """
    groups = exemplar_groups(pool, k, seed, language)
    full = [g for g in groups if len(g) == k] or groups[:1]
    if not full:
        return []
    return [pool[i] for i in full[seed_for(seed, "fewshot", pid, language) % len(full)]]


def draw_shared_exemplars(fewshot: Dict[str, List[dict]], languages: Sequence[str], k: int, seed: int, pid: int) -> Dict[str, List[dict]]:
    """Per language, the ``k`` exemplars passage ``pid``'s shared-passage prompt shows: group number
    ``seed_for(seed, "fewshot", pid, "shared")`` of each language's :func:`exemplar_groups` (the same
    number in every language), so the prompts' exemplar parts take as few distinct values as a
    language has groups, and their KV caches are shared across passages like the per-language prefixes."""
    # Exemplar passages that every language has a question for, in groups of k: each block then shows
    # one passage with a question per language (a parallel block), the clearest sign that the label
    # alone names the language.  Too few such passages: each language's own groups.
    common = set.intersection(*[{ex["title"] for ex in fewshot.get(lang, [])} for lang in languages]) if languages else set()
    if len(common) >= k > 0:
        first = fewshot[languages[0]]
        topics = [{"title": ex["title"], "topic": _topic(ex)} for ex in first if ex["title"] in common]
        found = exemplar_groups(topics, k, seed, "shared")
        full = [g for g in found if len(g) == k]
        titles = [topics[i]["title"] for i in full[seed_for(seed, "fewshot", pid, "shared") % len(full)]]
        return {lang: [next(ex for ex in fewshot[lang] if ex["title"] == t) for t in titles] for lang in languages}
    groups = {}
    for lang in languages:
        pool = fewshot.get(lang, [])
        found = exemplar_groups(pool, k, seed, lang)
        groups[lang] = [g for g in found if len(g) == k] or found[:1]
    sizes = [len(g) for g in groups.values() if g]
    if not sizes:
        return {lang: [] for lang in languages}
    pick = seed_for(seed, "fewshot", pid, "shared") % min(sizes)
    return {lang: [fewshot[lang][i] for i in groups[lang][pick]] if groups[lang] else [] for lang in languages}


def _truncate_words(text: str, max_words: int) -> str:
    # Whitespace words are right for the English passages this is used for;
    # the cap keeps the prompt (and so generation time) bounded.
    words = text.split()
    if max_words <= 0 or len(words) <= max_words:
        return " ".join(words)
    return " ".join(words[:max_words]) + " ..."


def _one_line(text: str) -> str:
    # A newline inside a field would look like the end of the block to the
    # model (and to clean_question), so fields are flattened to one line.
    return " ".join(str(text).split())


def _passage_block(title: str, passage: str, max_passage_words: int) -> str:
    """A passage as every causal prompt layout shows it: its title and passage lines."""
    return f"Title: {_one_line(title)}\nPassage: {_truncate_words(_one_line(passage), max_passage_words)}\n"


def causal_prompt_parts(
    title: str,
    text: str,
    language: str,
    language_name: str,
    exemplars: List[dict],
    max_passage_words: int = 120,
    header_language: str = ENGLISH_HEADER,
) -> Tuple[str, str]:
    """:func:`causal_prompt` as (shared prefix, passage suffix); their concatenation is the prompt.

    The prefix (header and exemplars) depends only on the language and the
    exemplars, so a generator can run it through the model once and reuse
    its KV cache for every passage.  It ends with the blank line before the
    target's ``Title:``, a boundary where tokenizers start a new token.
    """
    header, label = prompt_words(language, language_name, header_language)
    parts = [f"{header}\n"]

    def block(title: str, passage: str) -> str:
        return _passage_block(title, passage, max_passage_words) + label

    parts += [f"{block(ex['title'], ex['passage'])} {_one_line(ex['question'])}\n" for ex in exemplars]
    return "\n".join(parts) + "\n", block(title, text)


SHARED_HEADER = "Questions in several languages about English encyclopedia passages."


def shared_prompt_parts(title: str, text: str, languages: Sequence[str], language_names: Dict[str, str],
                        exemplars: Dict[str, List[dict]], max_passage_words: int = 120) -> Tuple[str, str]:
    """The shared-passage layout as (exemplar part, passage part); the language's question label
    (:func:`prompt_words`' English label, ``"German question:"``) follows them.

    The exemplars take turns by language (the first exemplar of each language, then the second...),
    each question after its own language's label; exemplars of one passage (the pools share topics
    across languages) make one block with a question per label, so the model sees that the label
    names the language and the passage is not shown twice.  Nothing before the label depends on the target language: one prefill of both parts
    serves every language's question, where the per-language layout prefills the passage once per
    language (61% of float32 generation time on 3 languages, docs/benchmarks.md).  Each part ends
    with a newline, a boundary where tokenizers start a new token.
    """
    blocks: Dict[Tuple[str, str], List[str]] = {}  # (title, passage) -> its question lines, in turn order
    for j in range(max((len(v) for v in exemplars.values()), default=0)):
        # Block j's questions start at language j: in a parallel block each language comes first once in turn.
        for lang in [*languages[j % len(languages):], *languages[: j % len(languages)]]:
            if j < len(exemplars.get(lang, [])):
                ex = exemplars[lang][j]
                label = prompt_words(lang, language_names.get(lang, lang))[1]
                blocks.setdefault((ex["title"], ex["passage"]), []).append(f"{label} {_one_line(ex['question'])}\n")
    parts = [f"{SHARED_HEADER}\n", *(_passage_block(t, p, max_passage_words) + "".join(lines) for (t, p), lines in blocks.items())]
    return "\n".join(parts) + "\n", _passage_block(title, text, max_passage_words)


def causal_prompt(
    title: str,
    text: str,
    language: str,
    language_name: str,
    exemplars: List[dict],
    max_passage_words: int = 120,
    header_language: str = ENGLISH_HEADER,
) -> str:
    """Few-shot prompt whose natural continuation is one ``language`` question about ``text``.

    ``language`` is the code (kept for callers/logging symmetry and to name the
    language if ``language_name`` is empty); ``exemplars`` are items of
    :func:`load_fewshot` (usually :func:`draw_exemplars` of ``load_fewshot()[language]``).
    The prompt ends with the question label (:func:`prompt_words`:
    ``"<language_name> question:"`` with ``header_language`` "english") and no
    trailing space, because SentencePiece-style tokenizers attach the space to
    the next word ("▁Wie"), so the model should produce it.
    """
    return "".join(causal_prompt_parts(title, text, language, language_name, exemplars, max_passage_words, header_language))


# Things that mark the end of the question when the model goes on writing:
# the start of the next exemplar block, a new "... question:" label (English
# or one of the target-language labels), or a special token left in decoded text.
_STOP_FIXED = r"\n|\r|Title:|Passage:|\b[A-Z][a-z]+ question:|<eos>|<end_of_turn>|<start_of_turn>|</s>|<pad>|<bos>"


@lru_cache(maxsize=1)
def _stop_pattern() -> "re.Pattern[str]":
    labels = sorted({w["label"] for w in load_headers().values()}, key=lambda x: (-len(x), x))
    return re.compile("|".join([_STOP_FIXED, *map(re.escape, labels)]))


# Cut right after the first question mark (Latin, full-width, Arabic): the
# model sometimes keeps writing an answer on the same line.
_QMARK = re.compile(r"[?？؟]")
_QUOTES = "\"'`“”‘’„«»「」『』"


def clean_question(generated: str) -> str:
    """The question in a raw continuation of :func:`causal_prompt`, or ``""``.

    Cuts at the first newline / next exemplar / special token, keeps up to
    the first question mark, strips whitespace and surrounding quotes.
    ``""`` means nothing usable (empty, or no letter or digit at all).
    """
    s = generated.lstrip()  # the continuation usually starts with a space
    m = _stop_pattern().search(s)
    if m:
        s = s[: m.start()]
    q = _QMARK.search(s)
    if q:
        s = s[: q.end()]
    s = s.strip().strip(_QUOTES).strip()
    if not any(ch.isalnum() for ch in s):
        return ""
    return s


def newline_token_ids(tokenizer) -> List[int]:  # noqa: ANN001 - any HF tokenizer
    """Ids of vocabulary tokens made only of newlines, to pass as extra EOS ids.

    The question ends at the first newline, so stopping there (``generate(...,
    eos_token_id=[tokenizer.eos_token_id, *newline_token_ids(tokenizer)])``)
    saves most of ``max_new_tokens`` per question.  Covers SentencePiece
    ("\\n", byte-fallback "<0x0A>") and byte-level BPE ("Ċ") spellings.
    """
    ids = []
    for tok, i in tokenizer.get_vocab().items():
        if tok == "<0x0A>" or (tok and set(tok) <= {"\n", "Ċ"}):
            ids.append(int(i))
    return sorted(ids)
