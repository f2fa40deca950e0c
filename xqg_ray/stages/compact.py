"""The ``xqg-ray compact`` verb: every partition an update left as delta segments rewritten as one file.

An update appends delta segments (:mod:`xqg_ray.store.segments`) until a
partition's churn passes ``corpus.compact_fraction``; this rewrites every such
partition of each generator's output (its queries and its draws) and of each
encoder's embeddings now, under the output directory's lock, without
recomputing anything: the manifests keep their fingerprints, so no later stage
runs again and no result changes.
"""

from __future__ import annotations

from typing import Dict

from ..config import RunConfig
from ..config.systems import all_encoders
from ..schemas import ATTEMPTS_SCHEMA, GENERATED_SCHEMA, embeddings_schema
from ..store.ledger import Ledger
from ..store.lock import hold_output
from ..store.segments import compact_stage
from ..store.storage import Storage
from .encode import ledger_names

# A generate unit writes its files whole with pyarrow's default row group (up to 2**20 rows):
# compacted, a partition's file is laid out the same.
GENERATED_ROW_GROUP = 1 << 20


def compact(cfg: RunConfig) -> Dict[str, Dict[str, int]]:
    """Stage -> ``{"partitions": rewritten, "segments": files replaced}`` of each generator's output and each
    encoder's embeddings in ``cfg.output_dir``."""
    storage = Storage(cfg.storage)
    out: Dict[str, Dict[str, int]] = {}
    with hold_output(storage, cfg.output_dir):  # one writer per output directory: never beside a running update
        for name in cfg.generators:
            stage = f"generated/{name}"
            out[stage] = compact_stage(storage, cfg.output_dir, stage, GENERATED_ROW_GROUP, {None: GENERATED_SCHEMA, "attempts": ATTEMPTS_SCHEMA})
        for name, enc in all_encoders(cfg).items():
            stage = ledger_names(name)[0]
            m = Ledger(storage, cfg.output_dir, stage).current()
            schemas = {None: embeddings_schema(m["dim"])} if m is not None and m.get("dim") else None
            out[stage] = compact_stage(storage, cfg.output_dir, stage, enc.window_rows, schemas)
    return out
