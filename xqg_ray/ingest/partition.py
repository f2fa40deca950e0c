"""Map (parse one chunk) and reduce (one partition) of the distributed ingest.

Map, run as Ray Data tasks: a chunk of the plan is parsed with the shared row
rules into clean candidates and quarantine rows.  Clean candidates are cut by
partition ``id % P`` and written as one Parquet file per chunk with one row
group per non-empty partition (:data:`CHUNK_SCHEMA`, partitions in order), so
the reducer of p reads just its row group (random access: on S3 only those
bytes) -- no Ray Data hash shuffle, which was measured slow here.  Quarantine
rows of chunk c are written beside it and merged by reducer ``c % P``.  The
chunk files of a fingerprinted input file are kept (``corpus/inputs/``, see
:mod:`.reuse`) so that an update reuses them instead of parsing the file again;
the others are staging, removed after the ingest.  Neither holds the file
index: the reducer is told each chunk's current index, so a kept chunk serves
any later file order.

Reduce, one Ray task per partition: applies the duplicate rule across files
and chunks (the smallest (file index, line) wins, as in the single-process
reader), checks int64 id collisions, applies the corpus limit, sorts by id,
compares with the parent snapshot's partition (read *verified*) and writes
the partition file, or reuses the parent's when the digest is the same, or
(an update within ``corpus.compact_fraction``) appends a delta segment of the
added and changed rows to the parent's files (:func:`write_partition`).
"""

from __future__ import annotations

import hashlib
import io
import json
from typing import Any, Dict, List, Optional, Tuple

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from ..config import StorageConfig
from ..ids import seed_for
from ..store.integrity import read_table_verified, read_verified, sha256_bytes, table_bytes, write_committed
from ..store.segments import NO_KIND, append_segment, delta_allowed, live_table, segments
from ..store.storage import Storage, join
from .readers import (
    CLEAN_SCHEMA,
    MAX_PASSAGE_CHARS,
    QUARANTINE_SCHEMA,
    STAGED_Q_SCHEMA,
    STAGED_SCHEMA,
    Collector,
    check_id_collisions,
    read_jsonl,
    read_parquet,
    read_tsv,
)
from .sources import CorpusError, iter_lines, iter_range_lines, range_bytes


# Rows per row group of a partition file.  Files are sorted by id, so the row
# groups' id min/max statistics let a reader of a few ids (evaluation, the gold
# check) read only the groups holding them: at most one group per id, 4,096 rows
# (a few MB of text) rather than a whole partition.
ROW_GROUP_ROWS = 4096


def partition_bytes(table: pa.Table) -> bytes:
    """A partition table as Parquet bytes (zstd, row groups of :data:`ROW_GROUP_ROWS`, id statistics)."""
    buf = io.BytesIO()
    pq.write_table(table, buf, compression="zstd", row_group_size=ROW_GROUP_ROWS)
    return buf.getvalue()


# A chunk's clean candidates as kept on disk: the staged row without its file index.
CHUNK_SCHEMA = pa.schema([f for f in STAGED_SCHEMA if f.name != "file_idx"])


def parse_chunk(storage: Storage, c: Dict[str, Any], max_passage_chars: int = MAX_PASSAGE_CHARS) -> Collector:
    """Every row of chunk ``c`` through the shared rules (no duplicate rule: that needs all chunks)."""
    col = Collector(staged=True, max_passage_chars=max_passage_chars)
    uri = c["uri"]
    src = col.source(uri, c["file_idx"])
    if c["kind"] == "parquet":
        read_parquet(col, src, storage, uri, c["row_groups"], c["first_row"])
        return col
    if c["kind"] == "range":
        fs, path = storage.resolve(uri)
        with fs.open_input_file(path) as f:
            data, first = range_bytes(f, c["start"], c["end"], c["size"])
        lines = iter_range_lines(data, first, c["first_line"])
    else:
        lines = iter_lines(storage, uri)
    if c["fmt"] == "jsonl":
        read_jsonl(col, src, uri, lines, c["docid_key"])
    else:
        read_tsv(col, src, lines, c["header"])
    return col


def chunk_parquet(groups: List[pa.Table], kept: bool) -> bytes:
    """One Parquet file, one row group per non-empty table of ``groups`` (in order).

    No dictionaries (the strings are nearly all distinct: a dictionary only costs
    time); a kept chunk is LZ4-compressed (about half the bytes, measured at a
    third of zstd's write + read CPU), a staged one is not compressed at all.
    """
    buf = io.BytesIO()
    with pq.ParquetWriter(buf, CHUNK_SCHEMA, compression="lz4" if kept else "none", use_dictionary=False) as w:
        for t in groups:
            if t.num_rows:
                w.write_table(t.select(CHUNK_SCHEMA.names).cast(CHUNK_SCHEMA), row_group_size=t.num_rows)
    return buf.getvalue()


