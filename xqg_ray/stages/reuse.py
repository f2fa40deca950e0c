"""Per-passage reuse: which rows of a new partition an earlier output already covers.

A passage's generated queries and embeddings depend only on its id, its content
hash and the stage's settings, so an earlier output row with the same
(id, content_hash) is the same result.  These pure functions split a partition
into rows to reuse and rows to compute, and diff two versions of a shard; the
streaming form (:class:`PriorRows`, :func:`prior_batches`, :func:`interleave`)
does the same a batch at a time, so a stage never holds a whole prior output.
A prior output kept as delta segments (:mod:`xqg_ray.store.segments`) is read
as its live rows (:class:`PriorOutput`); :class:`PriorRows` also names the
prior rows it did not reuse, the tombstones of a delta segment.
"""

from __future__ import annotations

from typing import Any, Dict, Iterable, Iterator, List, Optional, Tuple

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ..store.integrity import VerifiedParquet
from ..store.segments import dead_keys, live_mask, merge_by_id, segments
from ..store.storage import Storage


def version_keys(table: pa.Table) -> pa.Array:
    """``"id:content_hash"`` per row: one string that names a passage version."""
    ids = pc.cast(table["id"], pa.string())
    return pc.binary_join_element_wise(ids, table["content_hash"], ":").combine_chunks() if table.num_rows else pa.array([], pa.string())


def split_reuse(new: pa.Table, prior: Optional[pa.Table]) -> Tuple[pa.Table, pa.Table]:
    """(prior rows still valid for ``new``, rows of ``new`` to compute).

    ``new`` and ``prior`` have ``id`` and ``content_hash`` columns.  Prior rows
    of passages that were removed or changed are dropped.
    """
    if prior is None or prior.num_rows == 0 or new.num_rows == 0:
        return (prior.slice(0, 0) if prior is not None else None), new
    nk, pk = version_keys(new), version_keys(prior)
    keep = pc.is_in(pk, value_set=nk)
    covered = pc.is_in(nk, value_set=pk)
    return prior.filter(keep), new.filter(pc.invert(covered))


def diff_versions(old: pa.Table, new: pa.Table) -> Tuple[np.ndarray, np.ndarray]:
    """(ids to remove from an index holding ``old``, boolean mask of ``new`` rows to add).

    A changed passage is removed and added again; an unchanged one is untouched.
    """
    if old.num_rows == 0:
        return np.zeros(0, np.int64), np.ones(new.num_rows, bool)
    ok, nk = version_keys(old), version_keys(new)
    gone = pc.invert(pc.is_in(ok, value_set=nk)) if new.num_rows else pa.array(np.ones(old.num_rows, bool))
    remove = old["id"].filter(gone).to_numpy() if old.num_rows else np.zeros(0, np.int64)
    add = ~pc.is_in(nk, value_set=ok).to_numpy(zero_copy_only=False) if new.num_rows else np.zeros(0, bool)
    return np.asarray(remove, np.int64), add


class PriorRows:
    """An earlier output's rows of one (kind, src), read batch by batch in id order, matched against new rows in id order.

    A row is reused when the prior holds the same (id, content_hash), as
    :func:`xqg_ray.stages.reuse.split_reuse` decides for whole tables; both
    tables are sorted by id, so one forward pass does it holding a batch.
    """

    def __init__(self, batches: Iterable[pa.Table]):
        self.batches = iter(batches)
        self.buf: Optional[pa.Table] = None
        self.dropped: List[np.ndarray] = []  # ids of prior rows passed over: removed or changed passages

    def match(self, ids: np.ndarray, hashes: pa.ChunkedArray) -> Tuple[np.ndarray, Optional[pa.Table]]:
        """(bool per id: the prior holds that version, those prior rows in the order of ``ids``).

        ``ids`` ascending, each above every id of earlier calls.
        """
        hit = np.zeros(len(ids), bool)
        taken: List[pa.Table] = []
        hashes = hashes.combine_chunks() if isinstance(hashes, pa.ChunkedArray) else hashes
        while len(ids):
            if self.buf is None or not self.buf.num_rows:
                self.buf = next(self.batches, None)
                if self.buf is None:
                    break
            pid = self.buf["id"].to_numpy()
            k = int(np.searchsorted(pid, ids[-1], side="right"))  # prior rows up to this call's last id
            cand, self.buf = self.buf.slice(0, k), self.buf.slice(k)
            if k:
                pos = np.minimum(np.searchsorted(ids, pid[:k]), len(ids) - 1)
                same = ids[pos] == pid[:k]
                same &= pc.equal(cand["content_hash"], hashes.take(pa.array(pos))).fill_null(False).to_numpy(zero_copy_only=False)
                hit[pos[same]] = True
                taken.append(cand.filter(pa.array(same)))
                self.dropped.append(pid[:k][~same])
            if self.buf.num_rows:  # the rest lies beyond this call's ids
                break
        return hit, pa.concat_tables(taken) if hit.any() else None

    def dead(self) -> np.ndarray:
        """Ids of every prior row not reused (read to the end first): what a delta segment tombstones."""
        rest = [] if self.buf is None else [self.buf]
        for t in [*rest, *self.batches]:
            self.dropped.append(t["id"].to_numpy())
        self.buf = None
        return np.concatenate(self.dropped) if self.dropped else np.zeros(0, np.int64)


