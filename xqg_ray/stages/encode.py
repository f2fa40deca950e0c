"""Encode stage, per encoder: E(p) per passage and per-slot sums of E(q) per (passage, generator); and the test questions.

One encoder actor pool serves both ledgers in one Ray Data pass, so the model
loads once per actor: ``embeddings`` (a unit per corpus partition, keyed by the
partition digest and the generators' unit keys, reused per passage by
(id, content_hash) and generator fingerprint) and ``queries`` (one unit per
query set -- the clean test questions and each configured perturbation of
them -- keyed by the encoder, the questions' content and the perturbation,
never by the corpus).  Every encoder of the run has its own pair of ledgers.

A partition streams: its inputs are read batch by batch (sha256 checked by
streaming), rows are cut into windows of at most ``encoder.window_rows`` rows
and texts, each window is encoded and its rows written as the next row group
of the output, so an actor holds a few windows, never a partition.  The output
is the same whatever the window: rows sorted by (kind, id), each generator's
slot lists as wide as the partition's widest row needs (a pass over the
generated table finds it), float64 query sums per passage.  A system of a generator's
kept questions adds a source of its own (``GENERATOR@kept``, read from the stored draws:
:mod:`xqg_ray.stages.sources`); without one, the units and keys are as before filters.
A small update of a partition writes only its computed rows, as a delta segment with
tombstones beside the earlier segments (:mod:`xqg_ray.store.segments`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, Iterator, List, Optional, Tuple

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ..arrow_utils import vectors_to_arrow
from ..retrieval.augment import check_counts, slot_positions, slot_sums
from ..config import EncoderConfig, PerturbationConfig, StorageConfig, section_dict
from ..config.schema import DEV_QUERY_SET
from ..store.integrity import CommittedParquetWriter, read_table_verified, write_table_committed
from ..store.ledger import Ledger, file_record, fingerprint, is_resumed, row_counts
from ..store.segments import append_segment, delta_allowed, live_parquet, segment_source
from .plan import Plan, plan_stage
from .sources import GEN_COLUMNS, PASSAGE_COLUMNS, Source, query_sources, select_entry
from .reuse import PriorOutput, interleave, matched
from .records import (
    EmbeddingsEntry,
    EmbeddingsManifest,
    EncodePartitionUnit,
    EncodeQueriesUnit,
    QueriesManifest,
    QuerySetEntry,
    Record,
    encode_unit,
    entries,
)
from ..runtime.units import UnitRunner, iter_progress, run_units
from ..schemas import CLEAN, PASSAGE, embeddings_schema, gen_kind, query_vectors_schema
from ..store.storage import Storage
from ..config.systems import DEFAULT_ENCODER, encoder_cfg
from .context import PIPELINE_VERSION, Context, partition_label

EMB, QUERIES = "embeddings", "queries"


def ledger_names(enc: str) -> Tuple[str, str]:
    """(embeddings, queries) stage directories of encoder ``enc``; the default keeps the short names."""
    return (EMB, QUERIES) if enc == DEFAULT_ENCODER else (f"encoders/{enc}/{EMB}", f"encoders/{enc}/{QUERIES}")


def encoder_key(cfg: EncoderConfig) -> str:
    """Everything an embedding depends on besides its text: the encoder's settings (a trained
    encoder's model is pinned to ``trained:NAME@KEY`` by the train stage, so its artifact key too)."""
    return fingerprint({"v": PIPELINE_VERSION, "encoder": section_dict(cfg)})


def encoder_fingerprint(ctx: Context, enc: str = DEFAULT_ENCODER) -> str:
    return encoder_key(encoder_cfg(ctx.cfg, enc))


def query_set_units(ctx: Context, efp: str, qrec: Dict[str, Any]) -> Dict[str, Dict[str, Any]]:
    """name -> (key, perturbation) of every query set: the clean questions and each perturbation."""
    sets = {CLEAN: {"key": fingerprint({"enc": efp, "queries": qrec["sha256"]}), "perturbation": None}}
    for p in ctx.cfg.perturbations:
        spec = section_dict(p)
        sets[p.name] = {"key": fingerprint({"enc": efp, "queries": qrec["sha256"], "perturbation": spec}), "perturbation": spec}
    dev = ctx.bench["files"].get(DEV_QUERY_SET)
    if dev is not None:  # the dev questions (benchmark.dev_fraction): their own file, never perturbed
        sets[DEV_QUERY_SET] = {"key": fingerprint({"enc": efp, "queries": dev["sha256"]}), "perturbation": None, "queries": dev}
    return sets


