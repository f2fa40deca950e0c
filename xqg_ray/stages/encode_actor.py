"""The encode stage's actor: loads the encoder once and runs encode units, a corpus partition or a query set.

A partition streams: its corpus and generated queries are read batch by batch,
rows are cut into windows of at most ``encoder.window_rows`` rows and texts,
each window is encoded and written as the next row group, so an actor holds a
few windows, never a partition; a small update writes only its computed rows as
a delta segment with tombstones.  The planning and publishing of both ledgers
are in :mod:`.encode`.
"""

from __future__ import annotations

from dataclasses import dataclass
from collections import OrderedDict
from typing import Any, Callable, Dict, Iterator, List, Optional, Tuple

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ..arrow_utils import arrow_to_vectors, vectors_to_arrow
from ..retrieval.augment import check_counts, slot_positions, slot_sums
from ..config import EncoderConfig, PerturbationConfig, StorageConfig
from ..store.integrity import CommittedParquetWriter, read_table_verified, write_table_committed
from ..store.ledger import Ledger
from ..store.segments import append_segment, delta_allowed, live_parquet
from .sources import GEN_COLUMNS, PASSAGE_COLUMNS, Source
from .reuse import PriorOutput, interleave, matched
from .records import EncodePartitionUnit, EncodeQueriesUnit, encode_unit
from ..runtime.units import UnitRunner
from ..schemas import PASSAGE, embeddings_schema, gen_kind, query_vectors_schema
from ..store.storage import Storage


def merge_counts(parts: List[Dict[str, int]]) -> Dict[str, int]:
    """check_counts over a whole corpus from its partitions' summaries."""
    nonempty = [c for c in parts if c["passages"]]
    if not nonempty:
        return check_counts(np.zeros(0))
    return {"min": min(c["min"] for c in nonempty), "max": max(c["max"] for c in nonempty),
            "zero": sum(c["zero"] for c in nonempty), "passages": sum(c["passages"] for c in nonempty)}


