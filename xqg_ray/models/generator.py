"""Query generators: seq2seq (the released mT5 xQG setting) and causal few-shot.

Sampling is seeded per (config seed, generator name, passage id, language), and
each (passage, language) is generated on its own, so the queries of a passage
do not depend on which other passages share its batch: a rerun or a retried
Ray block yields the same queries.
"""

from __future__ import annotations

from typing import Dict, List, Tuple

from ..config import LANGUAGE_NAMES, GeneratorConfig
from ..ids import seed_for

# Extra sampling rounds for outputs that come back empty (all special tokens,
# or a causal continuation with no question in it).
RETRY_ROUNDS = 2


class QueryGenerator:
    """Loads a seq2seq or causal LM once and samples ``n`` queries per language."""

    def __init__(self, name: str, cfg: GeneratorConfig, torch_threads: int = 0):
        import torch
        from transformers import AutoModelForCausalLM, AutoModelForSeq2SeqLM, AutoTokenizer

        from .loading import resolve_model as resolve

        if torch_threads > 0:
            torch.set_num_threads(torch_threads)
        self.name, self.cfg = name, cfg
        self.device = "cuda" if torch.cuda.is_available() else "cpu"
        ref = resolve(cfg.model)
        gguf = cfg.gguf_file or ref.gguf_file
        kw = {"gguf_file": gguf} if gguf else {}
        self.tokenizer = AutoTokenizer.from_pretrained(ref.path, **kw)
        if cfg.kind == "seq2seq":
            self.model = AutoModelForSeq2SeqLM.from_pretrained(ref.path, **kw)
        elif cfg.kind == "causal":
            self.model = AutoModelForCausalLM.from_pretrained(ref.path, **kw)
            from .prompts import load_fewshot

            self.fewshot = load_fewshot()
            missing = [lang for lang in cfg.languages if lang not in self.fewshot]
            if missing and cfg.few_shot > 0:
                raise ValueError(f"generator {name}: no few-shot exemplars for {missing}")
        else:
            raise ValueError(f"QueryGenerator does not handle kind={cfg.kind!r}")
        self.model.to(self.device).eval()
        if cfg.kind == "causal":
            # A long few-shot prompt must lose its oldest exemplar, never the passage at its end.
            self.tokenizer.truncation_side = "left"
        if self.tokenizer.pad_token_id is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.stop_ids = None
        if cfg.kind == "causal":
            from .prompts import newline_token_ids

            # The question ends at its line's end: stopping there saves most of
            # max_new_tokens per question (about 2x faster with Gemma 270M).
            self.stop_ids = [self.tokenizer.eos_token_id, *newline_token_ids(self.tokenizer)]

    def prompt(self, title: str, text: str, lang: str) -> str:
        if self.cfg.kind == "seq2seq":
            return self.cfg.prompt.format(language=LANGUAGE_NAMES[lang], title=title, text=text)
        from .prompts import causal_prompt

        return causal_prompt(title, text, lang, LANGUAGE_NAMES[lang], self.fewshot.get(lang, [])[: self.cfg.few_shot])

    def _sample(self, prompt: str, n: int, seed: int) -> List[str]:
        import torch

        torch.manual_seed(seed % (2**63))
        enc = self.tokenizer(prompt, return_tensors="pt", truncation=True, max_length=self.cfg.max_input_length)
        enc = {k: v.to(self.device) for k, v in enc.items() if k in ("input_ids", "attention_mask")}
        with torch.inference_mode():
            out = self.model.generate(
                **enc,
                do_sample=True,
                top_k=self.cfg.top_k,
                temperature=self.cfg.temperature,
                max_new_tokens=self.cfg.max_new_tokens,
                num_return_sequences=n,
                pad_token_id=self.tokenizer.pad_token_id,
                **({"eos_token_id": self.stop_ids} if self.stop_ids else {}),
            )
        if self.cfg.kind == "causal":
            out = out[:, enc["input_ids"].shape[1] :]  # only the continuation
        texts = self.tokenizer.batch_decode(out, skip_special_tokens=True)
        if self.cfg.kind == "causal":
            from .prompts import clean_question

            return [clean_question(t) for t in texts]
        return [" ".join(t.split()) for t in texts]

    def generate(self, pid: int, title: str, text: str) -> Tuple[List[Dict[str, str]], int]:
        """All queries for one passage: ``[{"lang", "text"}]`` and the number of failed slots."""
        queries: List[Dict[str, str]] = []
        failed = 0
        for lang in self.cfg.languages:
            p = self.prompt(title, text, lang)
            got = [q for q in self._sample(p, self.cfg.n_per_language, seed_for(self.cfg.seed, self.name, pid, lang)) if q]
            for r in range(RETRY_ROUNDS):
                if len(got) >= self.cfg.n_per_language:
                    break
                need = self.cfg.n_per_language - len(got)
                got += [q for q in self._sample(p, need, seed_for(self.cfg.seed, self.name, pid, lang, "retry", r)) if q]
            failed += max(0, self.cfg.n_per_language - len(got))
            queries += [{"lang": lang, "text": q} for q in got[: self.cfg.n_per_language]]
        return queries, failed
