"""Tiny randomly initialised HF models, built on the fly (no downloads).

They exercise the real loading, tokenisation, generation and pooling code in
tests and in ``conf/smoke.yaml``.  A byte-level BPE tokenizer is trained on a
small multilingual word list so any script tokenises without unknown tokens.
Weights are seeded: the same directory contents on every machine.
"""

from __future__ import annotations

from pathlib import Path

from .bundled import materialise

TINY = ("tiny-bert", "tiny-t5", "tiny-gpt2")
# 2: built through bundled.materialise (a marker file says the build is complete); a v1 directory has none.
VERSION = "2"

_CORPUS = [
    "the quick brown fox jumps over the lazy dog",
    "what is the capital of france and who founded it",
    "wer hat das spiel gewonnen und wann war das",
    "¿cuántos puntos anotó el equipo en la final?",
    "сколько очков набрала команда в финале",
    "哪个队赢得了比赛 冠军是谁",
    "ما هي عاصمة فرنسا ومن أسسها",
    "question passage generate a german chinese spanish russian arabic english",
    "super bowl football university river city century war king science",
]


def _tokenizer(path: str):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token=None))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=True)
    tok.decoder = decoders.ByteLevel()
    specials = ["<pad>", "</s>", "<unk>", "<s>", "<mask>"]
    trainer = trainers.BpeTrainer(vocab_size=600, special_tokens=specials, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(_CORPUS * 5, trainer)
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A </s>", pair="<s> $A </s> $B </s>", special_tokens=[("<s>", tok.token_to_id("<s>")), ("</s>", tok.token_to_id("</s>"))]
    )
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token="<pad>", eos_token="</s>", unk_token="<unk>", bos_token="<s>", cls_token="<s>", sep_token="</s>", mask_token="<mask>"
    )
    fast.save_pretrained(path)
    return fast


def build(name: str, path: str) -> str:
    """Write tiny model ``name`` (tiny-bert | tiny-t5 | tiny-gpt2) to ``path``."""
    import torch
    from transformers import BertConfig, BertModel, GPT2Config, GPT2LMHeadModel, T5Config, T5ForConditionalGeneration

    torch.manual_seed(1234)
    tok = _tokenizer(path)
    v = len(tok)
    if name == "tiny-bert":
        model = BertModel(BertConfig(vocab_size=v, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64, max_position_embeddings=512, pad_token_id=tok.pad_token_id))
    elif name == "tiny-t5":
        model = T5ForConditionalGeneration(
            T5Config(vocab_size=v, d_model=32, d_ff=64, d_kv=16, num_layers=2, num_heads=2, pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id, decoder_start_token_id=tok.pad_token_id)
        )
    elif name == "tiny-gpt2":
        # The causal prompt is truncated from the left; 1024 positions leave room for it.
        model = GPT2LMHeadModel(GPT2Config(vocab_size=v, n_embd=32, n_layer=2, n_head=2, n_positions=1024, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id))
    else:
        raise ValueError(f"unknown tiny model {name!r}; known: {TINY}")
    model.save_pretrained(path)
    return path


def materialize(name: str, cache_dir: str) -> str:
    """Build once into ``cache_dir`` (bundled models' way: concurrent callers wait for one build)."""
    return str(materialise(Path(cache_dir) / f"{name}-v{VERSION}", lambda d: build(name, str(d))))
