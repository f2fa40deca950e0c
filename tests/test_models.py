"""Encoder and generator classes on tiny random models given by local path (no Ray)."""

import numpy as np
import pytest
import torch

from xqg_ray.config import EncoderConfig, GeneratorConfig
from xqg_ray.models.encoder import Encoder, format_passage, l2_normalize, pool
from xqg_ray.models.loading import torch_dtype


def test_pooling_by_hand():
    h = np.array([[[1.0, 2.0], [3.0, 4.0], [100.0, 100.0]]])
    mask = np.array([[1, 1, 0]])
    np.testing.assert_allclose(pool(h, mask, "cls"), [[1.0, 2.0]])
    np.testing.assert_allclose(pool(h, mask, "mean"), [[2.0, 3.0]])  # the padded token is ignored
    with pytest.raises(ValueError):
        pool(h, mask, "max")
    np.testing.assert_allclose(np.linalg.norm(l2_normalize(np.array([[3.0, 4.0]])), axis=1), [1.0])


def test_passage_template():
    assert format_passage("{title} {text}", "Title", "body") == "Title body"
    assert format_passage("{title} {text}", "", "body") == "body"


def test_encoder_from_local_path(tiny_models):
    enc = Encoder(EncoderConfig(model=tiny_models["tiny-bert"], pooling="mean", normalize=True, query_prefix="query: "))
    texts = ["a short one", "a much longer text about rivers and cities", "wer hat gewonnen"]
    v = enc.encode(texts, "query")
    assert v.shape == (3, 32) and v.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(v, axis=1), 1.0, rtol=1e-5)
    # order is kept although sub-batches are length-sorted; each row equals encoding it alone
    np.testing.assert_allclose(v[1], enc.encode([texts[1]], "query")[0], rtol=1e-4, atol=1e-5)
    # the prefix is applied: query and passage encodings of the same text differ
    assert not np.allclose(enc.encode(["x"], "query"), enc.encode(["x"], "passage"))


@pytest.mark.parametrize("kind,model", [("seq2seq", "tiny-t5"), ("causal", "tiny-gpt2")])
def test_generator_is_seeded_per_passage(tiny_models, kind, model):
    from xqg_ray.models.generator import QueryGenerator

    cfg = GeneratorConfig(kind=kind, model=tiny_models[model], languages=["de", "zh"], n_per_language=2, max_new_tokens=6, few_shot=1)
    gen = QueryGenerator("g", cfg)
    assert gen.model.dtype == torch_dtype("auto", "cpu") == torch.float32  # dtype auto: float32 on CPU
    if kind == "seq2seq":
        assert gen.prompt(0, "T", "body", "de") == "Generate a German question for this passage: T body"
    first, failed = gen.generate(7, "Title", "some passage text")
    assert [q["lang"] for q in first] == ["de", "de", "zh", "zh"] and failed == 0
    gen.generate(8, "Other", "another passage")  # a different neighbour in between
    assert gen.generate(7, "Title", "some passage text")[0] == first
    assert gen.generate(9, "Title", "some passage text")[0] != first  # the seed depends on the passage id
    # batched: the same queries for passage 7 next to other passages, in the stage's call
    many = gen.generate_many([(8, "Other", "another passage"), (7, "Title", "some passage text"), (9, "T", "x")])
    assert many[1] == (first, 0) and len(many) == 3


def test_dtype_choice_per_device():
    """auto and float16 stay float32 on CPU; an explicit bfloat16 is honoured there (AMX / AVX512-BF16)."""
    assert [torch_dtype(n, "cpu") for n in ("auto", "float32", "float16", "bfloat16")] == [torch.float32, torch.float32, torch.float32, torch.bfloat16]
    assert [torch_dtype(n, "cuda") for n in ("auto", "float32", "float16", "bfloat16")] == [torch.bfloat16, torch.float32, torch.float16, torch.bfloat16]
