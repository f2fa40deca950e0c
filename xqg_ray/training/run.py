"""Train once per key: reuse the trained encoder's artifact, or train it on Ray Train and write it.

What a ``train`` stage calls, after building the pairs (``pairs``) and passing
them through the leak guard: :func:`train_or_reuse` keys the artifact, returns
it when it exists, and otherwise trains (resuming the key's checkpoints if an
earlier call was killed), writes the artifact and removes the checkpoints.
"""

from __future__ import annotations

import shutil
import tempfile
from dataclasses import asdict, dataclass
from typing import Any, Dict, List, Optional

import pyarrow as pa

from ..config import EncoderConfig
from ..models.loading import resolve_model
from ..store.sealed import write_sealed
from ..store.storage import Storage, join
from .artifact import STAGE, artifact_key, find_artifact, model_fingerprint, pointer, write_artifact
from .pairs import pairs_hash
from .settings import TrainSettings, key_fields, placement, validate_settings
from .trainer import train_encoder


@dataclass
class Trained:
    """A trained encoder's manifest, and whether this call reused it."""

    manifest: Dict[str, Any]
    reused: bool


def epoch_means(losses: List[float], epochs: int) -> List[float]:
    """The mean loss of each epoch (steps split evenly), rounded for the manifest."""
    per = len(losses) // max(1, epochs)
    return [round(sum(losses[e * per : (e + 1) * per]) / per, 6) for e in range(epochs)] if per else []


def checkpoints_path(root: str, name: str) -> str:
    """Where the runs of artifact ``name`` keep their checkpoints (one Ray Train run per key)."""
    return join(root, STAGE, name, "checkpoints")


def train_or_reuse(storage: Storage, root: str, name: str, pairs: pa.Table, encoder: EncoderConfig, settings: TrainSettings,
                   extra: Optional[Dict[str, Any]] = None) -> Trained:
    """The artifact of ``encoder`` fine-tuned on ``pairs`` (guarded) with ``settings``, trained only if its key is new.

    ``extra``: more facts for the manifest (the pairs' source, set-aside counts).
    """
    s = validate_settings(settings)
    digest = pairs_hash(pairs)
    key = artifact_key(encoder, model_fingerprint(resolve_model(encoder.model).path), digest, s)
    found = find_artifact(storage, root, name, key)
    if found is not None:
        write_sealed(storage, root, pointer(name), {"manifest": f"{STAGE}/{name}/{key[:16]}/manifest.json", "key": key})
        return Trained(found, True)
    ckpts = checkpoints_path(root, name)
    tmp = tempfile.mkdtemp(prefix="xqg-trained-")
    try:
        out = train_encoder(pairs, encoder, s, ckpts, key[:16], tmp, storage)
        meta = {
            "base": asdict(encoder), "pairs": {"sha256": digest, "rows": pairs.num_rows, **(extra or {})},
            "train": key_fields(s), "placement": placement(s),
            "cost": {"steps": out.steps, "epochs": out.epochs, "pairs_per_epoch": out.pairs, "resumed_from": out.resumed_from,
                     "loop_seconds": round(out.loop_seconds, 3), "wall_seconds": round(out.wall_seconds, 3),
                     "pairs_per_s": round(out.pairs_per_s, 3)},
            "loss": {"first": out.losses[0] if out.losses else None, "last": out.losses[-1] if out.losses else None,
                     "per_epoch": epoch_means(out.losses, out.epochs)},
        }
        m = write_artifact(storage, root, name, key, tmp, meta)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    # The weights are in the artifact now; the run's checkpoints only served a resume.
    storage.delete(join(ckpts, key[:16]))
    return Trained(m, False)


__all__ = ["Trained", "checkpoints_path", "epoch_means", "train_or_reuse"]
