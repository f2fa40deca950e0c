"""Few-shot prompts that make a *base* causal LM write one question.

A base (non-instruction-tuned) model such as Gemma 3 270M does not follow
"Generate a question ..." instructions; it continues documents.  So the
prompt is a document whose pattern is obvious: a one-line header, then
blocks of ``Title / Passage / <Language> question`` taken from the bundled
exemplars (``xqg_ray/assets/fewshot.json``), and finally the target passage
with an open ``<Language> question:`` line.  The most likely continuation is
a question in that language followed by a newline, which
:func:`clean_question` cuts off.
"""

from __future__ import annotations

import json
import re
from functools import lru_cache
from importlib import resources
from typing import Dict, List, Tuple

_FEWSHOT = "assets/fewshot.json"


@lru_cache(maxsize=1)
def _load_raw() -> str:
    return resources.files("xqg_ray").joinpath(_FEWSHOT).read_text(encoding="utf-8")


def load_fewshot() -> Dict[str, List[dict]]:
    """Hand-written exemplars per language code: ``{lang: [{title, passage, question}]}``.

    Passages are short English texts; questions are in the language of the key.
    A fresh copy is returned so callers may shuffle or trim it.
    """
    return json.loads(_load_raw())


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


def _label(language_name: str) -> str:
    return f"{language_name} question:"


def causal_prompt_parts(
    title: str,
    text: str,
    language: str,
    language_name: str,
    exemplars: List[dict],
    max_passage_words: int = 120,
) -> Tuple[str, str]:
    """:func:`causal_prompt` as (shared prefix, passage suffix); their concatenation is the prompt.

    The prefix (header and exemplars) depends only on the language and the
    exemplars, so a generator can run it through the model once and reuse
    its KV cache for every passage.  It ends with the blank line before the
    target's ``Title:``, a boundary where tokenizers start a new token.
    """
    name = language_name or language
    label = _label(name)
    parts = [f"Questions in {name} about English encyclopedia passages.\n"]

    def block(title: str, passage: str) -> str:
        return f"Title: {_one_line(title)}\nPassage: {_truncate_words(_one_line(passage), max_passage_words)}\n{label}"

    parts += [f"{block(ex['title'], ex['passage'])} {_one_line(ex['question'])}\n" for ex in exemplars]
    return "\n".join(parts) + "\n", block(title, text)


def causal_prompt(
    title: str,
    text: str,
    language: str,
    language_name: str,
    exemplars: List[dict],
    max_passage_words: int = 120,
) -> str:
    """Few-shot prompt whose natural continuation is one ``language`` question about ``text``.

    ``language`` is the code (kept for callers/logging symmetry and to name the
    language if ``language_name`` is empty); ``exemplars`` are items of
    :func:`load_fewshot` (usually ``load_fewshot()[language][:k]``).  The
    prompt ends with ``"<language_name> question:"`` and no trailing space,
    because SentencePiece-style tokenizers attach the space to the next word
    ("▁Wie"), so the model should produce it.
    """
    return "".join(causal_prompt_parts(title, text, language, language_name, exemplars, max_passage_words))


# Things that mark the end of the question when the model goes on writing:
# the start of the next exemplar block, a new "... question:" label, or a
# special token left in decoded text.
_STOP = re.compile(
    r"\n|\r|Title:|Passage:|\b[A-Z][a-z]+ question:|<eos>|<end_of_turn>|<start_of_turn>|</s>|<pad>|<bos>"
)
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
    m = _STOP.search(s)
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
