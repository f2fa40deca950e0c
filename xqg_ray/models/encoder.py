"""The shared dense encoder: HF model + tokenizer, CLS or mean pooling.

One model encodes passages, generated queries and test queries (as in xQG).
Pooling is a pure function so it is tested without a model.
"""

from __future__ import annotations

from typing import List, Sequence

import numpy as np

from ..config import EncoderConfig


def pool(hidden: "np.ndarray", mask: "np.ndarray", mode: str) -> "np.ndarray":
    """CLS (first token) or attention-masked mean pooling of ``[B, T, H]`` states."""
    if mode == "cls":
        return hidden[:, 0]
    if mode == "mean":
        m = mask[..., None].astype(hidden.dtype)
        return (hidden * m).sum(axis=1) / np.clip(m.sum(axis=1), 1e-9, None)
    raise ValueError(f"pooling={mode!r}: use cls or mean")


def l2_normalize(x: np.ndarray) -> np.ndarray:
    n = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.clip(n, 1e-12, None)


def format_passage(template: str, title: str, text: str) -> str:
    """``title + " " + text`` by default; stripped so an empty title adds no space."""
    return template.format(title=title or "", text=text or "").strip()


class Encoder:
    """Loads the encoder once; ``encode(texts, kind)`` returns float32 vectors."""

    def __init__(self, cfg: EncoderConfig, torch_threads: int = 0):
        import torch
        from transformers import AutoModel, AutoTokenizer

        from .loading import device_name, torch_dtype
        from .loading import resolve_model as resolve

        if torch_threads > 0:
            torch.set_num_threads(torch_threads)
        self.cfg = cfg
        ref = resolve(cfg.model)
        self.device = device_name()
        dtype = torch_dtype(cfg.dtype, self.device)
        self.tokenizer = AutoTokenizer.from_pretrained(ref.path)
        self.model = AutoModel.from_pretrained(ref.path, dtype=dtype).to(self.device).eval()
        self.dim = int(self.model.config.hidden_size)

    def encode(self, texts: Sequence[str], kind: str) -> np.ndarray:
        """Encode ``texts`` as ``kind`` ("query" or "passage"); order is kept."""
        import torch

        if kind not in ("query", "passage"):
            raise ValueError(f"kind={kind!r}")
        prefix = self.cfg.query_prefix if kind == "query" else self.cfg.passage_prefix
        max_len = self.cfg.max_query_length if kind == "query" else self.cfg.max_passage_length
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        # Length-sorted sub-batches waste less padding; the sort key includes the
        # text so the split is the same on every run.
        order = sorted(range(len(texts)), key=lambda i: (len(texts[i]), texts[i]))
        bs = max(1, self.cfg.batch_size)
        for start in range(0, len(order), bs):
            idx = order[start : start + bs]
            enc = self.tokenizer(
                [prefix + texts[i] for i in idx],
                padding=True,
                truncation=True,
                max_length=max_len,
                return_tensors="pt",
            )
            enc = {k: v.to(self.device) for k, v in enc.items() if k in ("input_ids", "attention_mask", "token_type_ids")}
            with torch.inference_mode():
                hidden = self.model(**enc).last_hidden_state.float().cpu().numpy()
            vecs = pool(hidden, enc["attention_mask"].cpu().numpy(), self.cfg.pooling)
            if self.cfg.normalize:
                vecs = l2_normalize(vecs)
            out[idx] = vecs
        return out


def encode_sum(encoder: Encoder, groups: List[List[str]], kind: str = "query") -> tuple:
    """Encode each group of texts and return (sums [G, H] float32, counts [G])."""
    flat = [q for g in groups for q in g]
    vecs = encoder.encode(flat, kind) if flat else np.zeros((0, encoder.dim), np.float32)
    sums = np.zeros((len(groups), encoder.dim), dtype=np.float64)
    counts = np.array([len(g) for g in groups], dtype=np.int32)
    pos = 0
    for gi, c in enumerate(counts):
        if c:
            # float64 sums: the same total regardless of how groups are batched.
            sums[gi] = vecs[pos : pos + c].astype(np.float64).sum(axis=0)
        pos += c
    return sums.astype(np.float32), counts
