"""The shared dense encoder: HF model + tokenizer, CLS or mean pooling.

One model encodes passages, generated queries and test queries (as in xQG).
``Encoder.encode_stream`` takes any iterable of texts and cuts it into windows
of at most ``encoder.window_rows`` texts, so what it holds is bounded by the
config, not by the data.  Each window is tokenized (in calls of
``TOKENIZE_ROWS`` texts, keeping only the flat ids), ordered by token length
and cut into sub-batches by a budget of padded tokens, each padded only to its
own longest row from the pre-tokenized ids (cuts placed to trade padding
against forwards); pooling and L2 normalisation run on the model's
device and only the pooled ``[B, H]`` vectors come back, window by window, in
input order.  ``Encoder.encode`` is the same stream gathered into one array.
The pure helpers (``windows``, ``plan_batches``, ``pad_rows``, numpy ``pool``)
are tested without a model.
"""

from __future__ import annotations

from itertools import chain, islice
from typing import Any, Iterable, Iterator, List, Sequence, Tuple, TypeVar

import numpy as np

from ..config import EncoderConfig

# The fixed cost of one forward, in tokens' worth of compute, for plan_batches.
# CPU: small (Python and thread start-up per layer; with one thread, 8 rows of
# 180 tokens cost no more per token than 16); 128 tokens was within 1% of the
# best plan for true costs of 50-200 in a cost model of the SQuAD-dev passages.
# CUDA: a forward of a few thousand tokens of a small encoder is bound by
# kernel launches, so cuts are dear (an estimate, not measured here).
FORWARD_OVERHEAD_TOKENS = {"cpu": 128.0, "cuda": 4096.0}
# At most this many padded tokens per forward, below batch_size x max length.
# CPU: e5-small's per-token cost rose ~10% from 1.5-3k to 8k tokens per
# forward (the activations leave the caches; one thread, this 2-core machine);
# 3072 is about the reference loop's 16 passages of ~180 tokens.
MAX_FORWARD_TOKENS = {"cpu": 3072}
KINDS = ("query", "passage")
# Texts per tokenizer call inside a window.  Until a call returns, a fast tokenizer
# holds ~60 KB per text of ~350 tokens (token strings, offsets, the overflow past
# max length): 1 GB for a window of 16k passages, measured here.  Calls of 1,024 keep
# that near 60 MB; only the flat int64 ids of the window stay.
TOKENIZE_ROWS = 1024

T = TypeVar("T")


def windows(items: Iterable[T], rows: int) -> Iterator[List[T]]:
    """Consecutive lists of at most ``rows`` items (the last may be shorter); never an empty one."""
    it = iter(items)
    while True:
        w = list(islice(it, max(1, rows)))
        if not w:
            return
        yield w


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


def pool_torch(hidden: Any, mask: Any, mode: str) -> Any:
    """:func:`pool` on the device: float32 ``[B, H]`` from ``[B, T, H]`` states of any dtype."""
    import torch

    if mode == "cls":
        return hidden[:, 0].float()
    if mode == "mean":
        # Accumulate in float32 whatever the model's dtype (bfloat16 sums lose digits).
        m = mask.to(torch.float32)
        s = torch.bmm(m.unsqueeze(1), hidden.float()).squeeze(1)
        return s / m.sum(dim=1, keepdim=True).clamp_min(1e-9)
    raise ValueError(f"pooling={mode!r}: use cls or mean")


def l2_normalize_torch(x: Any) -> Any:
    """:func:`l2_normalize` on the device (the same 1e-12 floor)."""
    import torch

    return torch.nn.functional.normalize(x, p=2.0, dim=1, eps=1e-12)


def format_passage(template: str, title: str, text: str) -> str:
    """``title + " " + text`` by default; stripped so an empty title adds no space."""
    return template.format(title=title or "", text=text or "").strip()


def length_order(lengths: np.ndarray) -> np.ndarray:
    """Longest first, ties in input order: deterministic, and the first forward shows the peak memory."""
    return np.lexsort((np.arange(len(lengths)), -np.asarray(lengths, np.int64)))