def passage_units(led: Ledger, snapshot: Dict[str, Any], efp: str, gens: Dict[str, Dict[str, Any]]) -> Dict[str, EncodePartitionUnit]:
    """label -> the embeddings unit of every partition of ``snapshot`` (no prior version), keyed as the stage keys it.

    ``efp``: :func:`encoder_fingerprint`; ``gens``: query source name -> its manifest
    (:func:`~xqg_ray.stages.sources.query_sources`; none: passages only).
    """
    gen_units = {n: {u["partition"]: u for u in gm["units"]} for n, gm in gens.items()}
    out: Dict[str, EncodePartitionUnit] = {}
    for part in snapshot["partitions"]:
        p, label = part["partition"], partition_label(part["partition"])
        gin = {n: {"src": gm["gen_fp"], "key": gen_units[n][p]["key"], **segment_source(gen_units[n][p]), **select_entry(gm)} for n, gm in sorted(gens.items())}
        key = fingerprint({"enc": efp, "digest": part["digest"], "gens": {n: (g["src"], g["key"]) for n, g in gin.items()}})
        out[label] = EncodePartitionUnit(stage=led.stage, partition=p, unit=label, key=key, corpus=file_record(part), gens=gin,
                                         prior=None, out=led.data_rel(label, key))
    return out


@dataclass
class EncodePlan:
    """What the encode stage of one encoder still has to do, for both of its ledgers."""

    fp: str
    qfp: str
    emb: Plan
    queries: Plan
    qsets: Dict[str, Dict[str, Any]]
    units: List[Record]
    # Query source name -> its manifest: the generators' and the kept selections some system reads.
    sources: Dict[str, Dict[str, Any]]


def encode_units(ctx: Context, gens: Dict[str, Dict[str, Any]], enc: str = DEFAULT_ENCODER) -> EncodePlan:
    """The plans of both ledgers of encoder ``enc`` and the unit plans still to run (partitions, then query sets).

    The public entry point of the stage's planning (``bench/encode.py`` uses it); ``gens``:
    generator name -> its published manifest.
    """
    gens = query_sources(ctx.cfg, gens)
    efp = encoder_fingerprint(ctx, enc)
    emb_stage, q_stage = ledger_names(enc)
    led, qled = Ledger(ctx.storage, ctx.root, emb_stage), Ledger(ctx.storage, ctx.root, q_stage)
    fp = fingerprint({"enc": efp, "corpus": ctx.snapshot["corpus_hash"], "gens": {n: m["fingerprint"] for n, m in sorted(gens.items())}})
    qrec = ctx.bench["files"]["queries"]
    qsets = query_set_units(ctx, efp, qrec)
    qfp = fingerprint({"enc": efp, "queries": qrec["sha256"], "sets": {n: q["key"] for n, q in qsets.items()}})
    todo_units = passage_units(led, ctx.snapshot, efp, gens)
    keys = {label: u.key for label, u in todo_units.items()}

    def prior_entries(m: Dict[str, Any]) -> Dict[str, Dict[str, Any]]:
        return {ctx.partition_label(u["partition"]): u for u in m["units"]} if m.get("enc_fp") == efp else {}

    plan = plan_stage(led, fp, keys, ctx.resume, prior_entries)
    qplan = plan_stage(qled, qfp, {_qlabel(n): q["key"] for n, q in qsets.items()}, ctx.resume)
    units: List[Record] = []
    if plan.published is None:
        # The sources the prior version encoded: a delta segment is appended only over the same ones.
        prior_srcs = {gen_kind(n): f for n, f in (plan.current or {}).get("generators", {}).items()}
        for label in plan.todo:
            u = todo_units[label]
            u.prior = segment_source(plan.prior[label]) if label in plan.prior else None
            u.prior_srcs = prior_srcs if label in plan.prior else None
            u.compact_fraction = ctx.cfg.corpus.compact_fraction
            units.append(u)
    if qplan.published is None:
        by_label = {_qlabel(n): n for n in qsets}
        units += [EncodeQueriesUnit(stage=q_stage, unit=label, set=by_label[label], key=qsets[by_label[label]]["key"], queries=qsets[by_label[label]].get("queries", qrec),
                                    perturbation=qsets[by_label[label]]["perturbation"], out=qled.data_rel(label, qsets[by_label[label]]["key"]))
                  for label in qplan.todo]
    return EncodePlan(fp=fp, qfp=qfp, emb=plan, queries=qplan, qsets=qsets, units=units, sources=gens)