class EncodePartition(UnitRunner):
    """Actor: loads the encoder once; each call encodes what one unit still lacks."""

    def __init__(self, root: str, storage_cfg: StorageConfig, cfg: EncoderConfig, threads: int):
        from ..models.factory import make_encoder
        from ..training.artifact import resolve_encoder

        self.root, self.storage, self.cfg = root, Storage(storage_cfg), cfg
        # A trained encoder (model trained:NAME@KEY) loads its artifact's files, each sha256-checked.
        self.encoder = make_encoder(resolve_encoder(self.storage, root, cfg), threads)
        self.schema = embeddings_schema(self.encoder.dim)
        self.memo = QueryMemo(cfg.window_rows)
        self.judged: Optional[JudgedPassages] = None

    def run_unit(self, plan: Dict[str, Any]) -> Dict[str, Any]:
        u = encode_unit(plan)
        led = Ledger(self.storage, self.root, u.stage)
        record = self._queries(u) if isinstance(u, EncodeQueriesUnit) else self._partition(u)
        record.update(unit=u.unit, dim=self.encoder.dim)
        led.commit(u.unit, u.key, record)
        return {**record, "key": u.key, "commit": led.commit_rel(u.unit, u.key)}

    def _queries(self, u: EncodeQueriesUnit) -> Dict[str, Any]:
        q = read_table_verified(self.storage, self.root, u.queries, ["qid", "lang", "text"], where="the benchmark manifest")
        if u.perturbation is not None:
            from ..evaluation.perturb import perturb_table

            q = perturb_table(q, PerturbationConfig(**u.perturbation))
        vecs = self.encoder.encode(q["text"].to_pylist(), "query")
        t = pa.table({"qid": q["qid"], "lang": q["lang"], "text": q["text"], "vector": vectors_to_arrow(vecs)}, schema=query_vectors_schema(self.encoder.dim))
        rec = write_table_committed(self.storage, self.root, u.out, t)
        rec["set"] = u.set
        return rec

    def _rows(self, kind: str, src: str, ids: pa.Array, hashes: pa.Array, vecs: np.ndarray, counts: np.ndarray,
              slots: Optional[np.ndarray] = None, slot_counts: Optional[np.ndarray] = None) -> pa.Table:
        n, dim = len(ids), self.encoder.dim
        if slots is None:
            slot_col = pa.nulls(n, self.schema.field("slots").type)
            count_col = pa.nulls(n, self.schema.field("slot_counts").type)
        else:
            k = slots.shape[1]
            offsets = pa.array(np.arange(n + 1, dtype=np.int32) * k)
            slot_col = pa.ListArray.from_arrays(offsets, vectors_to_arrow(slots.reshape(n * k, dim).astype(np.float32)))
            count_col = pa.ListArray.from_arrays(offsets, pa.array(slot_counts.reshape(-1).astype(np.int32), pa.int32()))
        return pa.table({"kind": pa.array([kind] * n, pa.string()), "src": pa.array([src] * n, pa.string()), "id": ids, "content_hash": hashes,
                         "vector": vectors_to_arrow(vecs.reshape(n, dim)), "count": pa.array(counts, pa.int32()),
                         "slots": slot_col, "slot_counts": count_col}, schema=self.schema)

    def _query_sums(self, langs: List[List[str]], vecs: np.ndarray, width: int) -> Tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """(total sums, counts, per-slot sums, per-slot counts) of each passage's queries (languages ``langs``), encoded as ``vecs`` (flattened).

        ``width``: the slots every row gets (the partition's widest, so a row does not depend on its window).
        """
        group, slot = slot_positions(langs)
        sums, counts = slot_sums(vecs.reshape(len(group), self.encoder.dim), group, slot, len(langs))
        pad = width - sums.shape[1]
        sums, counts = np.pad(sums, ((0, 0), (0, pad), (0, 0))), np.pad(counts, ((0, 0), (0, pad)))
        # float64 sums: the same total regardless of how queries were batched.
        return sums.sum(axis=1).astype(np.float32), counts.sum(axis=1), sums, counts

    def _partition(self, u: EncodePartitionUnit) -> Dict[str, Any]:
        corpus = live_parquet(self.storage, self.root, u.corpus, where="the corpus snapshot")
        prior = PriorOutput(self.storage, self.root, u.prior, where="the previous embeddings manifest") if u.prior else None
        names = list(u.gens)
        # The record's key order as before: passages, then the generators.
        computed = {PASSAGE: 0, **{gen_kind(n): 0 for n in names}}
        reused = dict.fromkeys(computed, 0)
        summaries: Dict[str, List[Dict[str, int]]] = {n: [] for n in names}
        gens = []
        for name in sorted(names, key=gen_kind):  # the file's order: kind, then id ("gen:*" sorts before "passage")
            sel = u.gens[name].get("select")
            g = live_parquet(self.storage, self.root, u.gens[name], where=f"the generated/{sel['generator'] if sel else name} manifest")
            gens.append(Source(gen_kind(name), u.gens[name]["src"], name, g, GEN_COLUMNS, sel))
        passages = Source(PASSAGE, "", None, corpus, PASSAGE_COLUMNS)
        self.memo.clear()  # a unit's vectors never depend on the units this actor ran before it
        self.judged = JudgedPassages.read(self.storage, self.root, u.passage_vectors, str(getattr(self.encoder, "device", "cpu")))
        delta, dead = self._plan_delta(u, gens, passages, prior)
        # A delta segment needs of the reused rows only their counts (for the summaries), not their vectors.
        prior_columns = ["kind", "src", "id", "content_hash", "count"] if delta else None
        with CommittedParquetWriter(self.storage, self.root, u.out, self.schema, self.cfg.window_rows) as out:
            for sources, kind in ((gens, "query"), ([passages], "passage")):
                for source, rows, old, hit in self._stream(sources, kind, prior, prior_columns):
                    if delta:  # only the rows computed now: the reused ones stay in the earlier segments
                        out.add(rows)
                        count = np.concatenate([rows["count"].to_numpy(), np.zeros(0, np.int32) if old is None else old["count"].to_numpy()])
                    else:
                        table = interleave(rows, None if old is None else old.cast(self.schema), hit)
                        out.add(table)
                        count = table["count"].to_numpy()
                    computed[source.kind] += rows.num_rows
                    reused[source.kind] += int(hit.sum())
                    if source.name is not None:
                        summaries[source.name].append(check_counts(count))
            rec = out.commit()
        if delta:
            rec = append_segment(self.storage, self.root, u.prior, rec, dead, sum(computed.values()) + sum(reused.values()))
        rec.update(partition=u.partition, computed=sum(computed.values()), reused=sum(reused.values()),
                   computed_by_kind=computed, reused_by_kind=reused, counts={n: merge_counts(summaries[n]) for n in names})
        if self.judged is not None:
            rec["passages_from_judge"] = self.judged.taken
        return rec

    def _plan_delta(self, u: EncodePartitionUnit, gens: List["Source"], passages: "Source", prior: Optional[PriorOutput]
                    ) -> Tuple[bool, Dict[str, np.ndarray]]:
        """(append a delta segment (same sources as the prior, churn within ``compact_fraction``), kind -> prior
        ids that die), from one pass over ids; sets each generator's slot width (passages: read only over a prior)."""
        dead: Dict[str, np.ndarray] = {}
        n_rows = n_computed = 0
        for source in [*gens, *([Source(PASSAGE, "", None, passages.file, ["id", "content_hash"])] if prior else [])]:
            drop: List[np.ndarray] = []
            for t, hit, _ in matched(source, prior, self.cfg.window_rows, ["kind", "src", "id", "content_hash"], drop):
                if source.name is not None:
                    source.width = max(source.width, slot_width(t["queries"].filter(pa.array(~hit))))
                n_rows, n_computed = n_rows + t.num_rows, n_computed + int((~hit).sum())
            if drop and len(drop[0]):
                dead[source.kind] = drop[0]
        same_sources = u.prior_srcs == {s.kind: s.src for s in gens}
        return same_sources and delta_allowed(u.prior, u.out, n_rows, n_computed, u.compact_fraction), dead

    def _stream(self, sources: List["Source"], kind: str, prior: Optional[PriorOutput], prior_columns: Optional[List[str]] = None
                ) -> Iterator[Tuple["Source", pa.Table, Optional[pa.Table], np.ndarray]]:
        """(source, rows computed, prior rows reused, bool per row: reused) of ``sources`` encoded as ``kind``, window by window,
        in file order (:func:`~xqg_ray.stages.reuse.interleave` puts the two together).

        A window takes rows in order while it holds at most ``window_rows`` rows
        and texts to encode (a row with more texts than that fills a window alone);
        one window of generated queries may span generators, as one encode call did.
        """
        w = self.cfg.window_rows
        window: List[Piece] = []
        n_rows = n_texts = 0
        for source in sources:
            for t, hit, old in matched(source, prior, self.cfg.window_rows, prior_columns):
                per_row = np.where(hit, 0, source.text_counts(t))
                before = np.r_[0, np.cumsum(hit)]  # reused rows before each row
                start = 0
                for i, k in enumerate(per_row.tolist()):
                    if n_rows and (n_rows + 1 > w or n_texts + k > w):
                        if i > start:
                            window.append(Piece(source, t.slice(start, i - start), hit[start:i], _slice(old, before[start], before[i])))
                        yield from self._encode_window(window, kind)
                        window, n_rows, n_texts, start = [], 0, 0, i
                    n_rows += 1
                    n_texts += k
                window.append(Piece(source, t.slice(start), hit[start:], _slice(old, before[start], before[-1])))
        yield from self._encode_window(window, kind)

    def _encode_window(self, window: List["Piece"], kind: str) -> Iterator[Tuple["Source", pa.Table, Optional[pa.Table], np.ndarray]]:
        todo = [p.rows.filter(pa.array(~p.hit)) for p in window]
        inputs = [p.source.inputs(t, self.cfg.passage_template) for p, t in zip(window, todo)]
        texts = [x for xs, _ in inputs for x in xs]
        if kind == "query":
            vecs = self.memo.encode(texts, lambda todo: self.encoder.encode(todo, kind), self.encoder.dim)
        elif self.judged is not None:
            keys = [(i, h) for t in todo for i, h in zip(t["id"].to_pylist(), t["content_hash"].to_pylist())]
            vecs = self.judged.encode(keys, texts, lambda rest: self.encoder.encode(rest, kind), self.encoder.dim)
        else:
            vecs = self.encoder.encode(texts, kind) if texts else np.zeros((0, self.encoder.dim), np.float32)
        start = 0
        for p, t, (xs, langs) in zip(window, todo, inputs):
            v, start = vecs[start : start + len(xs)], start + len(xs)
            if langs is None:
                rows = self._rows(PASSAGE, "", t["id"], t["content_hash"], v, np.ones(t.num_rows, np.int32))
            else:
                sums, c, slots, slot_counts = self._query_sums(langs, v, p.source.width)
                rows = self._rows(p.source.kind, p.source.src, t["id"], t["content_hash"], sums, c, slots, slot_counts)
            yield p.source, rows, p.old, p.hit