def row_group_of(counts: List[int], p: int) -> int:
    """The row group holding partition ``p`` in a chunk file whose partitions have ``counts`` rows."""
    return sum(1 for c in counts[:p] if c)


def parse_batch(batch: Dict[str, Any], *, storage_cfg: StorageConfig, root: str, num_partitions: int,
                max_passage_chars: int = MAX_PASSAGE_CHARS) -> Dict[str, Any]:
    """Ray Data UDF: parse the chunk(s) in ``batch``, write their rows at the spec's ``out`` paths, return small per-chunk stats."""
    storage = Storage(storage_cfg)
    out: Dict[str, List[Any]] = {"chunk": [], "rows_read": [], "blank_lines": [], "quarantined": [], "counts": [],
                                 "clean": [], "q": [], "error": []}
    for spec in batch["spec"]:
        c = json.loads(spec)
        try:
            col = parse_chunk(storage, c, max_passage_chars)
        except CorpusError as e:
            # Returned as data: Ray Data would wrap the exception and append retry advice to its message.
            for k, v in (("chunk", c["chunk"]), ("rows_read", 0), ("blank_lines", 0), ("quarantined", 0),
                         ("counts", "[]"), ("clean", "null"), ("q", "null"), ("error", str(e))):
                out[k].append(v)
            continue
        clean = col.clean_table()
        part = clean.column("id").to_numpy() % num_partitions if clean.num_rows else np.zeros(0, np.int64)
        counts = np.bincount(part, minlength=num_partitions)
        clean_rec = q_rec = None
        if clean.num_rows:
            order = np.argsort(part, kind="stable")  # keeps line order inside each partition
            grouped = clean.take(pa.array(order))
            bounds = np.concatenate([[0], np.cumsum(counts)])
            groups = [grouped.slice(bounds[p], counts[p]) for p in range(num_partitions)]
            clean_rec = write_committed(storage, root, c["out"] + ".parquet", chunk_parquet(groups, c["kept"]))
        q = col.quarantine_table()
        if q.num_rows:
            q_rec = write_committed(storage, root, c["out"] + "-q.parquet", table_bytes(q.cast(QUARANTINE_SCHEMA)))
        for k, v in (("chunk", c["chunk"]), ("rows_read", col.rows_read), ("blank_lines", col.blank_lines),
                     ("quarantined", q.num_rows), ("counts", json.dumps(counts.tolist())),
                     ("clean", json.dumps(clean_rec)), ("q", json.dumps(q_rec)), ("error", "")):
            out[k].append(v)
    return out


def _with_file_idx(t: pa.Table, file_idx: int, schema: pa.Schema) -> pa.Table:
    return t.append_column("file_idx", pa.array(np.full(t.num_rows, file_idx, np.int32))).select(schema.names).cast(schema)


def read_chunk_group(storage: Storage, root: str, rel: str, row_group: int, file_idx: int) -> pa.Table:
    """One partition's clean candidates of one chunk file (only that row group's bytes), with ``file_idx``."""
    fs, path = storage.resolve(join(root, rel))
    with fs.open_input_file(path) as f:
        t = pq.ParquetFile(f).read_row_group(row_group, use_threads=False)  # one task per partition is the parallelism
    return _with_file_idx(t, file_idx, STAGED_SCHEMA)


def read_chunk_quarantine(storage: Storage, root: str, rel: str, file_idx: int) -> pa.Table:
    fs, path = storage.resolve(join(root, rel))
    with fs.open_input_file(path) as f:
        t = pq.read_table(f)
    return _with_file_idx(t, file_idx, STAGED_Q_SCHEMA)


