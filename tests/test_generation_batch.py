"""Batched generation: per-row seeded sampling, batch independence, prefix reuse, stopping and retries."""

from __future__ import annotations

import dataclasses
import math
from typing import List

import pytest
import torch

from xqg_ray.config import GeneratorConfig
from xqg_ray.config.schema import FilterConfig
from xqg_ray.models import decoding
from xqg_ray.models.sampling import draw_uniform, effective_k, gumbel, row_generators, sample_top_k

ROWS = [
    (7, "Title", "some passage text"),
    (8, "Other", "another passage that is a good deal longer than the first one, with more words in it"),
    (9, "Third", "x"),
    (10, "Super Bowl", "the game was played in february at levi's stadium in santa clara"),
    (11, "River", "the river flows through the city"),
]


# ------------------------------------------------------------------ sampling math


def test_top_k_gumbel_by_hand():
    logits = torch.tensor([[0.0, 5.0, 1.0, 3.0]])
    # top-2 candidates: id 1 (5.0) then id 3 (3.0); Gumbel(u) = -log(-log(u))
    u_first = torch.tensor([[0.5, 0.5]])  # equal noise: the larger logit wins
    assert sample_top_k(logits, u_first, 2, 1.0).tolist() == [1]
    # noise that beats the 2.0 gap: g(0.999) - g(0.01) = 6.907 + 1.527 > 2
    u_second = torch.tensor([[0.01, 0.999]])
    assert sample_top_k(logits, u_second, 2, 1.0).tolist() == [3]
    # at temperature 0.1 the gap is 20: the same noise no longer overturns it
    assert sample_top_k(logits, u_second, 2, 0.1).tolist() == [1]
    assert sample_top_k(logits, u_second, 2, 0.0).tolist() == [1]  # greedy
    assert gumbel(torch.tensor([0.5])).item() == pytest.approx(-math.log(math.log(2.0)))
    assert torch.isfinite(gumbel(torch.tensor([0.0, 1.0 - 2**-24]))).all()
    assert effective_k(10, 600) == 10 and effective_k(0, 600) == 600 and effective_k(1000, 600) == 600


def test_top_k_sampling_distribution():
    logits = torch.tensor([2.0, 1.0, 0.0, -1.0, 5.0])
    gens = row_generators([123])
    picks = torch.stack([sample_top_k(logits[None], draw_uniform(gens, 3), 3, 2.0) for _ in range(4000)]).flatten()
    want = torch.softmax(torch.tensor([5.0, 2.0, 1.0]) / 2.0, 0)  # top-3 ids 4, 0, 1
    got = torch.stack([(picks == i).float().mean() for i in (4, 0, 1)])
    assert (picks != 2).all() and (picks != 3).all()
    assert torch.allclose(got, want, atol=0.025), (got, want)


def test_uniforms_depend_only_on_the_row_seed():
    a = draw_uniform(row_generators([1, 2, 3]), 4)
    b = draw_uniform(row_generators([2]), 4)
    assert torch.equal(a[1], b[0]) and not torch.equal(a[0], a[1])


# ------------------------------------------------------------------ decode loop


def test_decode_loop_drops_finished_rows():
    """Row r emits token 10 + r until step r, then the stop token 0; finished rows leave the batch."""
    vocab, stop = 20, 0
    state = {"rows": [0, 1, 2], "t": 0}
    selected: List[List[int]] = []

    def logits_for(rows: List[int], t: int) -> torch.Tensor:
        out = torch.full((len(rows), vocab), -1e9)
        for j, r in enumerate(rows):
            out[j, stop if t >= r else 10 + r] = 0.0
        return out

    def step(tokens: torch.Tensor) -> torch.Tensor:
        assert tokens.tolist() == [10 + r for r in state["rows"]]
        state["t"] += 1
        return logits_for(state["rows"], state["t"])

    def select(idx: torch.Tensor) -> None:
        selected.append(idx.tolist())
        state["rows"] = [state["rows"][i] for i in idx.tolist()]

    out = decoding.decode_loop(logits_for([0, 1, 2], 0), [5, 6, 7], step, select, top_k=3, temperature=1.0, max_new_tokens=8, stop_ids=[stop])
    assert out == [[], [11], [12, 12]]
    assert selected == [[1, 2], [1]]  # batch positions kept: row 0 leaves after step 0, row 1 after step 1
    capped = decoding.decode_loop(logits_for([2], 0), [7], lambda t: logits_for([2], 0), lambda i: None, top_k=3, temperature=1.0, max_new_tokens=1, stop_ids=[stop])
    assert capped == [[12]]


# ------------------------------------------------------------------ tiny models