class JudgedPassages:
    """E(p) of a partition's passages that a generator's round-trip judge computed and committed
    (``GeneratedEntry.passage_vectors``): the generate stage encoded every passage to rank questions
    against them, with this encoder, so the encode stage takes them instead of encoding again.

    The planner passes them only for the same encoder key and torch threads, and :meth:`read` only
    on the same device: the judge encoded the whole partition in file order in one call, as a
    fresh unit encodes its passages, so the vectors are the same bits (tested), not near ones.
    Held for one unit: a partition's ``n x dim`` float32, as the judge held them.
    """

    def __init__(self, table: pa.Table, dim: int):
        self.row = {(i, h): k for k, (i, h) in enumerate(zip(table["id"].to_pylist(), table["content_hash"].to_pylist()))}
        self.vecs = arrow_to_vectors(table["vector"], dim)
        self.taken = 0

    @classmethod
    def read(cls, storage: Storage, root: str, rec: Optional[Dict[str, Any]], device: str) -> Optional["JudgedPassages"]:
        if rec is None or rec.get("device") != device:
            return None
        t = read_table_verified(storage, root, rec, ["id", "content_hash", "vector"], where="the generated manifest's passage vectors")
        return cls(t, int(t.schema.field("vector").type.list_size))

    def encode(self, keys: List[Tuple[int, str]], texts: List[str], encode: Callable[[List[str]], np.ndarray], dim: int) -> np.ndarray:
        """Vectors of the passages ``keys`` ((id, content hash), texts ``texts``): the judge's where it has
        the passage, ``encode`` (one call) of the rest."""
        out = np.zeros((len(texts), dim), np.float32)
        rows = [self.row.get(k) for k in keys]
        have = [j for j, r in enumerate(rows) if r is not None]
        rest = [j for j, r in enumerate(rows) if r is None]
        if have:
            out[have] = self.vecs[[rows[j] for j in have]]
        if rest:
            out[rest] = encode([texts[j] for j in rest])
        self.taken += len(have)
        return out


