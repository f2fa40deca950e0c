"""Batched sampling loops over HF models with a KV cache (what ``QueryGenerator`` runs).

Why not ``model.generate``: it draws every row's sample from one global RNG
(a row's tokens would depend on its neighbours), keeps finished rows decoding
until the longest is done, and cannot start from cached prefixes.

Layout of a causal batch: ``[padding | prefix | padding | suffix | new tokens]``.  A batch
mixes prompts of different cached prefixes (few-shot prefixes differ per language and
exemplar group), each right-aligned to the longest, so batches fill up however many
prefixes a unit has.  Pads are masked out and every real token gets the position it has
in the unpadded prompt (explicit ``position_ids``), so a row computes what it would
alone up to float rounding.  A seq2seq batch right-pads the encoder input.
A prompt's ``n`` samples are ``n`` rows made by repeating its cache after the
prefill; rows that hit a stop token leave the batch (and the cache) at once.
"""

from __future__ import annotations

import inspect
from typing import Any, Dict, List, Optional, Sequence, Tuple

import torch

from .sampling import draw_uniform, effective_k, row_generators, sample_top_k


def cache_kwargs(model, cache) -> Dict[str, Any]:  # noqa: ANN001 - HF model / Cache
    """The keyword under which ``model``'s forward takes a KV cache object: ``{name: cache}``.

    transformers 5.x renamed ``past_key_values`` to ``cache`` (the old name warns
    "deprecated and will be removed in version 5.40.0"); the forward's own
    signature says which name the installed version reads.  Passing the new
    name to a forward that predates it would land in ``**kwargs`` and be
    ignored -- decoding without a cache, silently wrong -- hence no fixed name.
    """
    params = inspect.signature(model.forward).parameters
    if "cache" in params:
        return {"cache": cache}
    if "past_key_values" in params:
        return {"past_key_values": cache}
    raise TypeError(f"{type(model).__name__}.forward takes neither cache= nor past_key_values=: no KV cache decoding")


def prefill_prefix(model, ids: Sequence[int], base: Optional[Tuple[Any, int]] = None):  # noqa: ANN001, ANN201 - HF model / DynamicCache
    """The KV cache of ``ids`` (batch 1), to be copied into batches by :func:`causal_sample`.

    ``base``: (the cache of ``ids[:n]``, n), extended by a copy (the base is read, never modified):
    a passage's prefix prefilled on its exemplar part's cache, the same keys and values as from the
    start up to float rounding.
    """
    import copy

    from transformers import DynamicCache

    cache = DynamicCache(config=model.config) if base is None else copy.deepcopy(base[0])
    rest = list(ids) if base is None else list(ids)[base[1]:]
    x = torch.tensor([rest], dtype=torch.long, device=model.device)
    model(input_ids=x, **cache_kwargs(model, cache), use_cache=True, logits_to_keep=1)
    return cache


class PrefixCaches:
    """A generator's prefix KV caches (batch 1, :func:`prefill_prefix`), the last ``entries`` kept.

    ``bases``: for a shared-passage prefix, the length of its leading exemplar part, which passages
    with the same exemplar draw share: that part's cache is kept alike, and the passage's prefix is
    prefilled on a copy of it rather than from its first token.
    """

    def __init__(self, entries: int) -> None:
        self.entries = entries
        self.bases: Dict[Tuple[int, ...], int] = {}
        self.kv: Dict[Tuple[int, ...], Any] = {}
        self.base_kv: Dict[Tuple[int, ...], Any] = {}

    def get(self, model, ids: Tuple[int, ...]):  # noqa: ANN001, ANN201 - HF model / DynamicCache
        n = self.bases.get(ids, 0)
        return self._cached(model, self.kv, ids, lambda: (self._cached(model, self.base_kv, ids[:n]), n) if n else None)

    def _cached(self, model, store: Dict[Tuple[int, ...], Any], ids: Tuple[int, ...], base: Any = lambda: None):  # noqa: ANN001, ANN202
        if ids not in store:
            while len(store) >= self.entries:
                store.pop(next(iter(store)))  # the oldest
            store[ids] = prefill_prefix(model, list(ids), base())
        return store[ids]


def _repeat_index(counts: Sequence[int], device: torch.device) -> Optional[torch.Tensor]:
    """Row index that repeats prompt ``i`` ``counts[i]`` times (None when every count is 1)."""
    if all(c == 1 for c in counts):
        return None
    return torch.repeat_interleave(torch.arange(len(counts), device=device), torch.tensor(list(counts), device=device))


