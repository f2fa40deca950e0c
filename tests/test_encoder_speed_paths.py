"""The encoder's token-budget path against the old character-sorted loop (kept here as the reference), on tiny-bert."""

from __future__ import annotations

from typing import List

import numpy as np
import pytest
import torch

from xqg_ray.config import EncoderConfig
from xqg_ray.models import encoder as encoder_module
from xqg_ray.models.encoder import (
    MAX_FORWARD_TOKENS,
    Encoder,
    l2_normalize,
    l2_normalize_torch,
    length_order,
    pad_rows,
    plan_batches,
    pool,
    pool_torch,
    windows,
)

WORDS = "river city bank museum treaty löwe 東京 пример the of and a".split()


def _texts(n: int, seed: int = 0) -> List[str]:
    rng = np.random.default_rng(seed)
    return [" ".join(rng.choice(WORDS, size=int(rng.integers(0, 40)))) for _ in range(n)]


def reference_encode(enc: Encoder, texts: List[str], kind: str) -> np.ndarray:
    """The encoder before token budgets: sort by characters, re-tokenize each batch, pool on the host."""
    prefix = enc.cfg.query_prefix if kind == "query" else enc.cfg.passage_prefix
    max_len = enc.cfg.max_query_length if kind == "query" else enc.cfg.max_passage_length
    out = np.zeros((len(texts), enc.dim), dtype=np.float32)
    order = sorted(range(len(texts)), key=lambda i: (len(texts[i]), texts[i]))
    bs = max(1, enc.cfg.batch_size)
    for start in range(0, len(order), bs):
        idx = order[start : start + bs]
        t = enc.tokenizer([prefix + texts[i] for i in idx], padding=True, truncation=True, max_length=max_len, return_tensors="pt")
        t = {k: v for k, v in t.items() if k in ("input_ids", "attention_mask", "token_type_ids")}
        with torch.inference_mode():
            hidden = enc.model(**t).last_hidden_state.float().numpy()
        vecs = pool(hidden, t["attention_mask"].numpy(), enc.cfg.pooling)
        out[idx] = l2_normalize(vecs) if enc.cfg.normalize else vecs
    return out


@pytest.fixture(scope="module", params=[("mean", True), ("cls", False)], ids=["mean-norm", "cls"])
def enc(request, tiny_models) -> Encoder:
    pooling, normalize = request.param
    cfg = EncoderConfig(model=tiny_models["tiny-bert"], pooling=pooling, normalize=normalize, query_prefix="query: ",
                        passage_prefix="passage: ", max_query_length=16, max_passage_length=24, batch_size=4, dtype="float32")
    return Encoder(cfg, torch_threads=1)


class _Recorder(torch.nn.Module):
    """Wraps the model and records each forward's input shape."""

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.inner, self.shapes = model, []

    def forward(self, **kw):
        self.shapes.append((tuple(kw["input_ids"].shape), kw["attention_mask"].sum(dim=1).max().item()))
        return self.inner(**kw)


def test_budget_cap(enc, monkeypatch):
    assert enc.budget(8) == 4 * 8
    monkeypatch.setattr(enc.cfg, "batch_size", 1000)
    assert enc.budget(512) == MAX_FORWARD_TOKENS["cpu"]


def test_plan_batches_by_hand():
    x = np.array([10, 8, 8, 3, 3, 3, 1])
    # forwards free: no padding at all, each run of one length split by the budget only
    assert plan_batches(x, 24) == [(0, 1), (1, 3), (3, 6), (6, 7)]
    assert plan_batches(np.array([4, 4, 4, 4, 4]), 8) == [(0, 2), (2, 4), (4, 5)]
    # forwards dear: the fewest sub-batches (3), then the least padding (10 + 2*8 + 4*3 = 38 tokens)
    assert plan_batches(x, 24, overhead=1000.0) == [(0, 1), (1, 3), (3, 7)]
    assert plan_batches(np.array([50, 5]), 24, overhead=1000.0) == [(0, 1), (1, 2)]  # a row over budget goes alone
    assert plan_batches(np.zeros(0, np.int64), 24) == []
    np.testing.assert_array_equal(length_order(np.array([3, 5, 3, 5, 1])), [1, 3, 0, 2, 4])


