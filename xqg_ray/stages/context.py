"""What every stage of one run shares: config, storage, output root, timer and the inputs' manifests."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict

from ..config import EncoderConfig, Pool, RunConfig, section_dict, stage_pool
from ..progress import StageTimer
from ..store.ledger import fingerprint
from ..store.storage import Storage

# Bump when a stage's output format or semantics change, so old outputs are not reused.
PIPELINE_VERSION = 3


def encoder_key(cfg: EncoderConfig) -> str:
    """Everything an embedding depends on besides its text: the encoder's settings (a trained
    encoder's model is pinned to ``trained:NAME@KEY`` by the train stage, so its artifact key too).
    The embeddings' key, and what a round-trip judge's passage vectors must match to stand in for them."""
    return fingerprint({"v": PIPELINE_VERSION, "encoder": section_dict(cfg)})


def partition_label(p: int) -> str:
    """The unit label of corpus partition ``p`` (its commit and data files carry it)."""
    return f"p-{p:05d}"


@dataclass
class Context:
    cfg: RunConfig
    storage: Storage
    root: str
    timer: StageTimer
    threads: int
    # The benchmark manifest (queries, provided, snapshot); set by the benchmark stage.
    bench: Dict[str, Any] = field(default_factory=dict)
    # The corpus snapshot manifest the run works on.
    snapshot: Dict[str, Any] = field(default_factory=dict)

    @property
    def resume(self) -> bool:
        return self.cfg.resume

    def pool(self, stage: str) -> Pool:
        """The actor resources of ``stage`` (generate, encode or search)."""
        return stage_pool(self.cfg.ray, stage)

    def partition_label(self, p: int) -> str:
        return partition_label(p)
