"""The training settings as the library takes them: the config's ``trainings`` entry, which fields key the result.

The schema is the config's :class:`~xqg_ray.config.TrainConfig` (one place);
:data:`TrainSettings` names it here, where it is read as "how to train" (its
target fields -- base encoder, pairs, questions -- are the stage's business).
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any, Dict

from ..config import TRAIN_TARGET_FIELDS, ConfigError, TrainConfig, train_settings_problems

# How to fine-tune an encoder contrastively (one optimiser step per global batch): the config's type.
TrainSettings = TrainConfig

# Fields that do not change the trained weights: left out of the artifact's key.
PLACEMENT_FIELDS = ("num_workers", "use_gpu", "cpus_per_worker", "gpus_per_worker", "checkpoint_every", "keep_checkpoints", "torch_threads")


def key_fields(s: TrainSettings) -> Dict[str, Any]:
    """The settings that decide the trained weights (a change retrains).

    Neither placement nor the target fields: the key holds the base encoder's
    content and the pairs' content hash, not the names they had in the config.
    """
    return {k: v for k, v in asdict(s).items() if k not in PLACEMENT_FIELDS and k not in TRAIN_TARGET_FIELDS}


def placement(s: TrainSettings) -> Dict[str, Any]:
    """The settings that place the training (workers, GPUs, checkpoints): recorded, never keyed."""
    return {k: v for k, v in asdict(s).items() if k in PLACEMENT_FIELDS}


def validate_settings(s: TrainSettings, where: str = "train") -> TrainSettings:
    """``s`` unchanged, or a one-line :class:`ConfigError` naming the first field to fix."""
    errs = train_settings_problems(s, where)
    if errs:
        raise ConfigError(errs[0])
    return s


__all__ = ["PLACEMENT_FIELDS", "TrainSettings", "key_fields", "placement", "validate_settings"]
