"""Query generators: seq2seq (the released mT5 xQG setting) and causal few-shot.

Many (passage, language) prompts share a forward pass (``cfg.batch_size``
prompts per batch, ``n_per_language`` samples each) in a decode loop of our
own (``decoding``): every sample row draws its noise from its own generator
seeded per (config seed, generator name, passage id, language, sample), so a
passage's queries do not depend on which passages share its batch, and a
rerun or a retried Ray block yields the same queries.  Padding is masked and
positions are explicit, so it changes nothing but float rounding.

Causal prompts are a few-shot prefix plus the passage.  The prefix (header
and exemplars) is drawn per (passage, language) among the language's disjoint
exemplar groups (``prompts.draw_exemplars``: 5 with 10 exemplars and
few_shot 2); each prefix's KV cache is prefilled once per actor and stacked
into the batches that use it (a batch mixes prefixes), and the ``n`` samples
of a prompt share its prefill.  The exemplar-copy filter compares a question
with the exemplars of its own prompt.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Dict, List, Sequence, Tuple

from ..config import LANGUAGE_NAMES, GeneratorConfig
from ..config.schema import LLAMACPP_RUNTIME, ROUND_TRIP, SHARED_PASSAGE_LAYOUT
from ..evaluation.question_filter import cheap_reject, draw_flags, fill_slots, selection, verdict
from ..schemas import UNFILTERED
from .bundled import ModelRef
from .rounds import RoundPlan

# Resampling rounds of an empty draw before filters existed (bench/generate.py's old path);
# filters.max_attempts (default 1 + RETRY_ROUNDS) now bounds the rounds of empty and rejected draws alike.
RETRY_ROUNDS = 2
# Prefix KV caches kept per actor: one per (language, exemplar group) fits (5 languages x 5
# groups; Gemma 270M: ~140 tokens x 37 KB = 5 MB each in float32), so a unit after the first
# prefills none; the bound keeps a longer pool or more languages from filling memory.
PREFIX_CACHE_ENTRIES = 32

Row = Tuple[int, str, str]  # (passage id, title, text)


@dataclass
class Prompt:
    """One (passage, language) prompt as token ids: ``prefix + suffix`` (the prefix shared per language)."""

    row: int  # index into generate_many's rows
    lang: str
    prefix: Tuple[int, ...]
    suffix: List[int]
    seeds: List[int]  # one per sample wanted


class QueryGenerator:
    """Loads a seq2seq or causal LM once and samples ``n`` queries per language."""

    def __init__(self, name: str, cfg: GeneratorConfig, torch_threads: int = 0, prefix_reuse: bool = True,
                 draw_exemplars: bool = True):
        import torch
        from transformers import AutoModelForCausalLM, AutoModelForSeq2SeqLM, AutoTokenizer

        from .loading import device_name, torch_dtype
        from .loading import resolve_model as resolve

        if torch_threads > 0:
            torch.set_num_threads(torch_threads)
        self.name, self.cfg = name, cfg
        # Off only to measure what reuse saves (bench/generate.py); results are the same.
        self.prefix_reuse = prefix_reuse
        # Off only to measure what batches of mixed prefixes save (bench/generate.py's "grouped" arm).
        self.mix_prefixes = True
        # Off only to measure the prompt before per-passage draws (bench/prompting.py): the pool's first few_shot.
        self.draw_exemplars = draw_exemplars
        self.device = device_name()
        ref = resolve(cfg.model)
        if cfg.model.endswith(".gguf") and not cfg.gguf_file:  # a GGUF file named directly (runtime llamacpp)
            ref = ModelRef(path=os.path.dirname(os.path.abspath(cfg.model)), gguf_file=os.path.basename(cfg.model))
        gguf = cfg.gguf_file or ref.gguf_file
        kw = {"gguf_file": gguf} if gguf else {}
        self.tokenizer = AutoTokenizer.from_pretrained(ref.path, **kw)
        dtype = torch_dtype(cfg.dtype, self.device)
        # llama.cpp runs the forward passes (the GGUF file itself); prompts, tokenizer and sampling stay ours.
        self.llama = None
        if cfg.runtime == LLAMACPP_RUNTIME:
            self.model = None
            self.llama = self._load_llamacpp(torch_threads or torch.get_num_threads())
        elif cfg.kind == "seq2seq":
            self.model = AutoModelForSeq2SeqLM.from_pretrained(ref.path, dtype=dtype, **kw)
        elif cfg.kind == "causal":
            self.model = AutoModelForCausalLM.from_pretrained(ref.path, dtype=dtype, **kw)
        else:
            raise ValueError(f"QueryGenerator does not handle kind={cfg.kind!r}")
        if self.model is not None:
            self.model.to(self.device).eval()
        if cfg.kind == "causal":
            from .prompts import load_fewshot

            self.fewshot = load_fewshot()
            missing = [lang for lang in cfg.languages if lang not in self.fewshot]
            if missing and cfg.few_shot > 0:
                raise ValueError(f"generator {name}: no few-shot exemplars for {missing}")
        if self.tokenizer.pad_token_id is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        if cfg.kind == "causal":
            from .prompts import newline_token_ids

            # The question ends at its line's end: stopping there saves most of
            # max_new_tokens per question (about 2x faster with Gemma 270M).
            self.stop_ids = [self.tokenizer.eos_token_id, *newline_token_ids(self.tokenizer)]
            # A prompt starts with the tokenizer's BOS if it adds one; trailing
            # specials (a template's EOS) would end the document before the question.
            probe = self.tokenizer("a")["input_ids"]
            bos = self.tokenizer.bos_token_id
            self.lead: List[int] = [bos] if bos is not None and probe and probe[0] == bos else []
        else:
            eos = self.model.generation_config.eos_token_id
            eos = self.tokenizer.eos_token_id if eos is None else eos
            self.stop_ids = list(eos) if isinstance(eos, (list, tuple)) else [eos]
        from .decoding import PrefixCaches

        # causal: prefix ids -> its KV cache (batch 1); the bound is raised only by a bench that alternates prompt kinds
        self.prefixes = PrefixCaches(PREFIX_CACHE_ENTRIES)

    @property
    def shared(self) -> bool:
        """Whether prompts use the shared-passage layout (``prompts.shared_prompt_parts``)."""
        return self.cfg.kind == "causal" and self.cfg.prompt_layout == SHARED_PASSAGE_LAYOUT

    @property
    def computed_in(self) -> Dict[str, str]:
        """What this generator's forward passes run in, for each unit's commit record: ``dtype`` (the
        model's torch dtype, or the GGUF for llama.cpp) and ``device``.  A config's ``dtype: auto`` does
        not say it: float32 or bfloat16 by device (``loading.torch_dtype``)."""
        if self.model is None:
            return {"dtype": "gguf", "device": "cpu"}
        return {"dtype": str(self.model.dtype).replace("torch.", ""), "device": self.device}

    def _load_llamacpp(self, threads: int):  # noqa: ANN202 - llamacpp.LlamaCppModel
        """The GGUF model in llama.cpp, sized for a batch: ``batch_size`` prompts x ``n_per_language`` rows
        x the rounds a prompt samples at once (``filters.draw_ahead``)."""
        from .llamacpp import LlamaCppModel, gguf_path

        if self.cfg.kind != "causal":
            raise ValueError(f"generator {self.name}: runtime {LLAMACPP_RUNTIME} runs causal generators only")
        rows = max(1, self.cfg.batch_size) * self.cfg.n_per_language * (1 + self.cfg.filters.draw_ahead)
        return LlamaCppModel(gguf_path(self.cfg.model, self.cfg.gguf_file), threads, rows,
                             self.cfg.max_input_length + self.cfg.max_new_tokens)

    def prompt(self, pid: int, title: str, text: str, lang: str) -> str:
        """The prompt text of passage ``pid`` in ``lang``."""
        if self.cfg.kind == "seq2seq":
            return self.cfg.prompt.format(language=LANGUAGE_NAMES[lang], title=title, text=text)
        return "".join(self._causal_parts(pid, title, text, lang))

    def exemplars_for(self, pid: int, lang: str) -> List[dict]:
        """The few-shot exemplars shown in passage ``pid``'s ``lang`` prompt (none for seq2seq); a
        shared-passage prompt shows every language's, so a copy of any of them is a copy."""
        if self.cfg.kind != "causal":
            return []
        from .prompts import draw_exemplars, draw_shared_exemplars

        if self.shared:
            shown = draw_shared_exemplars(self.fewshot, self.cfg.languages, self.cfg.few_shot, self.cfg.seed, pid)
            return [ex for lang in self.cfg.languages for ex in shown[lang]]

        pool = self.fewshot.get(lang, [])
        if not self.draw_exemplars:
            return pool[: self.cfg.few_shot]
        return draw_exemplars(pool, self.cfg.few_shot, self.cfg.seed, pid, lang)

    def _shared_parts(self, pid: int, title: str, text: str) -> Tuple[str, str]:
        """(exemplar part, passage part) of passage ``pid``'s shared-passage prompts (every language's)."""
        from .prompts import draw_shared_exemplars, shared_prompt_parts

        shown = draw_shared_exemplars(self.fewshot, self.cfg.languages, self.cfg.few_shot, self.cfg.seed, pid)
        return shared_prompt_parts(title, text, self.cfg.languages, LANGUAGE_NAMES, shown)

    def _causal_parts(self, pid: int, title: str, text: str, lang: str) -> Tuple[str, str]:
        from .prompts import causal_prompt_parts, prompt_words

        if self.shared:  # (exemplars + passage, label): only the label depends on the language
            return "".join(self._shared_parts(pid, title, text)), prompt_words(lang, LANGUAGE_NAMES[lang])[1]
        return causal_prompt_parts(title, text, lang, LANGUAGE_NAMES[lang], self.exemplars_for(pid, lang),
                                   header_language=self.cfg.header_language)

    def prompt_ids(self, pid: int, title: str, text: str, lang: str) -> Tuple[Tuple[int, ...], List[int]]:
        """(prefix, suffix) token ids of a prompt; the model sees their concatenation.

        Causal: prefix and suffix are tokenized separately (so the split is a
        token boundary in every path); a prompt over ``max_input_length``
        loses its oldest tokens after the BOS and gets no shared prefix.
        Seq2seq: no prefix; the suffix is the whole encoder input.
        """
        tok = self.tokenizer
        if self.cfg.kind == "seq2seq":
            ids = tok(self.prompt(pid, title, text, lang), truncation=True, max_length=self.cfg.max_input_length)["input_ids"]
            return (), list(ids)
        base: List[int] = []
        if self.shared:  # the exemplar part and the passage tokenized apart: the first is shared across passages
            from .prompts import prompt_words

            exemplars, passage = self._shared_parts(pid, title, text)
            base = tok(exemplars, add_special_tokens=False)["input_ids"]
            p, suf = base + tok(passage, add_special_tokens=False)["input_ids"], prompt_words(lang, LANGUAGE_NAMES[lang])[1]
        else:
            pre, suf = self._causal_parts(pid, title, text, lang)
            p = tok(pre, add_special_tokens=False)["input_ids"]
        s = tok(suf, add_special_tokens=False)["input_ids"]
        room = self.cfg.max_input_length - len(self.lead)
        if len(p) + len(s) > room:
            return (), self.lead + (p + s)[-room:]
        # A sliding-window layer caches only its last window - 1 tokens, and a cropped prefix cache
        # cannot be stacked beside others (decoding.stack_prefixes): such a prompt goes in whole.
        window = getattr(getattr(self.model, "config", None), "sliding_window", None)
        if not self.prefix_reuse or (window and len(self.lead) + len(p) > window - 1):
            return (), self.lead + p + s
        if base:
            self.prefixes.bases[tuple(self.lead + p)] = len(self.lead) + len(base)
        return tuple(self.lead + p), list(s)

    def generate(self, pid: int, title: str, text: str) -> Tuple[List[Dict[str, str]], int]:
        """All queries for one passage: ``[{"lang", "text"}]`` and the number of failed slots."""
        return self.generate_many([(pid, title, text)])[0]

    def generate_many(self, rows: Sequence[Row]) -> List[Tuple[List[Dict[str, str]], int]]:
        """``generate`` for every row, batched; each row's result equals generating it alone.

        The unfiltered selection of :meth:`generate_attempts`: the first draws
        with any text, as before filters existed.
        """
        return [selection(draws, self.cfg.languages, self.cfg.n_per_language, UNFILTERED) for draws in self.generate_attempts(rows)]

    def generate_attempts(self, rows: Sequence[Row], judge: Any = None) -> List[List[Dict[str, Any]]]:
        """Every draw of every row, in (language, round, draw) order, each with its flags and two choices.

        A draw is ``{"lang", "round", "draw", "text", "empty", "wrong_language",
        "exemplar", "degenerate", "duplicate", "reason", "kept", "unfiltered"}``.
        Round 0 draws ``n_per_language`` samples per language; each later round
        (up to ``filters.max_attempts`` rounds) draws as many as the filtered
        selection still lacks, seeded per (seed, name, passage id, language,
        round, draw), so a draw never depends on its batch and a rerun or a
        resumed unit gets the same draws.  ``kept``: the filter keeps it
        (``reason`` None; else the first reason of ``REJECT_ORDER``, and
        ``duplicate`` says whether it repeats a kept question of its passage,
        None for an empty draw).  ``unfiltered``: it is one of the first
        draws with any text (as before filters), the selection without filters: that selection lacks
        no more than the filtered one at every round, so its draws are always
        among the ones made (the same seeds as before filters).

        ``judge`` (a :class:`~xqg_ray.models.judge.RoundTripJudge` holding the rows' partition): ranks
        each round's draws that no cheaper reason rejects, for the ``round_trip`` filter; the draw keeps
        its rank (``round_trip``), so a looser threshold or fewer rounds can be replayed from the stored
        draws (:func:`~xqg_ray.evaluation.question_filter.replay`).

        ``filters.draw_ahead``: later rounds' draws sampled from a round's prefill (:mod:`.rounds`); the
        same draws, made in fewer forward passes.  ``self.plan`` counts the ones made and read.
        """
        n, f = self.cfg.n_per_language, self.cfg.filters
        if judge is None and ROUND_TRIP in f.enabled:
            raise ValueError(f"generator {self.name}: filters.enabled names {ROUND_TRIP!r}: pass a RoundTripJudge holding the rows' partition")
        langs = list(self.cfg.languages)
        if self.shared:
            self.prefixes.bases = {}  # this call's prompts only (prompt_ids fills it)
        base = {(i, lang): self.prompt_ids(pid, title, text, lang) for i, (pid, title, text) in enumerate(rows) for lang in langs}
        kept: Dict[Tuple[int, str], List[str]] = {key: [] for key in base}
        chosen = {key: 0 for key in base}  # unfiltered selection sizes
        by_passage: Dict[int, List[str]] = {i: [] for i in range(len(rows))}
        draws: List[List[Dict[str, Any]]] = [[] for _ in rows]
        # Per passage, language -> the exemplars its prompt shows: the ones a copy is measured against.
        shown = {i: {lang: self.exemplars_for(row[0], lang) for lang in langs} for i, row in enumerate(rows)}
        allowed = set(langs) | {"en"}
        self.plan = plan = RoundPlan(self.cfg.seed, self.name, f.max_attempts, f.draw_ahead)
        for r in range(plan.rounds):
            slots: List[Tuple[Prompt, Any]] = []  # in base order (duplicates are judged in it); texts None: sample now
            for (i, lang), (pre, suf) in base.items():
                need = n - len(kept[(i, lang)])
                if need <= 0:
                    continue
                texts = plan.take((i, lang), r, need)
                seeds = [] if texts is not None else plan.seeds((i, lang), rows[i][0], r, need)
                slots.append((Prompt(i, lang, pre, suf, seeds), texts))
            if not slots:
                break
            now = [p for p, texts in slots if texts is None]
            sampled = iter(self._run(now) if now else [])
            drawn = [(p, plan.split((p.row, p.lang), r, next(sampled)) if texts is None else texts) for p, texts in slots]
            flat = [(p, j, t) for p, texts in drawn for j, t in enumerate(texts)]
            flags = self._flags(flat, rows, shown, allowed)
            if judge is not None and ROUND_TRIP in f.enabled:
                ask = [k for k, ((_, _, t), fl) in enumerate(zip(flat, flags)) if t and not cheap_reject(t, fl, f.enabled)]
                for k, rank in zip(ask, judge.ranks([rows[flat[k][0].row][0] for k in ask], [flat[k][2] for k in ask])):
                    flags[k][ROUND_TRIP] = rank
            room = {(p.row, p.lang): n - chosen[(p.row, p.lang)] for p, _ in slots}  # the unfiltered need at the round's start
            for (p, j, t), fl in zip(flat, flags):
                key = (p.row, p.lang)
                dup, reason = verdict(t, fl, by_passage[p.row], f.enabled, f.round_trip_top_k, f.duplicate_jaccard)
                # The rule before filters: any text at all ("?" too, which the quality measures call empty).
                unfiltered = j < room[key] and bool(t)
                chosen[key] += unfiltered
                if reason is None:
                    kept[key].append(t)
                    by_passage[p.row].append(t)
                draws[p.row].append({"lang": p.lang, "round": r, "draw": j, "text": t, **fl, "duplicate": dup,
                                     "reason": reason, "kept": reason is None, "unfiltered": unfiltered})
        if f.fill_empty:
            fill_slots(draws, kept, by_passage, n, f.duplicate_jaccard)
        order = {lang: k for k, lang in enumerate(langs)}
        return [sorted(d, key=lambda a: (order[a["lang"]], a["round"], a["draw"])) for d in draws]

    def _flags(self, flat: List[Tuple[Prompt, int, str]], rows: Sequence[Row], shown: Dict[int, Dict[str, List[dict]]],
               allowed: set) -> List[Dict[str, Any]]:
        """``draw_flags`` of every (prompt, draw, text), one call per passage: its prompts' own exemplars."""
        by_row: Dict[int, List[int]] = {}
        for k, (p, _, _) in enumerate(flat):
            by_row.setdefault(p.row, []).append(k)
        flags: List[Dict[str, Any]] = [{} for _ in flat]
        for i, ks in by_row.items():
            found = draw_flags([flat[k][2] for k in ks], [flat[k][0].lang for k in ks], [rows[i][2]] * len(ks),
                               shown[i], allowed, self.cfg.filters.exemplar_overlap)
            for k, fl in zip(ks, found):
                flags[k] = fl
        return flags

    def _run(self, prompts: List[Prompt]) -> List[List[str]]:
        """Decoded samples of every prompt, in order, in batches of ``batch_size`` prompts (:meth:`_batches`)."""
        result: List[List[str]] = [[] for _ in prompts]
        for ks in self._batches(prompts):
            for k, toks in zip(ks, self._sample_batch([prompts[k] for k in ks])):
                result[k] = self._decode_texts(toks)
        return result

    def _batches(self, prompts: List[Prompt]) -> List[List[int]]:
        """Prompt indices per batch: ``batch_size`` prompts of similar suffix length, whatever their prefixes.

        A unit's prompts spread over many prefixes (language x exemplar group:
        25 on the demo), so batches of one prefix held a few prompts, while a
        decode step's cost per row falls with the rows (Gemma 270M, bfloat16,
        one thread: 13.1 ms at 8 rows, 5.7 ms at 32; its 262k-token LM head
        alone takes 40 ms a step at any batch size); mixed batches fill up.
        llama.cpp's path takes one prefix per batch, so its batches still
        group by prefix.
        """
        bs = max(1, self.cfg.batch_size)
        if self.llama is None and self.mix_prefixes and self.shared:
            # A passage's prompts share its prefix and differ only in a label of a few tokens: kept together,
            # each prefix is stacked into one batch (and prefilled once) instead of one per label length.
            order = sorted(range(len(prompts)), key=lambda k: (prompts[k].prefix, len(prompts[k].suffix)))
            return [order[i : i + bs] for i in range(0, len(order), bs)]
        if self.llama is None and self.mix_prefixes:
            order = sorted(range(len(prompts)), key=lambda k: (len(prompts[k].suffix), prompts[k].prefix))
            return [order[i : i + bs] for i in range(0, len(order), bs)]
        order = sorted(range(len(prompts)), key=lambda k: (prompts[k].prefix, len(prompts[k].suffix)))
        out: List[List[int]] = []
        for k in order:
            if out and len(out[-1]) < bs and prompts[out[-1][0]].prefix == prompts[k].prefix:
                out[-1].append(k)
            else:
                out.append([k])
        return out

    def _sample_batch(self, batch: List[Prompt]) -> List[List[List[int]]]:
        import torch

        from . import decoding

        seeds = [s for p in batch for s in p.seeds]
        counts = [len(p.seeds) for p in batch]
        kw = dict(top_k=self.cfg.top_k, temperature=self.cfg.temperature, max_new_tokens=self.cfg.max_new_tokens, stop_ids=self.stop_ids)
        pad = self.tokenizer.pad_token_id
        if self.llama is not None:
            flat = self.llama.sample(batch[0].prefix, [p.suffix for p in batch], counts, seeds, decoding.decode_loop, **kw)
            return self._split(flat, counts)
        with torch.inference_mode():
            if self.cfg.kind == "seq2seq":
                flat = decoding.seq2seq_sample(self.model, [p.suffix for p in batch], counts, seeds, pad, **kw)
            else:
                distinct = list(dict.fromkeys(p.prefix for p in batch if p.prefix))
                where = {ids: j for j, ids in enumerate(distinct)}
                prefixes = [(self.prefixes.get(self.model, ids), len(ids)) for ids in distinct]
                prefix_of = [where[p.prefix] if p.prefix else None for p in batch]
                flat = decoding.causal_sample(self.model, prefixes, prefix_of, [p.suffix for p in batch], counts, seeds, pad, **kw)
        return self._split(flat, counts)

    @staticmethod
    def _split(flat: List[List[int]], counts: Sequence[int]) -> List[List[List[int]]]:
        """Prompt-major sample rows regrouped per prompt: ``counts[i]`` rows each."""
        out, k = [], 0
        for c in counts:
            out.append(flat[k : k + c])
            k += c
        return out

    def _decode_texts(self, toks: List[List[int]]) -> List[str]:
        texts = self.tokenizer.batch_decode(toks, skip_special_tokens=True)
        if self.cfg.kind == "causal":
            from .prompts import clean_question

            return [clean_question(t) for t in texts]
        return [" ".join(t.split()) for t in texts]
