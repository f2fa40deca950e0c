"""The ``xqg-ray compact`` verb: every partition an update left as delta segments rewritten as one file.

An update appends delta segments (:mod:`xqg_ray.store.segments`) until a
partition's churn passes ``corpus.compact_fraction``; this rewrites every such
partition of each encoder's embeddings now, under the output directory's lock,
without recomputing anything: the manifests keep their fingerprints, so no
later stage runs again and no result changes.
"""

from __future__ import annotations

from typing import Dict

from ..config import RunConfig
from ..config.systems import all_encoders
from ..store.lock import hold_output
from ..store.segments import compact_stage
from ..store.storage import Storage
from .encode import ledger_names


def compact(cfg: RunConfig) -> Dict[str, Dict[str, int]]:
    """Stage -> ``{"partitions": rewritten, "segments": files replaced}`` of each encoder's embeddings in ``cfg.output_dir``."""
    storage = Storage(cfg.storage)
    out: Dict[str, Dict[str, int]] = {}
    with hold_output(storage, cfg.output_dir):  # one writer per output directory: never beside a running update
        for name, enc in all_encoders(cfg).items():
            stage = ledger_names(name)[0]
            out[stage] = compact_stage(storage, cfg.output_dir, stage, enc.window_rows)
    return out
