"""Id lookups in committed corpus partitions: the rows of a few ids, reading only the row groups that may hold them.

The evaluate stage looks up the retrieved passages' texts and the benchmark stage
checks that every gold passage is in the clean corpus, both through
:func:`lookup_rows`: one Ray task per partition holding any wanted id.  The task
lives here, not beside its callers, because a Ray worker imports the module of
every function a task names: the evaluate stage's module pulls in nltk and
scipy.stats (about 1.5 CPU-s in each fresh worker, more than the lookup itself).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, Iterator, List, Optional, Tuple

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from ..config import StorageConfig
from ..ids import content_hash, passage_id
from ..runtime.tasks import run_tasks
from ..store.integrity import IntegrityError, read_table_verified, sha256_bytes, write_table_committed
from ..store.ledger import fingerprint
from ..store.sealed import read_sealed, write_sealed
from ..store.segments import dead_keys, live_mask, segments
from ..store.storage import Storage, join
from .readers import CLEAN_SCHEMA


def row_groups_holding(meta: pq.FileMetaData, column: str, ids: np.ndarray) -> List[int]:
    """Row groups of a Parquet file whose ``column`` min/max statistics admit any of ``ids``.

    A row group without statistics is kept (it cannot be ruled out).  Corpus
    partition files are sorted by id and cut into bounded row groups
    (:data:`xqg_ray.ingest.partition.ROW_GROUP_ROWS`), so k ids touch at most k groups.
    """
    want = np.sort(np.asarray(ids, np.int64))
    col = meta.schema.to_arrow_schema().get_field_index(column)
    out = []
    for g in range(meta.num_row_groups):
        st = meta.row_group(g).column(col).statistics
        if st is None or not st.has_min_max:
            out.append(g)
            continue
        lo = np.searchsorted(want, st.min, side="left")
        if lo < len(want) and want[lo] <= st.max:
            out.append(g)
    return out


@dataclass
class RowLookup:
    """Rows of the wanted ids from one partition, how many rows were read from its files to find them, and
    the rows found with the sha256 of the segment each came from (:data:`FOUND_SCHEMA`: the next lookup's cache)."""

    table: pa.Table
    rows_read: int
    found: pa.Table


# A looked-up row and the segment it was read from: a segment is immutable (named by its sha256 in the
# snapshot), so the row stands for as long as that segment is in a snapshot.
FOUND_SCHEMA = pa.schema([("segment", pa.string()), ("id", pa.int64()), ("docid", pa.string()), ("text", pa.string())])


def read_rows_by_id(storage: Storage, root: str, rec: Dict[str, Any], ids: np.ndarray, where: str = "the corpus snapshot",
                    cached: Optional[pa.Table] = None, cached_segments: Optional[List[str]] = None) -> RowLookup:
    """(id, docid, text) of ``ids`` from a committed corpus partition, reading only the row groups holding them.

    A partition kept as delta segments is looked up newest segment first (each sorted by
    id, so its row groups' statistics prune it too); an id found live in a newer segment
    is not looked for in older ones, and a row a later segment's tombstones name is dead.
    ``cached`` (:data:`FOUND_SCHEMA`: rows an earlier lookup found, over the partition's
    segments ``cached_segments``, oldest first) stands in for a segment's rows, and a row it
    found in one of those segments says its id is in none of the later ones: after an
    appended delta, the delta is read for every id and an older segment only for ids not
    looked up before.

    A file's whole sha256 cannot be checked without reading all of it, so what
    is verified is: each file exists with its recorded size, its Parquet footer
    parses, and every row read is intact -- its id is the hash of its docid and
    its content_hash the sha256 of its (title, text).  The full sha256 is checked
    wherever a partition is read whole (generate, encode, the next ingest's diff).
    """
    segs = segments(rec)
    left = np.unique(np.asarray(ids, np.int64))
    found, rows_read = [], 0
    at = {sha: i for i, sha in enumerate(cached_segments or [])}  # a segment's place when the cache was made
    was = np.array([at.get(sha, -1) for sha in cached["segment"].to_pylist()], np.int64) if cached is not None else np.zeros(0, np.int64)
    for i in reversed(range(len(segs))):
        if not len(left):
            break
        seg = segs[i]
        hit = FOUND_SCHEMA.empty_table().drop_columns(["segment"])
        need = left
        if cached is not None and cached.num_rows and seg["sha256"] in at:
            in_left = np.isin(cached["id"].to_numpy(), left)
            hit = cached.filter(pa.array(in_left & (was == at[seg["sha256"]]))).drop_columns(["segment"])
            # found in an older segment of the cache's list: not in this one
            older = cached["id"].to_numpy()[in_left & (was >= 0) & (was < at[seg["sha256"]])]
            need = left[~np.isin(left, hit["id"].to_numpy()) & ~np.isin(left, older)]
        t = _rows_of_file(storage, root, seg, need, where) if len(need) else None
        rows_read += 0 if t is None else t.num_rows
        if t is not None:
            hit = pa.concat_tables([hit, t.filter(pc.is_in(t["id"], value_set=pa.array(need))).select(["id", "docid", "text"])])
        if i + 1 < len(segs):
            hit = hit.filter(pa.array(live_mask(hit, dead_keys(storage, root, segs[i + 1:], where))))
        found.append(hit.add_column(0, "segment", pa.array([seg["sha256"]] * hit.num_rows, pa.string())))
        left = left[~np.isin(left, hit["id"].to_numpy())]
    rows = pa.concat_tables(found).sort_by("id") if found else FOUND_SCHEMA.empty_table()
    return RowLookup(table=rows.select(["id", "docid", "text"]), rows_read=rows_read, found=rows)


# What a lookup reads of a corpus file: enough to check each row against its id and content hash.
LOOKUP_COLUMNS = ["id", "docid", "title", "text", "content_hash"]


def _rows_of_file(storage: Storage, root: str, rec: Dict[str, Any], ids: np.ndarray, where: str) -> pa.Table:
    """The rows of the row groups of one corpus file that may hold ``ids``, each checked (see :func:`read_rows_by_id`)."""
    uri = join(root, rec["file"])
    fs, path = storage.resolve(uri)
    info = fs.get_file_info(path)
    if info.type == pafs.FileType.NotFound:
        raise IntegrityError(f"{uri} is missing but named by {where}: rerun the same command to recompute it")
    if info.size != rec["bytes"]:
        raise IntegrityError(f"{uri} is {info.size} bytes, {where} recorded {rec['bytes']}: the file changed after it was "
                             "committed; delete it and rerun the same command to recompute it")
    cols = LOOKUP_COLUMNS
    with fs.open_input_file(path) as f:
        pf = pq.ParquetFile(f)
        groups = row_groups_holding(pf.metadata, "id", ids)
        t = pf.read_row_groups(groups, columns=cols) if groups else pa.table({c: pa.array([], CLEAN_SCHEMA.field(c).type) for c in cols})
    wanted = t.filter(pc.is_in(t["id"], value_set=pa.array(ids, pa.int64())))
    for pid, docid, title, text, ch in zip(*(wanted[c].to_pylist() for c in cols)):
        if pid != passage_id(docid) or ch != content_hash(title, text):
            raise IntegrityError(f"{uri}: the row of docid {docid!r} does not match its id or content hash: the file changed "
                                 "after it was committed; delete it and rerun the same command to recompute it")
    return t


def lookup_cpus(rc: Any) -> float:
    """CPUs of one id-lookup task: ``ray.actor_num_cpus``, at most 1.  Not a fraction below it: with
    0.25 a 4-CPU local cluster ran 16 lookups at once in 17 freshly started workers, 40 CPU-s and
    17.4 s for 1,344 ids in 1M passages, against 15 CPU-s and 4.6 s with 1 CPU (5 workers)."""
    return min(1.0, float(rc.actor_num_cpus))


def partition_rows(root: str, storage_cfg: StorageConfig, rec: Dict[str, Any], ids: np.ndarray,
                   cache: Optional[Dict[str, Any]] = None, cache_out: Optional[str] = None) -> Tuple[pa.Table, Optional[Dict[str, Any]]]:
    """Ray task: ((id, docid, text) of ``ids`` from one corpus partition, only the row groups holding them; the
    record of ``cache_out``, the rows found with their segments, written for the next lookup (None: not written)).

    ``cache``: the record of the rows an earlier lookup of this partition found (see :func:`read_rows_by_id`)."""
    storage = Storage(storage_cfg)
    cached = None
    if cache is not None and "corpus_segments" not in cache:
        cache = None  # a record of an older format: looked up again and written anew, like a damaged one
    if cache is not None:
        try:
            cached = read_table_verified(storage, root, cache, where=f"the lookup cache {LOOKUP_INDEX}")
        except IntegrityError:
            # Derived from the corpus, which is checked row by row as it is read: a missing or changed
            # cache file is looked up again from the corpus and written anew, never trusted.
            cache = None
    got = read_rows_by_id(storage, root, rec, ids, cached=cached, cached_segments=None if cache is None else cache["corpus_segments"])
    if cache_out is None:
        return got.table, None
    if cache is not None and cache["file"] == cache_out:  # the same segments and ids: the same file, kept
        return got.table, cache
    return got.table, {**write_table_committed(storage, root, cache_out, got.found), "corpus_segments": [s["sha256"] for s in segments(rec)]}


# Where the evaluate stage keeps, per partition, the rows its last lookup found (sealed index + one file each).
LOOKUP_DIR = "lookups"
LOOKUP_INDEX = f"{LOOKUP_DIR}/index.json"


def lookup_rows(root: str, storage_cfg: StorageConfig, snapshot: Dict[str, Any], ids: np.ndarray, rc: Any,
                storage: Optional[Storage] = None) -> Iterator[pa.Table]:
    """(id, docid, text) tables of the given ids of the corpus ``snapshot``: one task per partition holding any of
    them, ``lookup_cpus(rc)`` CPUs each (``rc``: the ``ray`` section).  An id not in the snapshot is simply not returned.

    With ``storage`` (the driver's, whose run holds the output's lock) the rows found are kept
    under :data:`LOOKUP_DIR` and the next call reads them instead of their segments (only
    this call's partitions' rows are kept: the cache holds one run's retrieved passages).
    """
    ids = np.unique(np.asarray(ids, np.int64))
    P = snapshot["num_partitions"]
    parts = ids % P
    todo = np.unique(parts).tolist()
    index = {}
    if storage is not None and storage.exists(join(root, LOOKUP_INDEX)):
        index = read_sealed(storage, root, LOOKUP_INDEX)["partitions"]
    args = []
    for p in todo:
        want = ids[parts == p]
        out = None
        if storage is not None:  # named by what it holds: the partition's segments and the ids asked for
            key = fingerprint({"segments": [s["sha256"] for s in segments(snapshot["partitions"][p])], "ids": sha256_bytes(want.tobytes())})
            out = f"{LOOKUP_DIR}/p-{p:05d}-{key[:16]}.parquet"
        args.append((root, storage_cfg, snapshot["partitions"][p], want, index.get(str(p)), out))
    results = run_tasks(partition_rows, args, lookup_cpus(rc))
    if storage is not None:
        kept = {str(p): rec for p, (_, rec) in zip(todo, results)}
        write_sealed(storage, root, LOOKUP_INDEX, {"partitions": kept})
        named = {rec["file"] for rec in kept.values()} | {LOOKUP_INDEX}
        for rel in storage.list_relative(join(root, LOOKUP_DIR)):
            if f"{LOOKUP_DIR}/{rel}" not in named:
                storage.delete(join(root, LOOKUP_DIR, rel))
    for table, _ in results:
        yield table


__all__ = ["FOUND_SCHEMA", "LOOKUP_COLUMNS", "LOOKUP_DIR", "LOOKUP_INDEX", "RowLookup", "lookup_cpus", "lookup_rows", "partition_rows", "read_rows_by_id", "row_groups_holding"]
