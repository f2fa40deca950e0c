"""The ``xqg-ray compact`` verb: every partition an update left as delta segments rewritten as one file.

An update appends delta segments (:mod:`xqg_ray.store.segments`) until a
partition's churn passes ``corpus.compact_fraction``; this rewrites every such
partition of the corpus snapshot, of each generator's output (its queries and
its draws) and of each encoder's embeddings now, under the output directory's
lock, without recomputing anything: the manifests keep their fingerprints (and
the snapshot its id, corpus hash and partition digests), so no later stage runs
again and no result changes.
"""

from __future__ import annotations

from typing import Dict

from ..config import RunConfig
from ..config.systems import all_encoders
from ..ingest.partition import ROW_GROUP_ROWS
from ..ingest.readers import CLEAN_SCHEMA
from ..schemas import ATTEMPTS_SCHEMA, GENERATED_SCHEMA, embeddings_schema
from ..store.ledger import Ledger
from ..store.lock import hold_output
from ..store.sealed import read_sealed, write_sealed
from ..store.segments import compact_entry, compact_stage, segments
from ..store.storage import Storage
from .encode import ledger_names
from .prepare import FINGERPRINTS, STAGE as BENCHMARK

# A generate unit writes its files whole with pyarrow's default row group (up to 2**20 rows):
# compacted, a partition's file is laid out the same.
GENERATED_ROW_GROUP = 1 << 20


def compact(cfg: RunConfig) -> Dict[str, Dict[str, int]]:
    """Stage -> ``{"partitions": rewritten, "segments": files replaced}`` of each generator's output and each
    encoder's embeddings in ``cfg.output_dir``."""
    storage = Storage(cfg.storage)
    out: Dict[str, Dict[str, int]] = {}
    with hold_output(storage, cfg.output_dir):  # one writer per output directory: never beside a running update
        out["corpus"] = compact_corpus(storage, cfg.output_dir)
        for name in cfg.generators:
            stage = f"generated/{name}"
            out[stage] = compact_stage(storage, cfg.output_dir, stage, GENERATED_ROW_GROUP, {None: GENERATED_SCHEMA, "attempts": ATTEMPTS_SCHEMA})
        for name, enc in all_encoders(cfg).items():
            stage = ledger_names(name)[0]
            m = Ledger(storage, cfg.output_dir, stage).current()
            schemas = {None: embeddings_schema(m["dim"])} if m is not None and m.get("dim") else None
            out[stage] = compact_stage(storage, cfg.output_dir, stage, enc.window_rows, schemas)
    return out


def compact_corpus(storage: Storage, root: str) -> Dict[str, int]:
    """Rewrite every multi-segment partition of the current corpus snapshot as one file.

    The snapshot keeps its id, corpus hash and digests (its rows are the same); it is written
    beside the old one as ``<snapshot>.compact.json`` and the benchmark manifest, republished
    with its fingerprint, names it.  Then the corpus directory keeps only what it names.
    Returns ``{"partitions": rewritten, "segments": files replaced}``.
    """
    led = Ledger(storage, root, BENCHMARK)
    m = led.current()
    snap = read_sealed(storage, root, m["snapshot_file"]) if m is not None else None
    if snap is None or not any(len(segments(r)) > 1 for r in snap["partitions"]):
        return {"partitions": 0, "segments": 0}
    where = f"corpus snapshot {snap['snapshot']}"
    parts, done, replaced = [], 0, 0
    for r in snap["partitions"]:
        if len(segments(r)) > 1:
            done, replaced = done + 1, replaced + len(segments(r))
            r = compact_entry(storage, root, r, ROW_GROUP_ROWS, where, CLEAN_SCHEMA)
        parts.append(r)
    new_file = f"corpus/snapshots/{snap['snapshot']}.compact.json"
    new_snap = write_sealed(storage, root, new_file, {**{k: v for k, v in snap.items() if k != "seal"}, "partitions": parts})
    manifest = {k: v for k, v in m.items() if k not in ("seal", "stage", "fingerprint")}
    led.publish(m["fingerprint"], {**manifest, "snapshot_file": new_file}, keep=[FINGERPRINTS])
    Ledger(storage, root, "corpus").gc(new_snap, keep=[new_file])
    return {"partitions": done, "segments": replaced}
