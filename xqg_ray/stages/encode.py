"""Encode stage, per encoder: E(p) per passage and per-slot sums of E(q) per (passage, generator); and the test questions.

One encoder actor pool serves both ledgers in one Ray Data pass, so the model
loads once per actor: ``embeddings`` (a unit per corpus partition, keyed by the
partition digest and the generators' unit keys, reused per passage by
(id, content_hash) and generator fingerprint) and ``queries`` (one unit per
query set -- the clean test questions and each configured perturbation of
them -- keyed by the encoder, the questions' content and the perturbation,
never by the corpus).  Every encoder of the run has its own pair of ledgers.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Tuple

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ..arrow_utils import vectors_to_arrow
from ..retrieval.augment import check_counts, slot_positions, slot_sums
from ..config import EncoderConfig, PerturbationConfig, StorageConfig, section_dict
from ..store.integrity import read_table_verified, write_table_committed
from ..store.ledger import Ledger, file_record, fingerprint, is_resumed, row_counts
from .plan import Plan, plan_stage
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
from .reuse import split_reuse
from ..schemas import CLEAN, PASSAGE, embeddings_schema, gen_kind, query_vectors_schema
from ..store.storage import Storage
from ..config.systems import DEFAULT_ENCODER, encoder_cfg
from .context import PIPELINE_VERSION, Context, partition_label

EMB, QUERIES = "embeddings", "queries"


def ledger_names(enc: str) -> Tuple[str, str]:
    """(embeddings, queries) stage directories of encoder ``enc``; the default keeps the short names."""
    return (EMB, QUERIES) if enc == DEFAULT_ENCODER else (f"encoders/{enc}/{EMB}", f"encoders/{enc}/{QUERIES}")


def encoder_key(cfg: EncoderConfig) -> str:
    """Everything an embedding depends on besides its text: the encoder's settings."""
    return fingerprint({"v": PIPELINE_VERSION, "encoder": section_dict(cfg)})


def encoder_fingerprint(ctx: Context, enc: str = DEFAULT_ENCODER) -> str:
    return encoder_key(encoder_cfg(ctx.cfg, enc))


def query_set_units(ctx: Context, efp: str, qrec: Dict[str, Any]) -> Dict[str, Dict[str, Any]]:
    """name -> (key, perturbation) of every query set: the clean questions and each perturbation."""
    sets = {CLEAN: {"key": fingerprint({"enc": efp, "queries": qrec["sha256"]}), "perturbation": None}}
    for p in ctx.cfg.perturbations:
        spec = section_dict(p)
        sets[p.name] = {"key": fingerprint({"enc": efp, "queries": qrec["sha256"], "perturbation": spec}), "perturbation": spec}
    return sets


def passage_units(led: Ledger, snapshot: Dict[str, Any], efp: str, gens: Dict[str, Dict[str, Any]]) -> Dict[str, EncodePartitionUnit]:
    """label -> the embeddings unit of every partition of ``snapshot`` (no prior version), keyed as the stage keys it.

    ``efp``: :func:`encoder_fingerprint`; ``gens``: generator name -> its published manifest (none: passages only).
    """
    gen_units = {n: {u["partition"]: u for u in gm["units"]} for n, gm in gens.items()}
    out: Dict[str, EncodePartitionUnit] = {}
    for part in snapshot["partitions"]:
        p, label = part["partition"], partition_label(part["partition"])
        gin = {n: {"src": gm["gen_fp"], "key": gen_units[n][p]["key"], **file_record(gen_units[n][p])} for n, gm in sorted(gens.items())}
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