def dedup(staged: pa.Table, files: List[str]) -> Tuple[pa.Table, pa.Table]:
    """(winners, losers as quarantine rows): per docid the row with the smallest (file index, line) wins."""
    if staged.num_rows == 0:
        return staged, STAGED_Q_SCHEMA.empty_table()
    t = staged.sort_by([("docid", "ascending"), ("file_idx", "ascending"), ("line", "ascending")])
    docids = t.column("docid")
    first = np.ones(t.num_rows, dtype=bool)
    if t.num_rows > 1:
        first[1:] = pc.not_equal(docids.slice(1), docids.slice(0, t.num_rows - 1)).to_numpy(zero_copy_only=False)
    winners = t.filter(pa.array(first))
    if winners.num_rows == t.num_rows:
        return winners, STAGED_Q_SCHEMA.empty_table()
    starts = np.flatnonzero(first)
    win_of = starts[np.cumsum(first) - 1]  # index of each row's group winner
    lose = np.flatnonzero(~first)
    fi = t.column("file_idx").to_numpy()
    line = t.column("line").to_numpy()
    reasons = [f"duplicate docid (first at {files[fi[win_of[i]]]}:{line[win_of[i]]})" for i in lose]
    losers = t.take(pa.array(lose))
    q = pa.table({
        "source": pa.array([files[i] for i in losers.column("file_idx").to_pylist()], pa.string()),
        "line": losers.column("line"),
        "docid": losers.column("docid"),
        "reason": pa.array(reasons, pa.string()),
        "raw": losers.column("raw"),
        "file_idx": losers.column("file_idx"),
    }, schema=STAGED_Q_SCHEMA)
    return winners, q


def _limit_keys(table: pa.Table, golds: pa.Array, seed: int) -> Tuple[np.ndarray, List[Tuple[int, str]]]:
    """(non-gold mask, (seed_for(seed, docid), docid) of the non-gold rows)."""
    nongold = pc.invert(pc.is_in(table.column("docid"), value_set=golds)).to_numpy(zero_copy_only=False)
    docids = table.column("docid").to_pylist()
    return nongold, [(seed_for(seed, d), d) for d, ng in zip(docids, nongold) if ng]


def partition_digest(table: pa.Table) -> str:
    """sha256 over ``f"{id}:{content_hash}\\n"`` of the rows sorted by id."""
    h = hashlib.sha256()
    for pid, ch in zip(table.column("id").to_pylist(), table.column("content_hash").to_pylist()):
        h.update(f"{pid}:{ch}\n".encode())
    return h.hexdigest()


def diff_rows(new: pa.Table, old: Optional[pa.Table]) -> Tuple[np.ndarray, np.ndarray, Dict[str, int]]:
    """(per row of ``new``: added or changed; ids of ``old`` that died, removed or changed, sorted; the counts).

    Both tables hold ``id`` (unique, sorted) and ``content_hash``.
    """
    new_ids = new.column("id").to_numpy()
    if old is None:
        counts = {"added": new.num_rows, "changed": 0, "removed": 0, "unchanged": 0}
        return np.ones(len(new_ids), bool), np.zeros(0, np.int64), counts
    old_ids = old.column("id").to_numpy()
    _, ni, oi = np.intersect1d(new_ids, old_ids, assume_unique=True, return_indices=True)
    same = pc.equal(new.column("content_hash").take(pa.array(ni)), old.column("content_hash").take(pa.array(oi)))
    same = same.to_numpy(zero_copy_only=False).astype(bool)
    fresh = np.ones(len(new_ids), bool)
    fresh[ni[same]] = False
    alive = np.zeros(len(old_ids), bool)
    alive[oi[same]] = True
    unchanged = int(same.sum())
    counts = {"added": len(new_ids) - len(ni), "changed": len(ni) - unchanged, "removed": len(old_ids) - len(oi), "unchanged": unchanged}
    return fresh, old_ids[~alive], counts


def write_partition(storage: Storage, root: str, p: int, clean: pa.Table, digest: str, parent_rec: Optional[Dict[str, Any]] = None,
                    old: Optional[pa.Table] = None, compact_fraction: float = 0.0) -> Dict[str, Any]:
    """The committed record of partition ``p`` holding ``clean`` (sorted by id; ``digest``: its
    :func:`partition_digest`).

    Over a parent (``parent_rec``, whose live ``id``/``content_hash`` rows are ``old``), a change within
    ``compact_fraction`` churn is a *delta segment* (:mod:`xqg_ray.store.segments`): a file of only the
    added and changed rows, the removed and changed ids as its tombstones, the parent's files named
    again, never rewritten.  A 1% update then writes about 1% of a partition, not all of it.  Past that
    churn, or without a parent, the partition is one new file (which compacts any segments).
    """
    if parent_rec is not None and old is not None and compact_fraction > 0:
        fresh, dead, _ = diff_rows(clean, old)
        # Named by the content and by the parent it applies to: never the name of a whole file.
        rel = f"corpus/parts/p-{p:05d}-{digest[:16]}-on-{parent_rec['digest'][:16]}.parquet"
        if delta_allowed(parent_rec, rel, clean.num_rows, int(fresh.sum()), compact_fraction):
            delta = clean.filter(pa.array(fresh))
            seg = {**write_committed(storage, root, rel, partition_bytes(delta)), "rows": delta.num_rows}
            out = append_segment(storage, root, parent_rec, seg, {NO_KIND: dead}, clean.num_rows)
            return {"partition": p, **out, "digest": digest}
    rel = f"corpus/parts/p-{p:05d}-{digest[:16]}.parquet"
    return {"partition": p, **write_committed(storage, root, rel, partition_bytes(clean)), "rows": clean.num_rows, "digest": digest}