@pytest.mark.parametrize("overhead,quad", [(0.0, 0.0), (128.0, 1 / 2304), (4096.0, 0.0)])
def test_plan_batches_tile_within_budget(overhead, quad):
    x = np.sort(np.random.default_rng(4).integers(1, 120, size=500))[::-1]
    spans = plan_batches(x, 512, overhead, quad)
    assert spans[0][0] == 0 and spans[-1][1] == 500 and all(a[1] == b[0] for a, b in zip(spans, spans[1:]))
    assert all((e - s) * x[s] <= 512 for s, e in spans)
    padded = sum((e - s) * x[s] for s, e in spans)
    if overhead == 0.0:
        assert padded == x.sum()  # nothing padded when forwards cost nothing
    else:  # the optimum is never worse than greedy budget-filling in its own cost model
        greedy, s = [], 0
        while s < 500:
            greedy.append((s, min(500, s + 512 // x[s])))
            s = greedy[-1][1]

        def cost(sp):
            return sum((e - s) * x[s] * (1 + quad * x[s]) + overhead for s, e in sp)

        assert cost(spans) <= cost(greedy)


@pytest.mark.parametrize("left", [False, True])
def test_pad_rows_by_hand(left):
    flat = np.array([7, 8, 9, 4, 5, 6, 6, 1])
    ids, mask = pad_rows(flat, np.array([3, 0, 7]), np.array([4, 3, 1]), pad_id=0, left=left)
    if left:
        np.testing.assert_array_equal(ids, [[4, 5, 6, 6], [0, 7, 8, 9], [0, 0, 0, 1]])
        np.testing.assert_array_equal(mask, [[1, 1, 1, 1], [0, 1, 1, 1], [0, 0, 0, 1]])
    else:
        np.testing.assert_array_equal(ids, [[4, 5, 6, 6], [7, 8, 9, 0], [1, 0, 0, 0]])
        np.testing.assert_array_equal(mask, [[1, 1, 1, 1], [1, 1, 1, 0], [1, 0, 0, 0]])
    assert ids.dtype == np.int64 and mask.dtype == np.int64


def test_torch_pooling_equals_numpy():
    rng = np.random.default_rng(1)
    h = rng.normal(size=(3, 5, 4)).astype(np.float32)
    mask = np.array([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1], [1, 0, 0, 0, 0]])
    for mode in ("cls", "mean"):
        got = pool_torch(torch.from_numpy(h), torch.from_numpy(mask), mode).numpy()
        np.testing.assert_allclose(got, pool(h, mask, mode), rtol=1e-6, atol=1e-6)
    # bfloat16 states pool in float32
    assert pool_torch(torch.from_numpy(h).bfloat16(), torch.from_numpy(mask), "mean").dtype == torch.float32
    with pytest.raises(ValueError):
        pool_torch(torch.from_numpy(h), torch.from_numpy(mask), "max")
    x = np.array([[3.0, 4.0], [0.0, 0.0]], np.float32)
    np.testing.assert_allclose(l2_normalize_torch(torch.from_numpy(x)).numpy(), l2_normalize(x))


def test_equals_reference_algorithm(enc):
    long = " ".join(["museum"] * 200)  # far over max length: truncated
    texts = _texts(57) + ["", long, "the river", "the river", long + " tail"]
    for kind in ("passage", "query"):
        got, ref = enc.encode(texts, kind), reference_encode(enc, texts, kind)
        assert got.shape == (len(texts), 32) and got.dtype == np.float32
        np.testing.assert_allclose(got, ref, rtol=0, atol=1e-5)
    got = enc.encode(texts, "query")
    np.testing.assert_allclose(got[-3], got[-2], atol=1e-6)  # duplicates
    np.testing.assert_allclose(got[-4], got[-1], atol=1e-6)  # both truncated to the same tokens
    if enc.cfg.normalize:
        np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, rtol=1e-5)


def test_order_is_kept(enc):
    texts = _texts(30, seed=2)
    v = enc.encode(texts, "passage")
    np.testing.assert_allclose(enc.encode(texts[::-1], "passage")[::-1], v, atol=1e-5)
    for i in (0, 7, 29):
        np.testing.assert_allclose(enc.encode([texts[i]], "passage")[0], v[i], atol=1e-5)


def test_empty_window(enc):
    v = enc.encode([], "query")
    assert v.shape == (0, 32) and v.dtype == np.float32
    with pytest.raises(ValueError):
        enc.encode(["x"], "title")


def test_one_tokenizer_call_and_token_budget(enc, monkeypatch):
    texts = _texts(80, seed=3) + [" ".join(["city"] * 100)]
    calls = []
    tok = enc.tokenizer

    class Counting:
        def __getattr__(self, name):
            return getattr(tok, name)

        def __call__(self, *a, **kw):
            calls.append(kw.get("padding"))
            return tok(*a, **kw)

    rec = _Recorder(enc.model)
    monkeypatch.setattr(enc, "tokenizer", Counting())
    monkeypatch.setattr(enc, "model", rec)
    enc.encode(texts, "passage")
    assert calls == [False]  # the window is tokenized once, unpadded
    budget = enc.budget(enc.cfg.max_passage_length)
    assert budget == 4 * 24  # batch_size x max length, under the CPU cap
    assert sum(b for (b, _), _ in rec.shapes) == len(texts)
    widths = [t for (_, t), _ in rec.shapes]
    assert widths == sorted(widths, reverse=True) and widths[0] == enc.cfg.max_passage_length
    for (b, t), longest in rec.shapes:
        assert t == longest  # padded to its own longest row only
        assert b * t <= budget or b == 1
    assert len(rec.shapes) < len(texts) / enc.cfg.batch_size  # short rows share larger batches


def test_windows_by_hand():
    assert list(windows(range(7), 3)) == [[0, 1, 2], [3, 4, 5], [6]]
    assert list(windows(iter([]), 3)) == []
    assert list(windows("ab", 0)) == [["a"], ["b"]]  # never an empty window


def test_stream_reads_one_window_at_a_time(enc, monkeypatch):
    texts = _texts(23, seed=5)
    whole = enc.encode(texts, "query")
    monkeypatch.setattr(enc.cfg, "window_rows", 5)
    taken = []

    def source():
        for t in texts:
            taken.append(t)
            yield t

    calls = []
    tok = enc.tokenizer

    class Counting:
        def __getattr__(self, name):
            return getattr(tok, name)

        def __call__(self, batch, **kw):
            calls.append(len(batch))
            return tok(batch, **kw)

    monkeypatch.setattr(enc, "tokenizer", Counting())
    stream = enc.encode_stream(source(), "query")
    first = next(stream)
    assert first.shape == (5, 32) and len(taken) == 5  # nothing read past the first window
    rest = list(stream)
    assert [len(v) for v in rest] == [5, 5, 5, 3] and calls == [5, 5, 5, 5, 3]
    got = np.concatenate([first, *rest])
    np.testing.assert_allclose(got, whole, rtol=0, atol=1e-5)  # sub-batches differ, so bits may (tiny-bert: < 5e-7)
    np.testing.assert_allclose(got, reference_encode(enc, texts, "query"), rtol=0, atol=1e-5)
    assert enc.encode(iter(texts), "query").shape == (23, 32)  # encode takes any iterable
    with pytest.raises(ValueError):
        enc.encode_stream(texts, "title")  # checked before any window is read


def test_tokenize_in_chunks_is_one_call(enc, monkeypatch):
    texts = _texts(10, seed=6)
    one = enc.tokenize(texts, 16)
    monkeypatch.setattr(encoder_module, "TOKENIZE_ROWS", 3)
    calls = []
    tok = enc.tokenizer
    monkeypatch.setattr(enc, "tokenizer", type("Tok", (), {"__call__": staticmethod(lambda b, **kw: calls.append(len(b)) or tok(b, **kw))})())
    chunked = enc.tokenize(texts, 16)
    assert calls == [3, 3, 3, 1]
    for a, b in zip(one, chunked):
        np.testing.assert_array_equal(a, b)
    assert [len(x) for x in enc.tokenize([], 16)] == [0, 0, 0]