def _gen(tiny_models, kind: str, batch_size: int = 3, **kw):
    from xqg_ray.models.generator import QueryGenerator

    model = "tiny-t5" if kind == "seq2seq" else "tiny-gpt2"
    cfg = GeneratorConfig(kind=kind, model=tiny_models[model], languages=["de", "zh"], n_per_language=2, max_new_tokens=6, few_shot=1, batch_size=batch_size, **kw)
    return QueryGenerator("g", cfg, torch_threads=1)


@pytest.mark.parametrize("kind", ["seq2seq", "causal"])
def test_queries_do_not_depend_on_the_batch(tiny_models, kind):
    gen = _gen(tiny_models, kind)
    alone = [gen.generate(*r) for r in ROWS]
    assert all(f == 0 and [q["lang"] for q in qs] == ["de", "de", "zh", "zh"] for qs, f in alone)
    assert len({q["text"] for qs, _ in alone for q in qs}) >= 15  # the samples really differ
    assert gen.generate_many(ROWS) == alone  # batches of 3 prompts, mixed lengths (padding)
    assert gen.generate_many(ROWS[::-1]) == alone[::-1]  # other neighbours, other padding
    gen.cfg.batch_size = 8
    assert gen.generate_many([ROWS[3], ROWS[1]]) == [alone[3], alone[1]]
    again = _gen(tiny_models, kind, batch_size=2)  # a fresh actor: deterministic across reruns
    assert again.generate_many(ROWS) == alone
    assert again.generate(12, *ROWS[0][1:]) != alone[0]  # the seed depends on the passage id


@pytest.mark.parametrize("kind", ["seq2seq", "causal"])
def test_draws_ahead_equal_each_round_sampled_alone(tiny_models, kind):
    """filters.draw_ahead: the later rounds' draws sampled beside round 0, from its prefill, are the draws
    each round samples on its own (a random model's text is wrong-language noise: every slot is redrawn)."""
    rounds = FilterConfig(enabled=["empty", "wrong_language"], max_attempts=3)
    plain = _gen(tiny_models, kind, filters=rounds).generate_attempts(ROWS)
    assert {d["round"] for ds in plain for d in ds} == {0, 1, 2}
    for ahead, made in ((1, 1 * 10 * 2), (2, 2 * 10 * 2)):  # rounds ahead x 10 prompts x 2 draws
        gen = _gen(tiny_models, kind, filters=dataclasses.replace(rounds, draw_ahead=ahead))
        assert gen.generate_attempts(ROWS) == plain
        assert gen.plan.made == made and gen.plan.used == sum(d["round"] in range(1, 1 + ahead) for ds in plain for d in ds)


def _tokens(gen, rows, lang, reuse):
    """Raw sampled token ids of ``rows`` in one batch, with and without the cached prefix."""
    pres, sufs = zip(*(gen.prompt_ids(0, t, x, lang) for _, t, x in rows))  # one passage id: one drawn prefix
    counts, seeds = [2] * len(rows), list(range(100, 100 + 2 * len(rows)))
    kw = dict(top_k=gen.cfg.top_k, temperature=1.0, max_new_tokens=6, stop_ids=gen.stop_ids)
    with torch.inference_mode():
        if reuse:
            assert len(set(pres)) == 1 and len(pres[0]) > 0
            prefix = gen.prefixes.get(gen.model, pres[0])
            return decoding.causal_sample(gen.model, [(prefix, len(pres[0]))], [0] * len(rows), list(sufs), counts, seeds, gen.tokenizer.pad_token_id, **kw)
        full = [list(p) + s for p, s in zip(pres, sufs)]
        return decoding.causal_sample(gen.model, [], [None] * len(rows), full, counts, seeds, gen.tokenizer.pad_token_id, **kw)


def test_prefix_reuse_equals_full_prompt(tiny_models):
    gen = _gen(tiny_models, "causal")
    pre, suf = gen.prompt_ids(0, "Title", "some passage text", "de")
    pre_text, suf_text = gen._causal_parts(0, "Title", "some passage text", "de")
    assert suf_text == "Title: Title\nPassage: some passage text\nGerman question:"
    # BOS + the prefix, then the suffix, each tokenized on its own (the byte-level BPE adds a leading space)
    assert pre[0] == gen.tokenizer.bos_token_id and gen.tokenizer.decode(list(pre[1:])) == " " + pre_text
    assert gen.tokenizer.decode(suf) == " " + suf_text
    with_reuse = _tokens(gen, ROWS[:4], "de", reuse=True)
    assert with_reuse == _tokens(gen, ROWS[:4], "de", reuse=False)
    assert len({tuple(t) for t in with_reuse}) == 8
    # the stored prefix cache is untouched by the batches that copied it
    assert with_reuse == _tokens(gen, ROWS[:4], "de", reuse=True)
    off = _gen(tiny_models, "causal")
    off.prefix_reuse = False
    assert off.prompt_ids(0, "Title", "some passage text", "de") == ((), list(pre) + suf)
    assert off.generate_many(ROWS) == gen.generate_many(ROWS)


