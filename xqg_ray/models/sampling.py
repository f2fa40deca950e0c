"""Per-row seeded top-k sampling: the math, with no model in it.

Every sequence row draws its noise from its own ``torch.Generator`` seeded
from (passage, language, sample), so the token it picks depends only on its
own logits and seed, never on which rows share the batch or in what order.
A top-k + temperature sample is taken with the Gumbel-max trick: the argmax
of ``logit / T + Gumbel noise`` over the k largest logits is distributed as
``softmax(logit / T)`` restricted to those k (the HF ``top_k`` + ``temperature``
distribution).  Noise is drawn on the CPU, so a seed gives the same draws on
any device.
"""

from __future__ import annotations

from typing import List, Sequence

import torch


def row_generators(seeds: Sequence[int]) -> List[torch.Generator]:
    """One CPU generator per row, seeded with the row's 63-bit seed."""
    return [torch.Generator().manual_seed(int(s) % (2**63)) for s in seeds]


def effective_k(top_k: int, vocab: int) -> int:
    """``top_k`` clamped to the vocabulary; ``<= 0`` means the whole vocabulary (as in HF)."""
    return vocab if top_k <= 0 else min(top_k, vocab)


def draw_uniform(gens: Sequence[torch.Generator], k: int) -> torch.Tensor:
    """``[len(gens), k]`` uniforms in [0, 1); row ``i`` comes from ``gens[i]`` alone."""
    return torch.stack([torch.rand(k, generator=g) for g in gens])


def gumbel(u: torch.Tensor) -> torch.Tensor:
    """Standard Gumbel noise from uniforms (clamped away from 0 so it stays finite)."""
    tiny = torch.finfo(u.dtype).tiny
    e = -torch.log(u.clamp_min(tiny))  # Exp(1)
    return -torch.log(e.clamp_min(tiny))


def sample_top_k(logits: torch.Tensor, u: torch.Tensor, top_k: int, temperature: float) -> torch.Tensor:
    """One token id per row of ``logits`` ``[R, V]`` from top-k + temperature sampling.

    ``u`` ``[R, k]`` are the rows' uniforms (``draw_uniform``); ``temperature <= 0``
    is greedy.  Computed in float32 whatever the model's dtype.
    """
    k = effective_k(top_k, logits.shape[-1])
    vals, idx = logits.float().topk(k, dim=-1)
    if temperature <= 0:
        return idx[:, 0]
    scores = vals / temperature + gumbel(u.to(vals.device, torch.float32))
    return idx.gather(-1, scores.argmax(-1, keepdim=True)).squeeze(-1)