def plan_batches(lengths: np.ndarray, budget: int, overhead: float = 0.0, quad: float = 0.0) -> List[Tuple[int, int]]:
    """``[start, end)`` sub-batches of ``lengths`` (non-increasing), each with rows x its first length <= ``budget``.

    Where to cut is a trade: a cut saves padding but costs one more forward.
    The estimated cost of a sub-batch of ``rows`` padded to ``T`` tokens is
    ``rows * T * (1 + quad * T)`` (linear layers, then attention) plus
    ``overhead`` per forward; the cuts minimise it exactly over runs of equal
    length (a DP over at most max-length distinct lengths, so planning does not
    grow with the window), then a run that exceeds the budget is cut greedily.
    Never costlier than filling every sub-batch to the budget from the longest
    row (in the same cost model).  A row longer than the budget gets its own.
    """
    x = np.asarray(lengths, np.int64)
    n = len(x)
    if n == 0:
        return []
    starts = np.flatnonzero(np.r_[True, x[1:] != x[:-1]])  # runs of equal length
    ends = np.r_[starts[1:], n]
    width = x[starts].astype(np.float64)
    row_cost = width * (1.0 + quad * width)
    cap = np.maximum(1, budget // np.maximum(1, x[starts]))
    best, back = np.zeros(len(starts) + 1), np.zeros(len(starts) + 1, np.int64)
    for h in range(1, len(starts) + 1):  # best[h]: runs [0, h) covered; the last sub-batch starts at run g
        rows = ends[h - 1] - starts[:h]
        c = best[:h] + rows * row_cost[:h] + overhead * -(-rows // cap[:h])
        back[h] = int(np.argmin(c))
        best[h] = c[back[h]]
    spans, h = [], len(starts)
    while h:
        spans.append((int(starts[back[h]]), int(ends[h - 1])))
        h = int(back[h])
    plan = [c for s, e in reversed(spans) for c in _fill(x, s, e, budget)]
    # The DP prices a span as if all of it were padded to its first row, and never
    # starts a sub-batch inside a run; budget-filling from row 0 can (tiny budgets,
    # long runs): keep whichever plan is cheaper.
    greedy = _fill(x, 0, n, budget)

    def cost(p: List[Tuple[int, int]]) -> float:
        first = np.array([a for a, _ in p])
        rows = np.array([b - a for a, b in p])
        w = x[first].astype(np.float64)
        return float((rows * w * (1.0 + quad * w)).sum() + overhead * len(p))

    return plan if cost(plan) <= cost(greedy) else greedy


def _fill(x: np.ndarray, s: int, e: int, budget: int) -> List[Tuple[int, int]]:
    """``[s, e)`` cut greedily: each sub-batch as many rows as its first row's length allows."""
    out = []
    while s < e:
        k = min(e, s + max(1, budget // max(1, int(x[s]))))
        out.append((s, k))
        s = k
    return out


def pad_rows(flat: np.ndarray, starts: np.ndarray, lengths: np.ndarray, pad_id: int, left: bool = False) -> Tuple[np.ndarray, np.ndarray]:
    """(ids, mask) ``[B, T]`` int64 for rows ``flat[starts[i] : starts[i] + lengths[i]]``, T = the longest row.

    Vectorised gather: no Python work per row.
    """
    width = int(lengths.max()) if len(lengths) else 0
    col = np.arange(width, dtype=np.int64)[None, :]
    shift = (width - lengths)[:, None] if left else np.zeros((len(lengths), 1), np.int64)
    pos = col - shift  # the token index inside its row
    mask = (pos >= 0) & (pos < lengths[:, None])
    src = starts[:, None] + np.clip(pos, 0, None)
    ids = np.where(mask, flat[np.minimum(src, max(len(flat) - 1, 0))] if len(flat) else pad_id, pad_id)
    return ids.astype(np.int64), mask.astype(np.int64)


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
        # Attention FLOPs per row over linear-layer FLOPs per token: 4LHn^2 / 2L(4H^2 + 2HI) = n^2 / (2H + I).
        self.quad = 1.0 / (2 * self.dim + int(getattr(self.model.config, "intermediate_size", 4 * self.dim)))
        self.overhead = FORWARD_OVERHEAD_TOKENS.get(self.device, 128.0)
        pad = self.tokenizer.pad_token_id
        self.pad_id = int(pad) if pad is not None else 0
        self.left_pad = self.tokenizer.padding_side == "left"
        # Single-sequence token types are all 0 (as the tokenizer would give them).
        self.type_ids = "token_type_ids" in self.tokenizer.model_input_names

    def tokenize(self, texts: Sequence[str], max_len: int) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(flat ids, row starts, row lengths) of ``texts``, truncated to ``max_len``; no padding.

        One tokenizer call per ``TOKENIZE_ROWS`` texts.
        """
        flats, lens = [], []
        for chunk in windows(texts, TOKENIZE_ROWS):
            ids = self.tokenizer(chunk, truncation=True, max_length=max_len, padding=False,
                                 return_attention_mask=False, return_token_type_ids=False)["input_ids"]
            lens.append(np.fromiter(map(len, ids), np.int64, len(ids)))
            flats.append(np.fromiter(chain.from_iterable(ids), np.int64, int(lens[-1].sum())))
        lengths = np.concatenate(lens) if lens else np.zeros(0, np.int64)
        flat = np.concatenate(flats) if flats else np.zeros(0, np.int64)
        return flat, np.cumsum(lengths) - lengths, lengths

    def budget(self, max_len: int) -> int:
        """Padded tokens per forward: ``batch_size`` rows of the longest allowed length, capped per device.

        Short texts share larger sub-batches; plan_batches cuts below this where padding costs more.
        """
        return min(max(1, self.cfg.batch_size) * max_len, MAX_FORWARD_TOKENS.get(self.device, 1 << 62))

    def encode_stream(self, texts: Iterable[str], kind: str) -> Iterator[np.ndarray]:
        """float32 vectors of ``texts`` encoded as ``kind`` ("query" or "passage"), one array per window, in input order.

        Windows hold at most ``window_rows`` texts and are read from ``texts`` only
        when the previous window's vectors have been taken: memory is bounded by
        the config whatever the length of the stream.
        """
        if kind not in KINDS:
            raise ValueError(f"kind={kind!r}")
        return (self.encode_window(w, kind) for w in windows(texts, self.cfg.window_rows))

    def encode(self, texts: Iterable[str], kind: str) -> np.ndarray:
        """Encode ``texts`` as ``kind`` ("query" or "passage"); order is kept (:meth:`encode_stream`, gathered)."""
        parts = list(self.encode_stream(texts, kind))
        return np.concatenate(parts) if parts else np.zeros((0, self.dim), dtype=np.float32)

    def encode_window(self, texts: Sequence[str], kind: str) -> np.ndarray:
        """One window: tokenized at once, length-sorted, cut by the token budget; order is kept."""
        import torch

        if kind not in KINDS:
            raise ValueError(f"kind={kind!r}")
        prefix = self.cfg.query_prefix if kind == "query" else self.cfg.passage_prefix
        max_len = self.cfg.max_query_length if kind == "query" else self.cfg.max_passage_length
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        if not len(texts):
            return out
        flat, starts, lengths = self.tokenize([prefix + t for t in texts], max_len)
        order = length_order(lengths)
        budget = self.budget(max_len)
        # Pooled rows stay on the device in length order; one copy to the host per window.
        vecs = torch.empty((len(texts), self.dim), dtype=torch.float32, device=self.device)
        with torch.inference_mode():
            for s, e in plan_batches(lengths[order], budget, self.overhead, self.quad):
                idx = order[s:e]
                ids, mask = pad_rows(flat, starts[idx], lengths[idx], self.pad_id, self.left_pad)
                inputs = {"input_ids": torch.from_numpy(ids).to(self.device), "attention_mask": torch.from_numpy(mask).to(self.device)}
                if self.type_ids:
                    inputs["token_type_ids"] = torch.zeros_like(inputs["input_ids"])
                v = pool_torch(self.model(**inputs).last_hidden_state, inputs["attention_mask"], self.cfg.pooling)
                vecs[s:e] = l2_normalize_torch(v) if self.cfg.normalize else v
        out[order] = vecs.cpu().numpy()
        return out