def encode_actor_args(ctx: Context, enc: str = DEFAULT_ENCODER) -> Dict[str, Any]:
    """The constructor arguments of :class:`EncodePartition` for encoder ``enc``."""
    return {"root": ctx.root, "storage_cfg": ctx.cfg.storage, "cfg": encoder_cfg(ctx.cfg, enc), "threads": ctx.pool("encode").torch_threads}


def run_encode(ctx: Context, gens: Dict[str, Dict[str, Any]], enc: str = DEFAULT_ENCODER) -> Tuple[Dict[str, Any], Dict[str, Any]]:
    """(embeddings manifest, queries manifest) of encoder ``enc`` for the snapshot, the generators' outputs and the query sets."""
    efp = encoder_fingerprint(ctx, enc)
    emb_stage, q_stage = ledger_names(enc)
    qrec = ctx.bench["files"]["queries"]
    with ctx.timer.stage(emb_stage) as s:
        ep = encode_units(ctx, gens, enc)
        gens = ep.sources
        m, qm, units = ep.emb.published, ep.queries.published, ep.units
        records: Dict[str, Dict[str, Any]] = dict(ep.emb.resumed)
        qrecords: Dict[str, Dict[str, Any]] = {r["set"]: r for r in ep.queries.resumed.values()}
        on_done = iter_progress(len(units), emb_stage, ctx.timer.event)
        for summary in run_units([u.to_json() for u in units], EncodePartition, encode_actor_args(ctx, enc), ctx.pool("encode"), on_done):
            if "set" in summary:
                qrecords[summary["set"]] = summary
            else:
                records[summary["unit"]] = summary
        if m is None:
            ordered = [records[ctx.partition_label(p["partition"])] for p in ctx.snapshot["partitions"]]
            dims = {r["dim"] for r in ordered if r.get("dim")}
            n_resumed = sum(1 for r in ordered if is_resumed(r))
            m = Ledger(ctx.storage, ctx.root, emb_stage).publish(ep.fp, EmbeddingsManifest(
                enc_fp=efp, encoder_name=enc, encoder=section_dict(encoder_cfg(ctx.cfg, enc)), snapshot=ctx.snapshot["snapshot"],
                passages=ctx.snapshot.get("changes", {}), rows=row_counts(ordered),
                computed_by_kind=_sum_dicts([r["computed_by_kind"] for r in ordered if not is_resumed(r)]),
                unit_counts={"total": len(ordered), "computed": len(ordered) - n_resumed, "resumed": n_resumed},
                dim=dims.pop() if dims else None, counts={n: _merge_counts([r["counts"][n] for r in ordered]) for n in gens},
                generators={n: gm["gen_fp"] for n, gm in gens.items()}, units=entries(EmbeddingsEntry, ordered),
            ).to_json())
        computed_q = sum(r["rows"] for r in qrecords.values() if not is_resumed(r))
        if qm is None:
            qled = Ledger(ctx.storage, ctx.root, q_stage)
            sets = {n: QuerySetEntry.from_json({**r, "perturbation": ep.qsets[n]["perturbation"], "commit": qled.commit_rel(_qlabel(n), ep.qsets[n]["key"])})
                    for n, r in qrecords.items()}
            qm = qled.publish(ep.qfp, QueriesManifest(enc_fp=efp, encoder_name=enc, queries_sha256=qrec["sha256"], computed=computed_q, sets=sets).to_json())
        s["rows"] = m["rows"]["computed"]
        s["reused"] = not any(isinstance(u, EncodePartitionUnit) for u in units)
    # The test questions: their own ledger, so metrics.json says whether they were encoded again.
    ctx.timer.record(q_stage, rows=computed_q, seconds=ctx.timer.stages[emb_stage]["seconds"], reused=computed_q == 0)
    return m, qm


def _qlabel(name: str) -> str:
    """The unit label of a query set: ``questions`` (clean, as before) or ``questions-NAME``."""
    return "questions" if name == CLEAN else f"questions-{name}"


def _sum_dicts(ds: List[Dict[str, int]]) -> Dict[str, int]:
    out: Dict[str, int] = {}
    for d in ds:
        for k, v in d.items():
            out[k] = out.get(k, 0) + int(v)
    return out


def _merge_counts(parts: List[Dict[str, int]]) -> Dict[str, int]:
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
                   computed_by_kind=computed, reused_by_kind=reused, counts={n: _merge_counts(summaries[n]) for n in names})
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
