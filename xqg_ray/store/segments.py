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

A table without a ``kind`` column (a generator's queries, its draws: several
rows per id, in the writer's order within a passage) is keyed by ``id`` alone:
its tombstones name the kind :data:`NO_KIND`, and its live rows come in id
order, a passage's rows in the order its segment holds them (one id lives in
one segment).  :class:`LiveParquet` streams such a partition as
:class:`~xqg_ray.store.integrity.VerifiedParquet` streams one file.

:func:`churn` measures how far a partition has drifted from one file (dead
rows plus rows in delta segments, over live rows); past the configured
``corpus.compact_fraction`` a unit rewrites the partition as one segment, and
:func:`compact_stage` (the ``xqg-ray compact`` verb) does it for every
partition of a published stage without changing its fingerprint.
"""

from __future__ import annotations

from typing import Any, Dict, Iterable, Iterator, List, Optional, Tuple, Union

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from .integrity import CommittedParquetWriter, VerifiedParquet, read_table_verified, read_verified, write_table_committed
from .ledger import Ledger
from .storage import Storage

# The columns of a tombstones file: the rows of earlier segments that are dead.
TOMBSTONE_SCHEMA = pa.schema([("kind", pa.string()), ("id", pa.int64())])
# The key of a segmented table, in its sort order: (kind, id), or id alone where it has no kind column.
KEY_COLUMNS = ("kind", "id")
# The kind a tombstone names for a table without a kind column (one id: every row of that passage).
NO_KIND = ""


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
    """Bool per row of ``t`` (``kind``, ``id`` columns; ``id`` alone: kind NO_KIND): the row is not tombstoned by ``dead``."""
    keep = np.ones(t.num_rows, bool)
    if not dead or not t.num_rows:
        return keep
    ids = t["id"].to_numpy()
    if "kind" not in t.column_names:
        return ~np.isin(ids, dead.get(NO_KIND, np.zeros(0, np.int64)))
    kinds = t["kind"].to_numpy(zero_copy_only=False)
    for k, d in dead.items():
        rows = kinds == k
        keep[rows] = ~np.isin(ids[rows], d)
    return keep


def read_keyed(storage: Storage, root: str, rec: Dict[str, Any], columns: Optional[List[str]], where: str) -> pa.Table:
    """``rec``'s rows (sha256 checked): ``columns`` after the key columns the file has (all: None)."""
    data = read_verified(storage, root, rec, where)
    if columns is not None:
        names = pq.read_schema(pa.BufferReader(data)).names
        columns = list(dict.fromkeys([*(k for k in KEY_COLUMNS if k in names), *columns]))
    return pq.read_table(pa.BufferReader(data), columns=columns)


def keyed_segments(storage: Storage, root: str, entry: Dict[str, Any], columns: Optional[List[str]] = None,
                   where: str = "its manifest") -> Iterable[pa.Table]:
    """The live rows of each segment of several, oldest first: ``columns`` after the key columns the files have."""
    segs = segments(entry)
    for i, s in enumerate(segs):
        t = read_keyed(storage, root, s, columns, where)
        yield t.filter(pa.array(live_mask(t, dead_keys(storage, root, segs[i + 1:], where))))


def live_segments(storage: Storage, root: str, entry: Dict[str, Any], columns: Optional[List[str]] = None,
                  where: str = "its manifest") -> Iterable[pa.Table]:
    """The live rows of each segment of ``entry``, oldest first, ``columns`` only (all: None)."""
    if len(segments(entry)) == 1:
        yield read_table_verified(storage, root, segments(entry)[0], columns, where=where)
        return
    for t in keyed_segments(storage, root, entry, columns, where):
        yield t if columns is None else t.select(columns)


