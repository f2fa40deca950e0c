"""The one place an encoder config becomes an encoder: by ``kind`` (hf or use)."""

from __future__ import annotations

from typing import Any

from ..config import EncoderConfig
from ..config.schema import ENCODER_KINDS, HF_ENCODER, USE_ENCODER


def make_encoder(cfg: EncoderConfig, threads: int = 0) -> Any:
    """The encoder ``cfg.kind`` names, loaded: :class:`~xqg_ray.models.encoder.Encoder` (hf) or
    :class:`~xqg_ray.models.use_encoder.UseEncoder` (use).  Both have ``encode(texts, kind) -> float32 [n, dim]`` and ``dim``.

    Imports lazily: an mUSE actor never imports torch or transformers.
    """
    if cfg.kind == HF_ENCODER:
        from .encoder import Encoder

        return Encoder(cfg, threads)
    if cfg.kind == USE_ENCODER:
        from .use_encoder import UseEncoder

        return UseEncoder(cfg, threads)
    raise ValueError(f"encoder kind={cfg.kind!r}: use one of {', '.join(ENCODER_KINDS)}")