def encode_units(ctx: Context, gens: Dict[str, Dict[str, Any]], enc: str = DEFAULT_ENCODER) -> EncodePlan:
    """The plans of both ledgers of encoder ``enc`` and the unit plans still to run (partitions, then query sets).

    The public entry point of the stage's planning (``bench/encode.py`` uses it).
    """
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
        for label in plan.todo:
            u = todo_units[label]
            u.prior = file_record(plan.prior[label]) if label in plan.prior else None
            units.append(u)
    if qplan.published is None:
        by_label = {_qlabel(n): n for n in qsets}
        units += [EncodeQueriesUnit(stage=q_stage, unit=label, set=by_label[label], key=qsets[by_label[label]]["key"], queries=qrec,
                                    perturbation=qsets[by_label[label]]["perturbation"], out=qled.data_rel(label, qsets[by_label[label]]["key"]))
                  for label in qplan.todo]
    return EncodePlan(fp=fp, qfp=qfp, emb=plan, queries=qplan, qsets=qsets, units=units)


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

        self.root, self.storage, self.cfg = root, Storage(storage_cfg), cfg
        self.encoder = make_encoder(cfg, threads)
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

    def _query_sums(self, groups: List[List[Dict[str, str]]], vecs: np.ndarray) -> Tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """(total sums, counts, per-slot sums, per-slot counts) of each passage's queries, encoded as ``vecs`` (flattened)."""
        group, slot = slot_positions([[q["lang"] for q in g] for g in groups])
        sums, counts = slot_sums(vecs, group, slot, len(groups))
        if sums.shape[2] == 0:
            sums = np.zeros((len(groups), sums.shape[1], self.encoder.dim))
        # float64 sums: the same total regardless of how queries were batched.
        return sums.sum(axis=1).astype(np.float32), counts.sum(axis=1), sums, counts

    def _partition(self, u: EncodePartitionUnit) -> Dict[str, Any]:
        from ..models.encoder import format_passage

        corpus = read_table_verified(self.storage, self.root, u.corpus, ["id", "title", "text", "content_hash"], where="the corpus snapshot")
        prior = read_table_verified(self.storage, self.root, u.prior, where="the previous embeddings manifest") if u.prior else None
        pieces, computed, reused, counts = [], {}, {}, {}

        def prior_of(kind: str, src: str) -> Optional[pa.Table]:
            if prior is None:
                return None
            return prior.filter(pc.and_(pc.equal(prior["kind"], kind), pc.equal(prior["src"], src)))

        old, todo = split_reuse(corpus, prior_of(PASSAGE, ""))
        tmpl = self.cfg.passage_template
        vecs = self.encoder.encode([format_passage(tmpl, t, x) for t, x in zip(todo["title"].to_pylist(), todo["text"].to_pylist())], "passage")
        pieces += [old, self._rows(PASSAGE, "", todo["id"], todo["content_hash"], vecs, np.ones(todo.num_rows, np.int32))]
        computed[PASSAGE], reused[PASSAGE] = todo.num_rows, 0 if old is None else old.num_rows
        work = []
        for name, g in u.gens.items():
            gt = read_table_verified(self.storage, self.root, g, ["id", "content_hash", "queries"], where=f"the generated/{name} manifest")
            old, todo = split_reuse(gt, prior_of(gen_kind(name), g["src"]))
            work.append((name, g, old, todo, todo["queries"].to_pylist()))
        # Every generator's queries in one window: the encoder buckets them by length together.
        flat = [q["text"] for *_, groups in work for qs in groups for q in qs]
        all_vecs = self.encoder.encode(flat, "query") if flat else np.zeros((0, self.encoder.dim), np.float32)
        start = 0
        for name, g, old, todo, groups in work:
            kind = gen_kind(name)
            n_q = sum(len(qs) for qs in groups)
            sums, c, slots, slot_counts = self._query_sums(groups, all_vecs[start : start + n_q])
            start += n_q
            pieces += [old, self._rows(kind, g["src"], todo["id"], todo["content_hash"], sums, c, slots, slot_counts)]
            computed[kind], reused[kind] = todo.num_rows, 0 if old is None else old.num_rows
            all_counts = np.concatenate([np.asarray(c, np.int64), np.zeros(0, np.int64) if old is None else old["count"].to_numpy().astype(np.int64)])
            counts[name] = check_counts(all_counts)
        out = pa.concat_tables([p for p in pieces if p is not None]).sort_by([("kind", "ascending"), ("id", "ascending")])
        rec = write_table_committed(self.storage, self.root, u.out, out)
        rec.update(partition=u.partition, computed=sum(computed.values()), reused=sum(reused.values()),
                   computed_by_kind=computed, reused_by_kind=reused, counts=counts)
        return rec
