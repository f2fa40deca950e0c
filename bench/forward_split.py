"""Seconds of a causal model's forward calls by kind: where a generation's time goes (``bench/generate.py --split``).

Installed on a loaded HF model, it times each forward call as a prefix's prefill
(one row: the few-shot lead whose KV cache is reused), a batch's suffix prefill
(each prompt's passage and label) or a decode step (one token a row), until closed.
"""

from __future__ import annotations

import functools
import time


class ForwardSplit:
    """Seconds of a model's forward calls by kind while installed: a prefix's prefill (one row, the few-shot
    lead whose KV cache is reused), a batch's suffix prefill (the passage and label of each prompt) and the
    decode steps (one token a row).  Says where a generation's time goes (``--split``)."""

    KINDS = ("prefix prefill", "suffix prefill", "decode steps")

    def __init__(self, model) -> None:  # noqa: ANN001 - an HF model
        self.model, self.orig = model, model.forward
        self.seconds = dict.fromkeys(self.KINDS, 0.0)
        self.tokens = dict.fromkeys(self.KINDS, 0)

        @functools.wraps(self.orig)  # the decoder reads forward's signature (its cache argument)
        def timed(*args, **kw):  # noqa: ANN002, ANN003, ANN202
            ids = kw.get("input_ids")
            kind = "decode steps" if ids.shape[1] == 1 else ("prefix prefill" if ids.shape[0] == 1 else "suffix prefill")
            t = time.perf_counter()
            out = self.orig(*args, **kw)
            self.seconds[kind] += time.perf_counter() - t
            self.tokens[kind] += int(ids.numel())
            return out

        model.forward = timed

    def close(self) -> None:
        self.model.forward = self.orig

    def line(self, total: float) -> str:
        parts = [f"{k} {self.seconds[k]:.1f} s ({100 * self.seconds[k] / total:.0f}%, {self.tokens[k]} tokens)" for k in self.KINDS]
        return f"      new, split: {', '.join(parts)}, the rest {total - sum(self.seconds.values()):.1f} s of {total:.1f} s"
