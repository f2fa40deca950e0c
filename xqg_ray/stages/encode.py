"""Encode stage, per encoder: E(p) per passage and per-slot sums of E(q) per (passage, generator); and the test questions.

One encoder actor pool serves both ledgers in one Ray Data pass, so the model
loads once per actor: ``embeddings`` (a unit per corpus partition, keyed by the
partition digest and the generators' unit keys, reused per passage by
(id, content_hash) and generator fingerprint) and ``queries`` (one unit per
query set -- the clean test questions and each configured perturbation of
them -- keyed by the encoder, the questions' content and the perturbation,
never by the corpus).  Every encoder of the run has its own pair of ledgers.

The actor that runs the units is :mod:`.encode_actor`: a partition streams in
windows of at most ``encoder.window_rows`` rows, so an actor never holds a
partition.  The output is the same whatever the window: rows sorted by (kind, id), each generator's
slot lists as wide as the partition's widest row needs (a pass over the
generated table finds it), float64 query sums per passage.  A system of a generator's
kept questions adds a source of its own (``GENERATOR@kept``, read from the stored draws:
:mod:`xqg_ray.stages.sources`); without one, the units and keys are as before filters.
A small update of a partition writes only its computed rows, as a delta segment with
tombstones beside the earlier segments (:mod:`xqg_ray.store.segments`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, List, Tuple

from ..config import section_dict
from ..config.schema import DEV_QUERY_SET
from ..store.ledger import Ledger, file_record, fingerprint, is_resumed, row_counts
from ..store.segments import segment_source
from .plan import Plan, plan_stage
from .sources import query_sources, select_entry
from .records import (
    EmbeddingsEntry,
    EmbeddingsManifest,
    EncodePartitionUnit,
    EncodeQueriesUnit,
    QueriesManifest,
    QuerySetEntry,
    Record,
    entries,
)
from ..runtime.units import iter_progress, run_units
from ..schemas import CLEAN, gen_kind
from ..config.systems import DEFAULT_ENCODER, encoder_cfg
from .context import Context, encoder_key, partition_label
from .encode_actor import EncodePartition, merge_counts

EMB, QUERIES = "embeddings", "queries"


def ledger_names(enc: str) -> Tuple[str, str]:
    """(embeddings, queries) stage directories of encoder ``enc``; the default keeps the short names."""
    return (EMB, QUERIES) if enc == DEFAULT_ENCODER else (f"encoders/{enc}/{EMB}", f"encoders/{enc}/{QUERIES}")


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


def judged_passages(gens: Dict[str, Dict[str, Any]], efp: str, threads: int) -> Dict[int, Dict[str, Any]]:
    """partition -> the E(p) a generator's round-trip judge committed for it (the first generator's, by
    name) with this encoder (key ``efp``) and ``threads`` torch threads: the vectors an encode unit
    would compute (``gens``: generator name -> its published manifest)."""
    out: Dict[int, Dict[str, Any]] = {}
    for name in sorted(gens):
        for u in gens[name]["units"]:
            pv = u.get("passage_vectors")
            if pv and pv["encoder"] == efp and pv["threads"] == threads:
                out.setdefault(u["partition"], pv)
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
    efp = encoder_fingerprint(ctx, enc)
    judged = judged_passages(gens, efp, ctx.pool("encode").torch_threads)
    gens = query_sources(ctx.cfg, gens)
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
            u.passage_vectors = judged.get(u.partition)
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
                dim=dims.pop() if dims else None, counts={n: merge_counts([r["counts"][n] for r in ordered]) for n in gens},
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