def _tiny_gemma3(vocab: int, window: int = 512):
    """A random Gemma 3 text model: sliding-window and full-attention layers, as the bundled Gemma."""
    from transformers import Gemma3ForCausalLM, Gemma3TextConfig

    torch.manual_seed(0)
    cfg = Gemma3TextConfig(vocab_size=vocab, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                           num_key_value_heads=1, head_dim=16, sliding_window=window, layer_types=["sliding_attention", "full_attention"],
                           max_position_embeddings=1024)
    model = Gemma3ForCausalLM(cfg).eval()
    with torch.no_grad():  # spread the logits (std ~0.1 at init): near-ties would let float rounding pick the sample
        model.lm_head.weight.mul_(30.0)
    return model


@pytest.mark.parametrize("arch", ["gpt2", "gemma3"])
def test_a_batch_of_mixed_prefixes_equals_each_prompt_alone(tiny_models, arch):
    """Prompts of three prefixes and one without a prefix, in one batch: each row samples what it samples alone.

    (A mask that let rows see the padding left of their prefix fails the gemma3 case; explicit positions
    counted from the padded width fail both.)"""
    gen = _gen(tiny_models, "causal")
    if arch == "gemma3":
        gen.model = _tiny_gemma3(len(gen.tokenizer))
    parts = [gen.prompt_ids(pid, t, x, lang) for pid, t, x in ROWS[:3] for lang in ("de", "zh")]
    distinct = list(dict.fromkeys(pre for pre, _ in parts))
    assert len(distinct) >= 3 and len({len(p) for p in distinct}) >= 2  # different prefixes, different lengths
    pres = [(gen.prefixes.get(gen.model, p), len(p)) for p in distinct]
    of = [distinct.index(pre) for pre, _ in parts] + [None]
    sufs = [suf for _, suf in parts] + [list(parts[0][0]) + parts[0][1]]  # the last row: a whole prompt, no prefix
    counts = [2, 1, 2, 1, 2, 1, 2]
    seeds = list(range(500, 499 + sum(counts))) + [500]  # the last row draws with the first row's seed
    kw = dict(top_k=gen.cfg.top_k, temperature=1.0, max_new_tokens=6, stop_ids=gen.stop_ids)
    pad = gen.tokenizer.pad_token_id
    with torch.inference_mode():
        mixed = decoding.causal_sample(gen.model, pres, of, sufs, counts, seeds, pad, **kw)
        alone, k = [], 0
        for j, suf, c in zip(of, sufs, counts):
            one = [] if j is None else [pres[j]]
            alone += decoding.causal_sample(gen.model, one, [None if j is None else 0], [suf], [c], seeds[k : k + c], pad, **kw)
            k += c
    assert mixed == alone
    assert len({tuple(t) for t in mixed}) >= 8  # the rows really differ
    assert mixed[-1] == mixed[0]  # the whole prompt samples what its cached prefix + suffix does (same seed)
    # the stored caches are read, not modified: the same batch again gives the same samples
    with torch.inference_mode():
        assert decoding.causal_sample(gen.model, pres, of, sufs, counts, seeds, pad, **kw) == mixed


def test_a_prefix_longer_than_the_sliding_window_goes_in_whole(tiny_models):
    """A sliding layer keeps only window - 1 tokens: such a prefix is not cached (it could not be stacked)."""
    gen = _gen(tiny_models, "causal")
    pre, suf = gen.prompt_ids(7, *ROWS[0][1:], "de")
    gen.model = _tiny_gemma3(len(gen.tokenizer), window=len(pre))  # the prefix is one token too long
    assert gen.prompt_ids(7, *ROWS[0][1:], "de") == ((), list(pre) + suf)
    gen.model = _tiny_gemma3(len(gen.tokenizer), window=len(pre) + 1)
    assert gen.prompt_ids(7, *ROWS[0][1:], "de") == (pre, suf)
    gen.model = _tiny_gemma3(len(gen.tokenizer), window=len(pre))
    out = gen.generate_many(ROWS)  # mixed with whole prompts and ones whose prefix fits: no error
    assert [len(qs) + failed for qs, failed in out] == [4] * len(ROWS)  # every slot drawn (a random model leaves some empty)


def test_batches_fill_up_across_prefixes(tiny_models):
    from xqg_ray.models.generator import Prompt

    gen = _gen(tiny_models, "causal", batch_size=4)
    prompts = [Prompt(i, lang, *gen.prompt_ids(pid, t, x, lang), [1]) for i, (pid, t, x) in enumerate(ROWS) for lang in ("de", "zh")]
    assert len({p.prefix for p in prompts}) >= 4
    batches = gen._batches(prompts)
    assert [len(b) for b in batches] == [4, 4, 2]
    assert sorted(k for b in batches for k in b) == list(range(10))
    lengths = [len(prompts[k].suffix) for b in batches for k in b]
    assert lengths == sorted(lengths)  # similar lengths share a batch: least padding


