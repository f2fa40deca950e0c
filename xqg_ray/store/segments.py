"""Delta segments: a partition's output as sealed Parquet segments plus tombstones, and the one reader of it.

A partition's output written whole is one file, named by its entry (a manifest
unit entry or a commit record) as ``file``/``sha256``/``bytes``, exactly as
before.  An update that changes little of a partition instead appends a *delta
segment* (only its new and changed rows) and keeps naming the earlier segments'
files, which are never rewritten.  Such an entry adds ``segments``: every
segment, oldest first (the newest is the entry's own ``file``), each
``{file, sha256, bytes, rows, tombstones}``; a segment's ``tombstones`` (a
sealed Parquet file of ``kind``, ``id``; or none) are the rows of *earlier*
segments that are dead (removed or changed).  A (kind, id) is live in at most
one segment, so the live rows of a partition, sorted as a whole file is sorted
(``kind`` then ``id``), are exactly the file a full rewrite would hold: every
reader goes through :func:`live_table` (or :func:`live_segments` to stream) and
sees no difference.  The entry's ``rows`` are its live rows.

:func:`churn` measures how far a partition has drifted from one file (dead
rows plus rows in delta segments, over live rows); past the configured
``corpus.compact_fraction`` a unit rewrites the partition as one segment, and
:func:`compact_stage` (the ``xqg-ray compact`` verb) does it for every
partition of a published stage without changing its fingerprint.
"""

from __future__ import annotations

from typing import Any, Dict, Iterable, List, Optional

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from .integrity import CommittedParquetWriter, read_table_verified, write_table_committed
from .ledger import Ledger
from .storage import Storage

# The columns of a tombstones file: the rows of earlier segments that are dead.
TOMBSTONE_SCHEMA = pa.schema([("kind", pa.string()), ("id", pa.int64())])


def segments(entry: Dict[str, Any]) -> List[Dict[str, Any]]:
    """The segments of a partition's entry, oldest first: its ``segments``, or its one file."""
    if entry.get("segments"):
        return list(entry["segments"])
    return [{k: entry[k] for k in ("file", "sha256", "bytes", "rows") if k in entry}]


def segment_source(entry: Dict[str, Any]) -> Dict[str, Any]:
    """What a reader of the partition is handed: the file record, with ``segments`` when there are several."""
    out = {k: entry[k] for k in ("file", "sha256", "bytes", "rows") if k in entry}
    if entry.get("segments"):
        out["segments"] = entry["segments"]
    return out


def stored_rows(entry: Dict[str, Any]) -> int:
    """Rows in the partition's files, dead ones included."""
    return sum(int(s["rows"]) for s in segments(entry))


def delta_rows(entry: Dict[str, Any]) -> int:
    """Rows in the partition's delta segments (every segment after the first)."""
    return sum(int(s["rows"]) for s in segments(entry)[1:])


def churn(live: int, stored: int, delta: int) -> float:
    """(dead rows + rows in delta segments) / live rows: 0 for one file; a partition with no live row counts as fully churned."""
    if live <= 0:
        return float("inf") if stored else 0.0
    return ((stored - live) + delta) / live


def tombstones_table(kinds: Iterable[str], ids: Iterable[np.ndarray]) -> pa.Table:
    """TOMBSTONE_SCHEMA rows: each kind's dead ids, sorted by (kind, id)."""
    parts = [pa.table({"kind": pa.array([k] * len(i), pa.string()), "id": pa.array(np.asarray(i, np.int64))}, schema=TOMBSTONE_SCHEMA)
             for k, i in zip(kinds, ids) if len(i)]
    t = pa.concat_tables(parts) if parts else TOMBSTONE_SCHEMA.empty_table()
    return t.sort_by([("kind", "ascending"), ("id", "ascending")])


def dead_keys(storage: Storage, root: str, segs: List[Dict[str, Any]], where: str) -> Dict[str, np.ndarray]:
    """kind -> sorted ids tombstoned by any of ``segs`` (the segments after the one being read)."""
    tables = [read_table_verified(storage, root, s["tombstones"], where=where) for s in segs if s.get("tombstones")]
    if not tables:
        return {}
    t = pa.concat_tables(tables)
    return {k: np.unique(t.filter(pc.equal(t["kind"], k))["id"].to_numpy()) for k in pc.unique(t["kind"]).to_pylist()}


def live_mask(t: pa.Table, dead: Dict[str, np.ndarray]) -> np.ndarray:
    """Bool per row of ``t`` (``kind``, ``id`` columns): the row is not tombstoned by ``dead``."""
    keep = np.ones(t.num_rows, bool)
    if not dead or not t.num_rows:
        return keep
    kinds = t["kind"].to_numpy(zero_copy_only=False)
    ids = t["id"].to_numpy()
    for k, d in dead.items():
        rows = kinds == k
        keep[rows] = ~np.isin(ids[rows], d)
    return keep


