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
from typing import Any, Dict, Iterator, List

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from ..config import StorageConfig
from ..ids import content_hash, passage_id
from ..runtime.tasks import run_tasks
from ..store.integrity import IntegrityError
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
    """Rows of the wanted ids from one partition file, and how many rows were read to find them."""

    table: pa.Table
    rows_read: int


def read_rows_by_id(storage: Storage, root: str, rec: Dict[str, Any], ids: np.ndarray, where: str = "the corpus snapshot") -> RowLookup:
    """(id, docid, text) of ``ids`` from a committed corpus partition, reading only the row groups holding them.

    A partition kept as delta segments is looked up in each segment (each sorted by id, so
    its row groups' statistics prune it too), less the rows a later segment's tombstones name.

    A file's whole sha256 cannot be checked without reading all of it, so what
    is verified is: each file exists with its recorded size, its Parquet footer
    parses, and every row read is intact -- its id is the hash of its docid and
    its content_hash the sha256 of its (title, text).  The full sha256 is checked
    wherever a partition is read whole (generate, encode, the next ingest's diff).
    """
    segs = segments(rec)
    parts, rows_read = [], 0
    for i, seg in enumerate(segs):
        t = _rows_of_file(storage, root, seg, ids, where)
        rows_read += t.num_rows
        t = t.filter(pc.is_in(t["id"], value_set=pa.array(ids, pa.int64())))
        if i + 1 < len(segs):
            t = t.filter(pa.array(live_mask(t, dead_keys(storage, root, segs[i + 1:], where))))
        parts.append(t)
    t = pa.concat_tables(parts).sort_by("id") if len(parts) > 1 else parts[0]
    return RowLookup(table=t.select(["id", "docid", "text"]), rows_read=rows_read)


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


def partition_rows(root: str, storage_cfg: StorageConfig, rec: Dict[str, Any], ids: np.ndarray) -> pa.Table:
    """Ray task: (id, docid, text) of ``ids`` from one corpus partition (only the row groups holding them)."""
    return read_rows_by_id(Storage(storage_cfg), root, rec, ids).table


def lookup_rows(root: str, storage_cfg: StorageConfig, snapshot: Dict[str, Any], ids: np.ndarray, rc: Any) -> Iterator[pa.Table]:
    """(id, docid, text) tables of the given ids of the corpus ``snapshot``: one task per partition holding any of
    them, ``lookup_cpus(rc)`` CPUs each (``rc``: the ``ray`` section).  An id not in the snapshot is simply not returned."""
    ids = np.unique(np.asarray(ids, np.int64))
    P = snapshot["num_partitions"]
    parts = ids % P
    args = [(root, storage_cfg, snapshot["partitions"][p], ids[parts == p]) for p in np.unique(parts).tolist()]
    yield from run_tasks(partition_rows, args, lookup_cpus(rc))


__all__ = ["LOOKUP_COLUMNS", "RowLookup", "lookup_cpus", "lookup_rows", "partition_rows", "read_rows_by_id", "row_groups_holding"]
