"""The training settings: one dataclass, its validation, and which fields decide the result.

A proposal for the config's ``train`` section (the config package owns the
schema); until it moves there the stage builds one from its section.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Dict

from ..config import ConfigError


@dataclass(frozen=True)
class TrainSettings:
    """How to fine-tune an encoder contrastively (one optimiser step per global batch)."""

    epochs: int = 1
    global_batch: int = 32  # pairs per optimiser step, across all workers (in-batch negatives span it)
    lr: float = 2e-5
    weight_decay: float = 0.01
    warmup_steps: int = 0  # linear warm-up, then linear decay to 0 at the last step
    temperature: float = 0.05  # InfoNCE over cosine similarities
    hard_negatives: int = 0  # extra passages per pair from the pairs' `negatives` column
    max_grad_norm: float = 1.0  # 0 disables clipping
    seed: int = 0  # the order of pairs in every epoch
    # Placement and bookkeeping: they do not change the weights (beyond float
    # noise across worker counts), so they are not part of the artifact's key.
    num_workers: int = 1
    use_gpu: bool = False
    cpus_per_worker: float = 1.0
    gpus_per_worker: float = 1.0  # used only with use_gpu
    checkpoint_every: int = 50  # optimiser steps between checkpoints (and at the last step)
    keep_checkpoints: int = 2
    torch_threads: int = 0  # 0: torch's default


# Fields that do not change the trained weights: left out of the artifact's key.
PLACEMENT_FIELDS = ("num_workers", "use_gpu", "cpus_per_worker", "gpus_per_worker", "checkpoint_every", "keep_checkpoints", "torch_threads")


def key_fields(s: TrainSettings) -> Dict[str, Any]:
    """The settings that decide the trained weights (a change retrains)."""
    return {k: v for k, v in asdict(s).items() if k not in PLACEMENT_FIELDS}


def validate_settings(s: TrainSettings, where: str = "train") -> TrainSettings:
    """``s`` unchanged, or a one-line :class:`ConfigError` naming the first field to fix."""
    checks = [
        (s.epochs >= 1, "epochs", "must be >= 1"),
        # One pair alone has no in-batch negative: its loss is 0 and nothing is learned.
        (s.global_batch >= 2, "global_batch", "must be >= 2 (in-batch negatives need another pair)"),
        (s.num_workers >= 1, "num_workers", "must be >= 1"),
        # Every worker takes the same share of a step, so the gradient average equals one worker's.
        (s.num_workers >= 1 and s.global_batch % max(1, s.num_workers) == 0, "global_batch",
         f"must be a multiple of num_workers ({s.num_workers})"),
        (s.lr > 0, "lr", "must be > 0"),
        (s.weight_decay >= 0, "weight_decay", "must be >= 0"),
        (s.warmup_steps >= 0, "warmup_steps", "must be >= 0"),
        (s.temperature > 0, "temperature", "must be > 0"),
        (s.hard_negatives >= 0, "hard_negatives", "must be >= 0"),
        (s.max_grad_norm >= 0, "max_grad_norm", "must be >= 0 (0 disables clipping)"),
        (s.cpus_per_worker > 0, "cpus_per_worker", "must be > 0"),
        (not s.use_gpu or s.gpus_per_worker > 0, "gpus_per_worker", "must be > 0 with use_gpu"),
        (s.checkpoint_every >= 1, "checkpoint_every", "must be >= 1"),
        (s.keep_checkpoints >= 1, "keep_checkpoints", "must be >= 1 (resume needs the last one)"),
        (s.torch_threads >= 0, "torch_threads", "must be >= 0"),
    ]
    for ok, name, why in checks:
        if not ok:
            value = getattr(s, name)
            raise ConfigError(f"{where}.{name}={value!r} {why}")
    return s


__all__ = ["PLACEMENT_FIELDS", "TrainSettings", "key_fields", "validate_settings"]