def stack_prefixes(model, prefixes: Sequence[Tuple[Any, int]], prefix_of: Sequence[Optional[int]]):  # noqa: ANN001, ANN201
    """One batch KV cache: row ``i`` holds ``prefixes[prefix_of[i]]`` right-aligned to the longest prefix.

    ``prefixes`` are :func:`prefill_prefix`'s ``(cache, length)``; a row whose
    ``prefix_of`` is None gets no prefix (all of its prefix span is padding).
    The zeros left of a shorter prefix are masked by :func:`causal_sample`, and
    the cached keys keep the positions they were computed at, so a row attends
    to exactly its own prefix.  The stored caches are read, never modified.
    """
    from transformers import DynamicCache

    width = max(n for _, n in prefixes)
    out = DynamicCache(config=model.config)
    for li in range(len(prefixes[0][0].layers)):
        ks, vs = [], []
        for cache, n in prefixes:
            k, v = cache.layers[li].keys, cache.layers[li].values
            # A sliding-window layer keeps its last window - 1 tokens; a prompt never exceeds
            # max_input_length (<= the window for the bundled models), so a prefix is whole.
            if k.shape[-2] != n:
                raise ValueError(f"prefix cache layer {li} holds {k.shape[-2]} of {n} tokens: cannot stack it")
            ks.append(torch.nn.functional.pad(k, (0, 0, width - n, 0)))
            vs.append(torch.nn.functional.pad(v, (0, 0, width - n, 0)))
        zero = len(prefixes)  # the index of an all-padding prefix, for rows without one
        ks.append(torch.zeros_like(ks[0][:1]))
        vs.append(torch.zeros_like(vs[0][:1]))
        idx = torch.tensor([zero if j is None else j for j in prefix_of], dtype=torch.long, device=ks[0].device)
        out.update(torch.cat(ks)[idx], torch.cat(vs)[idx], li)
    return out


def causal_sample(model, prefixes: Sequence[Tuple[Any, int]], prefix_of: Sequence[Optional[int]], suffixes: List[List[int]],  # noqa: ANN001
                  counts: Sequence[int], seeds: Sequence[int], pad_id: int, *, top_k: int, temperature: float,
                  max_new_tokens: int, stop_ids: Sequence[int]) -> List[List[int]]:
    """Sampled continuations of ``prefix + suffixes[i]``, ``counts[i]`` each, one seed per sample row.

    ``prefixes`` are the distinct cached prefixes of the batch, as
    :func:`prefill_prefix`'s ``(cache, length)``; suffix ``i`` follows
    ``prefixes[prefix_of[i]]``, or nothing when ``prefix_of[i]`` is None (then
    the suffix is a whole prompt).  Prompts of different prefixes share one
    batch: each row is ``[padding | its prefix | padding | its suffix]``, the
    padding masked and every real token at the position it has alone.
    Returns the new tokens of each sample row (stop token excluded), prompt-major.
    """
    from transformers import DynamicCache

    dev = model.device
    # Only the prefixes some row uses are stacked (their longest sets the padded width).
    keep = sorted({j for j in prefix_of if j is not None})
    used, remap = [prefixes[j] for j in keep], {j: k for k, j in enumerate(keep)}
    of = [None if j is None else remap[j] for j in prefix_of]
    lens = [0 if j is None else used[j][1] for j in of]
    plen = max(lens)
    b, width = len(suffixes), max(len(s) for s in suffixes)
    ids = torch.full((b, width), pad_id, dtype=torch.long)
    mask = torch.zeros((b, plen + width), dtype=torch.long)
    pos = torch.zeros((b, width), dtype=torch.long)
    for i, s in enumerate(suffixes):
        ids[i, width - len(s) :] = torch.tensor(s, dtype=torch.long)
        mask[i, plen - lens[i] : plen] = 1
        mask[i, plen + width - len(s) :] = 1
        pos[i, width - len(s) :] = torch.arange(lens[i], lens[i] + len(s))
    cache = stack_prefixes(model, used, of) if used else DynamicCache(config=model.config)
    ids, mask, pos = ids.to(dev), mask.to(dev), pos.to(dev)
    kv = cache_kwargs(model, cache)  # once per batch: the cache object is updated in place
    out = model(input_ids=ids, attention_mask=mask, position_ids=pos, **kv, use_cache=True, logits_to_keep=1)
    logits = out.logits[:, -1]
    nxt = torch.tensor([n + len(s) for n, s in zip(lens, suffixes)], dtype=torch.long, device=dev)
    rep = _repeat_index(counts, dev)
    if rep is not None:  # the samples of a prompt share its prefill
        cache.batch_select_indices(rep)
        logits, mask, nxt = logits[rep], mask[rep], nxt[rep]
    state = {"mask": mask, "pos": nxt}

    def step(tokens: torch.Tensor) -> torch.Tensor:
        m = torch.cat([state["mask"], torch.ones_like(state["mask"][:, :1])], dim=1)
        o = model(input_ids=tokens[:, None], attention_mask=m, position_ids=state["pos"][:, None], **kv, use_cache=True)
        state["mask"], state["pos"] = m, state["pos"] + 1
        return o.logits[:, -1]

    def select(idx: torch.Tensor) -> None:
        cache.batch_select_indices(idx)
        state["mask"], state["pos"] = state["mask"][idx], state["pos"][idx]

    return decode_loop(logits, seeds, step, select, top_k=top_k, temperature=temperature, max_new_tokens=max_new_tokens, stop_ids=stop_ids)