class QueryMemo:
    """The vectors of the last ``capacity`` distinct questions a unit encoded, by text.

    A generator's selections (its first draws, kept and passed questions, and any replayed at
    another round-trip threshold) are separate sources of one partition that share most of their
    questions; each is streamed whole before the next, so with one partition's questions in
    memory each distinct question is encoded once (the demo: ~4,000 of 7,830).  Bounded by the
    config like a window (``encoder.window_rows`` vectors, ~25 MB at 384-d); a partition larger
    than that encodes again what it has evicted, as before.
    """

    def __init__(self, capacity: int):
        self.capacity = capacity
        self.vecs: "OrderedDict[str, np.ndarray]" = OrderedDict()

    def clear(self) -> None:
        self.vecs.clear()

    def encode(self, texts: List[str], encode: Callable[[List[str]], np.ndarray], dim: int) -> np.ndarray:
        """Vectors of ``texts`` in order: ``encode`` (one call) runs on the distinct ones not held."""
        if not texts:
            return np.zeros((0, dim), np.float32)
        held = {t: self.vecs[t] for t in dict.fromkeys(texts) if t in self.vecs}
        todo = [t for t in dict.fromkeys(texts) if t not in held]
        new = dict(zip(todo, encode(todo))) if todo else {}
        for t in held:
            self.vecs.move_to_end(t)
        for t, v in new.items():
            self.vecs[t] = v.copy()  # a row, not a view that would keep its whole window alive
            if len(self.vecs) > self.capacity:
                self.vecs.popitem(last=False)
        return np.stack([held[t] if t in held else new[t] for t in texts])


@dataclass
class Piece:
    """Consecutive rows of one source inside one window: which the prior output holds (``hit``, rows ``old``) and which to compute."""

    source: Source
    rows: pa.Table
    hit: np.ndarray
    old: Optional[pa.Table]


def slot_width(queries: pa.ChunkedArray) -> int:
    """The most queries of one language in one row (the slots :func:`slot_positions` numbers); 0 for none."""
    q = queries.combine_chunks() if isinstance(queries, pa.ChunkedArray) else queries
    flat = pc.list_flatten(q)
    if not len(flat):
        return 0
    t = pa.table({"row": pc.list_parent_indices(q), "lang": pc.struct_field(flat, "lang")})
    return int(pc.max(t.group_by(["row", "lang"]).aggregate([([], "count_all")])["count_all"]).as_py())


def _slice(t: Optional[pa.Table], a: int, b: int) -> Optional[pa.Table]:
    return None if t is None else t.slice(int(a), int(b - a))