def test_long_prompt_is_cut_from_the_left_without_a_shared_prefix(tiny_models):
    gen = _gen(tiny_models, "causal", max_input_length=64)
    long_text = " ".join(["the river flows through the city"] * 30)
    pre, ids = gen.prompt_ids(1, "T", long_text, "de")
    full_pre, full_suf = _gen(tiny_models, "causal").prompt_ids(1, "T", long_text, "de")
    assert pre == () and len(ids) == 64 and ids[0] == gen.tokenizer.bos_token_id
    assert ids[1:] == (list(full_pre) + full_suf)[-63:]  # the BOS stays, the oldest tokens go
    rows = [(1, "T", long_text), *ROWS[:2]]  # a cut prompt batched next to reused-prefix ones
    assert gen.generate_many(rows) == [gen.generate(*r) for r in rows]


def test_causal_stops_at_newline(tiny_models):
    gen = _gen(tiny_models, "causal")
    newline = gen.tokenizer.convert_tokens_to_ids("Ċ")
    assert newline in gen.stop_ids and gen.tokenizer.eos_token_id in gen.stop_ids
    toks = _tokens(gen, ROWS[:4], "de", reuse=True)
    assert all(len(t) <= 6 and not set(t) & set(gen.stop_ids) for t in toks)


def test_empty_outputs_are_resampled_with_new_seeds(tiny_models, monkeypatch):
    # Filters off: this test counts the calls that resample *empty* outputs only.
    gen = _gen(tiny_models, "seq2seq", filters=FilterConfig(enabled=[]))
    calls = []
    real = gen._run

    def flaky(prompts):
        calls.append([(p.row, p.lang, tuple(p.seeds)) for p in prompts])
        out = real(prompts)
        # every first-round sample of row 0 comes back empty; its retries do not
        return [["" for _ in t] if len(calls) == 1 and p.row == 0 else t for p, t in zip(prompts, out)]

    monkeypatch.setattr(gen, "_run", flaky)
    res = gen.generate_many(ROWS[:2])
    assert len(calls) == 2 and [(r, lang) for r, lang, _ in calls[1]] == [(0, "de"), (0, "zh")]
    first = {(r, lang): s for r, lang, s in calls[0]}
    assert all(len(s) == 2 and not set(s) & set(first[(r, lang)]) for r, lang, s in calls[1])
    assert res[0][1] == 0 and len(res[0][0]) == 4 and res[1] == gen.generate(*ROWS[1])
    monkeypatch.setattr(gen, "_run", lambda prompts: [[""] * len(p.seeds) for p in prompts])
    assert gen.generate_many(ROWS[:1]) == [([], 4)]  # still empty after RETRY_ROUNDS: failed slots


# ------------------------------------------------------------------ cache API


@pytest.mark.parametrize("kind", ["seq2seq", "causal"])
def test_decoding_raises_no_transformers_deprecation(tiny_models, kind, monkeypatch):
    """The KV cache goes in under the name the installed forward reads: no FutureWarning, same samples."""
    import warnings

    import transformers

    gen = _gen(tiny_models, kind)
    assert decoding.cache_kwargs(gen.model, "C") == {"cache": "C"}  # transformers 5.24 renamed past_key_values
    with warnings.catch_warnings():
        warnings.simplefilter("error", FutureWarning)
        warnings.simplefilter("error", DeprecationWarning)
        got = gen.generate_many(ROWS[:3])
    assert [f for _, f in got] == [0, 0, 0] and all(len(qs) == 4 for qs, _ in got)
    major, minor = (int(x) for x in transformers.__version__.split(".")[:2])
    if (major, minor) < (5, 40):  # the old name still works: it must give the very same tokens
        monkeypatch.setattr(decoding, "cache_kwargs", lambda model, cache: {"past_key_values": cache})
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            assert _gen(tiny_models, kind).generate_many(ROWS[:3]) == got


def test_cache_kwargs_follows_the_forward_signature():
    class Old:
        def forward(self, input_ids=None, past_key_values=None, **kwargs): ...

    class New:
        def forward(self, input_ids=None, cache=None, **kwargs): ...

    class Neither:
        def forward(self, input_ids=None, **kwargs): ...

    assert decoding.cache_kwargs(Old(), 1) == {"past_key_values": 1}
    assert decoding.cache_kwargs(New(), 1) == {"cache": 1}
    with pytest.raises(TypeError, match="Neither.forward takes neither cache= nor past_key_values="):
        decoding.cache_kwargs(Neither(), 1)