def seq2seq_sample(model, inputs: List[List[int]], counts: Sequence[int], seeds: Sequence[int], pad_id: int, *,  # noqa: ANN001
                   top_k: int, temperature: float, max_new_tokens: int, stop_ids: Sequence[int]) -> List[List[int]]:
    """Sampled decoder outputs for the encoder inputs ``inputs[i]``, ``counts[i]`` each (stop token excluded)."""
    from transformers import DynamicCache, EncoderDecoderCache
    from transformers.modeling_outputs import BaseModelOutput

    dev = model.device
    b, width = len(inputs), max(len(s) for s in inputs)
    ids = torch.full((b, width), pad_id, dtype=torch.long)
    mask = torch.zeros((b, width), dtype=torch.long)
    for i, s in enumerate(inputs):
        ids[i, : len(s)] = torch.tensor(s, dtype=torch.long)
        mask[i, : len(s)] = 1
    ids, mask = ids.to(dev), mask.to(dev)
    enc = model.get_encoder()(input_ids=ids, attention_mask=mask).last_hidden_state
    cache = EncoderDecoderCache(DynamicCache(), DynamicCache())
    kv = cache_kwargs(model, cache)  # once per batch: the cache object is updated in place
    start = torch.full((b, 1), model.config.decoder_start_token_id, dtype=torch.long, device=dev)
    out = model(encoder_outputs=BaseModelOutput(last_hidden_state=enc), attention_mask=mask, decoder_input_ids=start, **kv, use_cache=True)
    logits = out.logits[:, -1]
    rep = _repeat_index(counts, dev)
    if rep is not None:
        cache.batch_select_indices(rep)
        logits, enc, mask = logits[rep], enc[rep], mask[rep]
    state = {"enc": enc, "mask": mask}

    def step(tokens: torch.Tensor) -> torch.Tensor:
        o = model(encoder_outputs=BaseModelOutput(last_hidden_state=state["enc"]), attention_mask=state["mask"],
                  decoder_input_ids=tokens[:, None], **kv, use_cache=True)
        return o.logits[:, -1]

    def select(idx: torch.Tensor) -> None:
        cache.batch_select_indices(idx)
        state["enc"], state["mask"] = state["enc"][idx], state["mask"][idx]

    return decode_loop(logits, seeds, step, select, top_k=top_k, temperature=temperature, max_new_tokens=max_new_tokens, stop_ids=stop_ids)


def decode_loop(logits: torch.Tensor, seeds: Sequence[int], step, select, *, top_k: int, temperature: float,  # noqa: ANN001
                max_new_tokens: int, stop_ids: Sequence[int]) -> List[List[int]]:
    """Sample until every row stops or has ``max_new_tokens``; finished rows are dropped from the batch.

    ``logits`` ``[R, V]`` predict each row's first token; ``step(tokens)``
    feeds the active rows' tokens and returns their next logits;
    ``select(idx)`` keeps only rows ``idx`` of the model state.
    """
    gens = row_generators(seeds)
    k = effective_k(top_k, logits.shape[-1])
    stop = set(int(t) for t in stop_ids)
    out: List[List[int]] = [[] for _ in seeds]
    active = list(range(len(seeds)))  # original row of each batch position
    for t in range(max_new_tokens):
        toks = sample_top_k(logits, draw_uniform([gens[r] for r in active], k), top_k, temperature).tolist()
        keep = [j for j, tok in enumerate(toks) if tok not in stop]
        for j in keep:
            out[active[j]].append(toks[j])
        if not keep or t == max_new_tokens - 1:
            break
        tokens = torch.tensor([toks[j] for j in keep], dtype=torch.long, device=logits.device)
        if len(keep) < len(active):
            select(torch.tensor(keep, dtype=torch.long, device=logits.device))
            active = [active[j] for j in keep]
        logits = step(tokens)
    return out