def live_batches(storage: Storage, root: str, entry: Dict[str, Any], columns: List[str], batch_bytes: int,
                 where: str = "its manifest") -> Iterator[pa.Table]:
    """The live rows of each segment of ``entry``, oldest first, as tables of about ``batch_bytes`` decoded
    (``columns`` only): each segment sha256-checked by streaming and decoded batch by batch, so memory
    is one batch, whatever the partition's size.  Rows keep their file order within a segment; across
    segments they are not merged by id (for readers that place rows by id themselves)."""
    segs = segments(entry)
    for i, seg in enumerate(segs):
        f = VerifiedParquet(storage, root, seg, where=where)
        meta = f.metadata()
        names = meta.schema.to_arrow_schema().names
        read = list(dict.fromkeys([*(k for k in KEY_COLUMNS if k in names), *columns]))
        # Rows per batch from the file's own decoded size per row (every column: an upper bound for ``read``).
        size = sum(meta.row_group(g).total_byte_size for g in range(meta.num_row_groups))
        rows = max(1, int(batch_bytes * max(1, meta.num_rows) // max(1, size)))
        dead = dead_keys(storage, root, segs[i + 1:], where)
        for b in f.batches(read, rows):
            t = pa.Table.from_batches([b])
            if dead:
                t = t.filter(pa.array(live_mask(t, dead)))
            yield t.select(columns)


def live_table(storage: Storage, root: str, entry: Dict[str, Any], columns: Optional[List[str]] = None,
               where: str = "its manifest") -> pa.Table:
    """The partition's live rows (``columns``; all: None) in the order one whole file holds them: by kind
    (where the table has one), then id.

    One file is read as it is (the same table as before segments existed).
    """
    if len(segments(entry)) == 1:
        return read_table_verified(storage, root, segments(entry)[0], columns, where=where)
    parts = list(keyed_segments(storage, root, entry, columns, where))
    keys = [k for k in KEY_COLUMNS if k in parts[0].column_names]
    # A stable sort: a passage's rows keep their segment's order (an id lives in one segment).
    t = pa.concat_tables(parts, promote_options="permissive").sort_by([(k, "ascending") for k in keys])
    return t if columns is None else t.select(columns)


def merge_by_id(streams: List[Iterator[pa.Table]]) -> Iterator[pa.Table]:
    """Batches of several id-ordered streams (an id in one stream only, possibly over several of its rows)
    merged into one id order, each stream's rows of one id kept in its order.

    Each step emits every buffered row up to the smallest of the buffers' last ids: no
    stream can still hold a smaller one, so at most one batch per stream is held.
    """
    bufs: List[Optional[pa.Table]] = [None] * len(streams)
    while True:
        for i, it in enumerate(streams):
            while it is not None and (bufs[i] is None or not bufs[i].num_rows):
                nxt = next(it, None)
                if nxt is None:
                    streams[i] = it = None
                    bufs[i] = None
                else:
                    bufs[i] = nxt
        live = [i for i, b in enumerate(bufs) if b is not None and b.num_rows]
        if not live:
            return
        # A finished stream bounds nothing; an open one bounds the step by its buffer's last id.
        bounds = [bufs[i]["id"][-1].as_py() for i in live if streams[i] is not None]
        upto = min(bounds) if bounds else None
        out = []
        for i in live:
            ids = bufs[i]["id"].to_numpy()
            k = len(ids) if upto is None else int(np.searchsorted(ids, upto, side="right"))
            out.append(bufs[i].slice(0, k))
            bufs[i] = bufs[i].slice(k)
        step = pa.concat_tables(out)
        if step.num_rows:
            yield step.sort_by("id")  # stable: one id's rows stay in their stream's order


class LiveParquet:
    """The live rows of a partition kept as several segments of a table keyed by id alone (no ``kind``
    column), read as :class:`~xqg_ray.store.integrity.VerifiedParquet` reads one file: record batches
    in the order one whole file holds them, each segment sha256-checked once, about one batch per
    segment held (the segments merged by id as they stream)."""

    def __init__(self, storage: Storage, root: str, entry: Dict[str, Any], where: str = "its manifest"):
        segs = segments(entry)
        self.files = [VerifiedParquet(storage, root, s, where=where) for s in segs]
        self.dead = [dead_keys(storage, root, segs[i + 1:], where) for i in range(len(segs))]
        self.uri = self.files[-1].uri

    def batches(self, columns: Optional[List[str]] = None, batch_size: int = 65_536) -> Iterator[pa.RecordBatch]:
        """The live rows as record batches (``columns``; all: None), in file order."""
        read = None if columns is None else list(dict.fromkeys(["id", *columns]))

        def live(f: VerifiedParquet, dead: Dict[str, np.ndarray]) -> Iterator[pa.Table]:
            for b in f.batches(read, batch_size):
                t = pa.Table.from_batches([b])
                yield t.filter(pa.array(live_mask(t, dead)))

        for t in merge_by_id([live(f, d) for f, d in zip(self.files, self.dead)]):
            yield from (t if columns is None else t.select(columns)).combine_chunks().to_batches()


def live_parquet(storage: Storage, root: str, entry: Dict[str, Any], where: str = "its manifest") -> Union[VerifiedParquet, LiveParquet]:
    """A streaming reader of a partition of an id-keyed table: its one file as it is, or its live segments."""
    if len(segments(entry)) == 1:
        return VerifiedParquet(storage, root, segments(entry)[0], where=where)
    return LiveParquet(storage, root, entry, where)


def compact_entry(storage: Storage, root: str, entry: Dict[str, Any], row_group_rows: int,
                  where: str = "its manifest", schema: Optional[pa.Schema] = None) -> Dict[str, Any]:
    """``entry`` rewritten as one segment (a new file beside its newest); an entry of one file is returned as it is.

    ``schema``: the one its writer writes (a Parquet file read back names a list's item ``element``,
    not ``item``): with it, the file is the one a whole rewrite writes, byte for byte.
    """
    if len(segments(entry)) == 1:
        return entry
    t = live_table(storage, root, entry, where=where)  # the segments' schema, as their writer wrote it
    t = t if schema is None else t.cast(schema)
    rel = entry["file"].replace(".parquet", ".compact.parquet")
    with CommittedParquetWriter(storage, root, rel, t.schema, row_group_rows) as w:
        w.add(t)
        rec = w.commit()
    out = {k: v for k, v in entry.items() if k != "segments"}
    out.update(file=rec["file"], sha256=rec["sha256"], bytes=rec["bytes"], rows=rec["rows"])
    return out


def segmented(unit: Dict[str, Any]) -> List[Optional[str]]:
    """Which file records of a manifest unit are kept as segments: None for the unit's own file, else
    the key of a file record inside it (a generator's ``attempts``)."""
    own = [None] if unit.get("segments") else []
    return own + [k for k, v in unit.items() if isinstance(v, dict) and v.get("segments")]


Schemas = Dict[Optional[str], pa.Schema]


def compact_unit(storage: Storage, root: str, unit: Dict[str, Any], row_group_rows: int, where: str,
                 schemas: Optional[Schemas] = None) -> Tuple[Dict[str, Any], int]:
    """(``unit`` with its file and every segmented file record inside it rewritten as one segment, segments replaced).

    ``schemas``: :func:`segmented`'s key (None: the unit's own file) -> the schema its writer writes.
    """
    out, replaced, schemas = dict(unit), 0, schemas or {}
    for k in segmented(unit):
        replaced += len((unit if k is None else unit[k])["segments"])
        if k is not None:
            out[k] = compact_entry(storage, root, unit[k], row_group_rows, where, schemas.get(k))
    if unit.get("segments"):
        out = compact_entry(storage, root, out, row_group_rows, where, schemas.get(None))
    return out, replaced


def compact_stage(storage: Storage, root: str, stage: str, row_group_rows: int, schemas: Optional[Schemas] = None) -> Dict[str, int]:
    """Rewrite every multi-segment partition of ``stage``'s published manifest as one segment and republish it.

    The manifest keeps its fingerprint (its content is the same), so no later
    stage sees a change; the old segments go with the publish's clean-up.
    A unit's side files kept as segments (a generator's draws) are rewritten with it.
    Returns ``{"partitions": rewritten, "segments": files replaced}``.
    """
    led = Ledger(storage, root, stage)
    m = led.current()
    if m is None or not any(segmented(u) for u in m.get("units", [])):
        return {"partitions": 0, "segments": 0}
    done = replaced = 0
    units = []
    for u in m["units"]:
        new, n = compact_unit(storage, root, u, row_group_rows, f"the {stage} manifest", schemas)
        units.append(new)
        done, replaced = done + (n > 0), replaced + n
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