def live_segments(storage: Storage, root: str, entry: Dict[str, Any], columns: Optional[List[str]] = None,
                  where: str = "its manifest") -> Iterable[pa.Table]:
    """The live rows of each segment of ``entry``, oldest first, ``columns`` only (all: None)."""
    segs = segments(entry)
    read = None if columns is None else list(dict.fromkeys(["kind", "id", *columns]))
    for i, s in enumerate(segs):
        t = read_table_verified(storage, root, s, read if len(segs) > 1 else columns, where=where)
        if len(segs) > 1:
            t = t.filter(pa.array(live_mask(t, dead_keys(storage, root, segs[i + 1:], where))))
            if columns is not None:
                t = t.select(columns)
        yield t


def live_table(storage: Storage, root: str, entry: Dict[str, Any], columns: Optional[List[str]] = None,
               where: str = "its manifest") -> pa.Table:
    """The partition's live rows (``columns``; all: None) in the order one whole file holds them: by kind, then id.

    One file is read as it is (the same table as before segments existed).
    """
    if len(segments(entry)) == 1:
        return read_table_verified(storage, root, segments(entry)[0], columns, where=where)
    cols = None if columns is None else list(dict.fromkeys(["kind", "id", *columns]))
    t = pa.concat_tables(list(live_segments(storage, root, entry, cols, where)), promote_options="permissive")
    t = t.sort_by([("kind", "ascending"), ("id", "ascending")])
    return t if columns is None else t.select(columns)


def compact_entry(storage: Storage, root: str, entry: Dict[str, Any], row_group_rows: int,
                  where: str = "its manifest") -> Dict[str, Any]:
    """``entry`` rewritten as one segment (a new file beside its newest); an entry of one file is returned as it is."""
    if len(segments(entry)) == 1:
        return entry
    t = live_table(storage, root, entry, where=where)  # the segments' schema, as their writer wrote it
    rel = entry["file"].replace(".parquet", ".compact.parquet")
    with CommittedParquetWriter(storage, root, rel, t.schema, row_group_rows) as w:
        w.add(t)
        rec = w.commit()
    out = {k: v for k, v in entry.items() if k != "segments"}
    out.update(file=rec["file"], sha256=rec["sha256"], bytes=rec["bytes"], rows=rec["rows"])
    return out


def compact_stage(storage: Storage, root: str, stage: str, row_group_rows: int) -> Dict[str, int]:
    """Rewrite every multi-segment partition of ``stage``'s published manifest as one segment and republish it.

    The manifest keeps its fingerprint (its content is the same), so no later
    stage sees a change; the old segments go with the publish's clean-up.
    Returns ``{"partitions": rewritten, "segments": files replaced}``.
    """
    led = Ledger(storage, root, stage)
    m = led.current()
    if m is None or not any(u.get("segments") for u in m.get("units", [])):
        return {"partitions": 0, "segments": 0}
    done = replaced = 0
    units = []
    for u in m["units"]:
        if u.get("segments"):
            units.append(compact_entry(storage, root, u, row_group_rows, where=f"the {stage} manifest"))
            done, replaced = done + 1, replaced + len(u["segments"])
        else:
            units.append(u)
    manifest = {k: v for k, v in m.items() if k not in ("seal", "stage", "fingerprint")}
    manifest["units"] = units
    led.publish(m["fingerprint"], manifest)
    return {"partitions": done, "segments": replaced}


def delta_allowed(prior: Optional[Dict[str, Any]], out: str, live: int, computed: int, fraction: float) -> bool:
    """Whether a unit writing ``computed`` new rows to ``out`` (``live`` rows in all) appends a delta
    segment to ``prior`` rather than rewriting the partition: within ``fraction`` churn.

    ``out`` among the prior's files is the same key recomputed (its commit record cleaned up after
    a resumed publish): rewritten whole, as before segments, never a delta over itself.
    """
    if prior is None or fraction <= 0 or out in {s["file"] for s in segments(prior)}:
        return False
    return churn(live, stored_rows(prior) + computed, delta_rows(prior) + computed) <= fraction


def append_segment(storage: Storage, root: str, prior: Dict[str, Any], rec: Dict[str, Any], dead: Dict[str, np.ndarray],
                   live: int) -> Dict[str, Any]:
    """The record of a partition: ``prior``'s segments, then the delta ``rec`` just written (with the
    tombstones of ``dead``: kind -> prior ids that died, written beside it), ``live`` rows in all."""
    tomb = tombstones_table(dead.keys(), dead.values())
    seg = dict(rec)
    if tomb.num_rows:
        seg["tombstones"] = write_table_committed(storage, root, rec["file"].replace(".parquet", ".tombstones.parquet"), tomb)
    return {**rec, "rows": live, "segments": segments(prior) + [seg]}