def verify_partition(storage_cfg: StorageConfig, root: str, rec: Dict[str, Any], where: str) -> None:
    """Check a reused partition's files (each segment and its tombstones) against their sha256 (bytes only,
    nothing parsed); raises IntegrityError."""
    storage = Storage(storage_cfg)
    for seg in segments(rec):
        for f in (seg, seg.get("tombstones")):
            if f:
                read_verified(storage, root, f, where)


def reduce_partition(storage_cfg: StorageConfig, root: str, p: int, files: List[str],
                     clean_inputs: List[Tuple[str, int, int]], q_inputs: List[Tuple[str, int]], *, parent_rec: Optional[Dict[str, Any]] = None,
                     parent_where: str = "", golds: Optional[List[str]] = None, seed: int = 0,
                     select: int = -1, cut: Optional[Tuple[int, str]] = None, keep_all: bool = True,
                     write_parts: bool = True, compact_fraction: float = 0.0) -> Dict[str, Any]:
    """One partition: duplicates, collisions, limit, sort, diff with the parent, write.

    ``select >= 0`` only reports the ``select`` smallest limit keys of the
    non-gold rows (first pass of the corpus limit) and writes nothing.  In the
    final pass, non-gold rows are kept if ``keep_all`` or their key <= ``cut``.
    ``clean_inputs``: ``(chunk file, row group, file index)`` of every chunk with rows in ``p``, in input
    order; ``q_inputs``: ``(quarantine file, file index)`` of the chunks whose quarantine ``p`` merges.
    ``compact_fraction``: see :func:`write_partition`.
    """
    storage = Storage(storage_cfg)
    parts = [read_chunk_group(storage, root, rel, rg, fi) for rel, rg, fi in clean_inputs]
    staged = pa.concat_tables(parts) if parts else STAGED_SCHEMA.empty_table()
    winners, dups = dedup(staged, files)
    check_id_collisions(winners)
    gold_arr = pa.array(golds or [], pa.string())
    if select >= 0:
        nongold, keys = _limit_keys(winners, gold_arr, seed)
        golds_found = int(len(nongold) - nongold.sum())
        import heapq

        return {"partition": p, "keys": heapq.nsmallest(select, keys), "nongold": len(keys), "golds_found": golds_found}
    limited_out = 0
    golds_found = 0
    if golds is not None:
        nongold, keys = _limit_keys(winners, gold_arr, seed)
        golds_found = int(len(nongold) - nongold.sum())
        if not keep_all:
            ok = iter([cut is not None and k <= cut for k in keys])
            mask = np.array([next(ok) if ng else True for ng in nongold], dtype=bool)
            limited_out = int((~mask).sum())
            winners = winners.filter(pa.array(mask))
    clean = winners.select(CLEAN_SCHEMA.names).sort_by("id").cast(CLEAN_SCHEMA)
    digest = partition_digest(clean)

    old = None
    if parent_rec is not None:
        # Always read (and so verify) the parent's files: a reused record must point at intact bytes.
        old = live_table(storage, root, parent_rec, columns=["id", "content_hash"], where=parent_where)
    _, _, changes = diff_rows(clean, old)
    rec: Optional[Dict[str, Any]] = None
    if write_parts:
        if parent_rec is not None and parent_rec.get("digest") == digest:
            rec = dict(parent_rec)
        else:
            rec = write_partition(storage, root, p, clean, digest, parent_rec, old, compact_fraction)

    qparts = [read_chunk_quarantine(storage, root, rel, fi) for rel, fi in q_inputs] + [dups]
    q = pa.concat_tables(qparts).sort_by([("file_idx", "ascending"), ("line", "ascending")])
    qrec = None
    if q.num_rows:
        data = table_bytes(q.select(QUARANTINE_SCHEMA.names).cast(QUARANTINE_SCHEMA))
        rel = f"corpus/quarantine/q-{p:05d}-{sha256_bytes(data)[:16]}.parquet"
        qrec = {**write_committed(storage, root, rel, data), "rows": q.num_rows}
    return {"partition": p, "record": rec, "digest": digest, "rows": clean.num_rows, "changes": changes,
            "duplicates": dups.num_rows, "limited_out": limited_out, "golds_found": golds_found, "quarantine": qrec}