class PriorOutput:
    """An earlier output of one partition: its segments (each sha256-checked once) and what later ones tombstone."""

    def __init__(self, storage: Storage, root: str, rec: Dict[str, Any], where: str):
        segs = segments(rec)
        self.files = [VerifiedParquet(storage, root, s, where=where) for s in segs]
        self.dead = [dead_keys(storage, root, segs[i + 1:], where) for i in range(len(segs))]

    def batches(self, kind: str, src: str, batch_rows: int, columns: Optional[List[str]] = None) -> Iterator[pa.Table]:
        """The live rows of one (kind, src) in id order, ``batch_rows`` at a time (``columns`` must hold kind, src, id).

        One file streams as before; several are merged by id as they stream, so memory is
        about one batch per segment, never a whole (kind, src) of the partition.
        """
        if len(self.files) == 1:
            yield from prior_batches(self.files[0], kind, src, batch_rows, columns)
            return
        def live(f: VerifiedParquet, dead: Dict[str, np.ndarray]) -> Iterator[pa.Table]:
            for t in prior_batches(f, kind, src, batch_rows, columns):
                yield t.filter(pa.array(live_mask(t, dead)))

        yield from merge_by_id([live(f, dead) for f, dead in zip(self.files, self.dead)])


def prior_batches(prior: VerifiedParquet, kind: str, src: str, batch_rows: int,
                  columns: Optional[List[str]] = None) -> Iterator[pa.Table]:
    """The rows of ``prior`` of one (kind, src) in file order, skipping row groups whose statistics exclude ``kind``."""
    meta = prior.metadata()
    groups = []
    for i in range(meta.num_row_groups):
        rg = meta.row_group(i)
        stats = next((rg.column(j).statistics for j in range(rg.num_columns) if rg.column(j).path_in_schema == "kind"), None)
        lo, hi = (stats.min, stats.max) if stats is not None and stats.has_min_max else ("", "\U0010ffff")
        if _text(lo) <= kind <= _text(hi):
            groups.append(i)
    for b in prior.batches(columns, batch_rows, groups):
        t = pa.Table.from_batches([b])
        t = t.filter(pc.and_(pc.equal(t["kind"], kind), pc.equal(t["src"], src)))
        if t.num_rows:
            yield t


def matched(source: Any, prior: Optional[PriorOutput], batch_rows: int, prior_columns: Optional[List[str]] = None,
            dropped: Optional[List[np.ndarray]] = None) -> Iterator[Tuple[pa.Table, np.ndarray, Optional[pa.Table]]]:
    """(rows of ``source``'s table, bool per row: reused, the reused prior rows in row order), batch by batch.

    ``source``: a :class:`~xqg_ray.stages.sources.Source` (its ``batches``, ``kind``, ``src``, ``file``);
    ``dropped``: gets, once the rows are through, the ids of the prior rows not reused.
    """
    rows = None if prior is None else PriorRows(prior.batches(source.kind, source.src, batch_rows, prior_columns))
    last = None
    for t in source.batches(batch_rows):
        if not t.num_rows:
            continue
        ids = t["id"].to_numpy()
        if np.any(np.diff(ids) <= 0) or (last is not None and ids[0] <= last):
            raise ValueError(f"{source.file.uri}: rows are not sorted by unique id")
        last = ids[-1]
        if rows is None:
            yield t, np.zeros(t.num_rows, bool), None
        else:
            yield (t, *rows.match(ids, t["content_hash"]))
    if rows is not None and dropped is not None:
        dropped.append(rows.dead())


def interleave(computed: pa.Table, old: Optional[pa.Table], hit: np.ndarray) -> pa.Table:
    """Rows in input order: ``old`` where ``hit``, ``computed`` elsewhere (each already in that order)."""
    if old is None or not hit.any():
        return computed
    if hit.all():
        return old
    idx = np.empty(len(hit), np.int64)
    idx[~hit] = np.arange(int((~hit).sum()))
    idx[hit] = int((~hit).sum()) + np.arange(int(hit.sum()))
    return pa.concat_tables([computed, old]).take(pa.array(idx))


def _text(v: Any) -> str:
    return v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v)