def append_partition(storage_cfg: StorageConfig, root: str, p: int, files: List[str], clean_inputs: List[Tuple[str, int, int]],
                     q_inputs: List[Tuple[str, int]], first_new_file: int, *, parent_rec: Dict[str, Any],
                     parent_inputs: Dict[str, Any], parent_where: str, compact_fraction: float) -> Dict[str, Any]:
    """:func:`reduce_partition`'s result for a partition whose inputs are its parent's plus chunks of files
    ``first_new_file`` and after (:func:`xqg_ray.ingest.reuse.appended_partitions`), reading only those.

    Every new row comes after every old one in input order, so the parent's rows (its reduced
    partition) win every duplicate: a new row is a duplicate when its docid is the parent's or an
    earlier new row's.  The quarantine is the parent's file followed by the new rows set aside, in
    input order: what a full reduce sorts them into.  The new rows go to a delta segment; where
    that is past ``compact_fraction`` (or 0) the partition is reduced in full instead.
    """
    storage = Storage(storage_cfg)
    new_inputs = [c for c in clean_inputs if c[2] >= first_new_file]
    parts = [read_chunk_group(storage, root, rel, rg, fi) for rel, rg, fi in new_inputs]
    staged = pa.concat_tables(parts) if parts else STAGED_SCHEMA.empty_table()
    old = live_table(storage, root, parent_rec, columns=["id", "docid", "content_hash"], where=parent_where)
    known = pc.is_in(staged["docid"], value_set=old["docid"]).to_numpy(zero_copy_only=False).astype(bool)
    winners, dups = dedup(staged.filter(pa.array(~known)), files)
    if known.any():
        # Duplicates of the parent's rows: the reason names where the winner is, as a full reduce does.
        old_staged = pa.concat_tables([read_chunk_group(storage, root, rel, rg, fi) for rel, rg, fi in clean_inputs if fi < first_new_file])
        _, old_dups = dedup(pa.concat_tables([old_staged, staged.filter(pa.array(known))]), files)
        dups = pa.concat_tables([dups, old_dups.filter(pc.greater_equal(old_dups["file_idx"], first_new_file))])
    delta = winners.select(CLEAN_SCHEMA.names).sort_by("id").cast(CLEAN_SCHEMA)
    live = pa.concat_tables([old.select(["id", "docid"]), delta.select(["id", "docid"])])
    check_id_collisions(live)
    keyed = pa.concat_tables([old.select(["id", "content_hash"]), delta.select(["id", "content_hash"])]).sort_by("id")
    digest = partition_digest(keyed)
    rows = keyed.num_rows
    rel = f"corpus/parts/p-{p:05d}-{digest[:16]}-on-{parent_rec['digest'][:16]}.parquet"
    if delta.num_rows and not delta_allowed(parent_rec, rel, rows, delta.num_rows, compact_fraction):
        return reduce_partition(storage_cfg, root, p, files, clean_inputs, q_inputs, parent_rec=parent_rec, parent_where=parent_where,
                                compact_fraction=compact_fraction)
    rec = dict(parent_rec)  # only duplicates or set-aside rows were added: the parent's files, as a full reduce finds
    if delta.num_rows:
        seg = {**write_committed(storage, root, rel, partition_bytes(delta)), "rows": delta.num_rows}
        rec = {"partition": p, **append_segment(storage, root, parent_rec, seg, {}, rows), "digest": digest}

    prior_q = parent_inputs.get("quarantine")
    qparts = [read_table_verified(storage, root, prior_q, where=parent_where).cast(QUARANTINE_SCHEMA)] if prior_q else []
    new_q = [read_chunk_quarantine(storage, root, rel, fi) for rel, fi in q_inputs if fi >= first_new_file] + [dups]
    q_new = pa.concat_tables(new_q).sort_by([("file_idx", "ascending"), ("line", "ascending")])
    q = pa.concat_tables(qparts + [q_new.select(QUARANTINE_SCHEMA.names).cast(QUARANTINE_SCHEMA)])
    qrec = None
    if q.num_rows:
        data = table_bytes(q)
        qrel = f"corpus/quarantine/q-{p:05d}-{sha256_bytes(data)[:16]}.parquet"
        qrec = {**write_committed(storage, root, qrel, data), "rows": q.num_rows}
    return {"partition": p, "record": rec, "digest": digest, "rows": rows, "appended": True,
            "changes": {"added": delta.num_rows, "changed": 0, "removed": 0, "unchanged": old.num_rows},
            "duplicates": parent_inputs.get("duplicates", 0) + dups.num_rows, "limited_out": 0, "golds_found": 0, "quarantine": qrec}
