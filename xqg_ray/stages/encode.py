"""Encode stage: E(p) per passage and sum E(q) per (passage, generator), per partition; and the test questions.

One encoder actor pool serves both ledgers in one Ray Data pass, so the model
loads once per actor: ``embeddings`` (a unit per corpus partition, keyed by the
partition digest and the generators' unit keys, reused per passage by
(id, content_hash) and generator fingerprint) and ``queries`` (one unit keyed by
the encoder and the test questions' content only, never by the corpus).
"""

from __future__ import annotations

from typing import Any, Dict, List, Optional, Tuple

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ..arrow_utils import vectors_to_arrow
from ..augment import check_counts
from ..config import EncoderConfig, StorageConfig, section_dict
from ..integrity import read_table_verified, write_table_committed
from ..ledger import Ledger, file_record, fingerprint, row_counts
from ..raytools import UnitRunner, iter_progress, run_units
from ..reuse import split_reuse
from ..schemas import PASSAGE, embeddings_schema, gen_kind, query_vectors_schema
from ..storage import Storage
from .context import PIPELINE_VERSION, Context

EMB, QUERIES = "embeddings", "queries"


def encoder_fingerprint(ctx: Context) -> str:
    return fingerprint({"v": PIPELINE_VERSION, "encoder": section_dict(ctx.cfg.encoder)})


def run_encode(ctx: Context, gens: Dict[str, Dict[str, Any]]) -> Tuple[Dict[str, Any], Dict[str, Any]]:
    """(embeddings manifest, queries manifest) for the snapshot, the generators' outputs and the test questions."""
    efp = encoder_fingerprint(ctx)
    led, qled = Ledger(ctx.storage, ctx.root, EMB), Ledger(ctx.storage, ctx.root, QUERIES)
    fp = fingerprint({"enc": efp, "corpus": ctx.snapshot["corpus_hash"], "gens": {n: m["fingerprint"] for n, m in sorted(gens.items())}})
    qrec = ctx.bench["files"]["queries"]
    qfp = fingerprint({"enc": efp, "queries": qrec["sha256"]})
    with ctx.timer.stage(EMB) as s:
        m = led.published(fp) if ctx.resume else None
        qm = qled.published(qfp) if ctx.resume else None
        units: List[Dict[str, Any]] = []
        records: Dict[int, Dict[str, Any]] = {}
        if m is None:
            prior = led.current()
            prior_units = {u["partition"]: u for u in prior["units"]} if prior and prior.get("enc_fp") == efp else {}
            gen_units = {n: {u["partition"]: u for u in gm["units"]} for n, gm in gens.items()}
            for part in ctx.snapshot["partitions"]:
                p, label = part["partition"], ctx.partition_label(part["partition"])
                gin = {n: {"src": gm["gen_fp"], "key": gen_units[n][p]["key"], **file_record(gen_units[n][p])} for n, gm in sorted(gens.items())}
                key = fingerprint({"enc": efp, "digest": part["digest"], "gens": {n: (g["src"], g["key"]) for n, g in gin.items()}})
                rec = led.committed(label, key) if ctx.resume else None
                if rec is not None:
                    records[p] = {**rec, "resumed": True}
                    continue
                pu = prior_units.get(p)
                units.append({"kind": "partition", "stage": EMB, "partition": p, "unit": label, "key": key, "corpus": file_record(part),
                              "gens": gin, "prior": file_record(pu) if pu else None, "out": led.data_rel(label, key)})
        q_done = qm is not None or (ctx.resume and qled.committed("questions", qfp) is not None)
        if not q_done:
            units.append({"kind": "queries", "stage": QUERIES, "unit": "questions", "key": qfp, "queries": qrec, "out": qled.data_rel("questions", qfp)})
        ctor = {"root": ctx.root, "storage_cfg": ctx.cfg.storage, "cfg": ctx.cfg.encoder, "threads": ctx.pool("encode").torch_threads}
        qsummary: Optional[Dict[str, Any]] = None
        for summary in run_units(units, EncodePartition, ctor, ctx.pool("encode"), iter_progress(len(units), EMB, ctx.timer.event)):
            if summary["unit"] == "questions":
                qsummary = summary
            else:
                records[summary["partition"]] = summary
        if m is None:
            ordered = [records[p["partition"]] for p in ctx.snapshot["partitions"]]
            dims = {r["dim"] for r in ordered if r.get("dim")}
            counts = {n: _merge_counts([r["counts"][n] for r in ordered]) for n in gens}
            m = led.publish(fp, {
                "enc_fp": efp,
                "encoder": section_dict(ctx.cfg.encoder),
                "snapshot": ctx.snapshot["snapshot"],
                "passages": ctx.snapshot.get("changes", {}),
                "rows": row_counts(ordered),
                "computed_by_kind": _sum_dicts([r["computed_by_kind"] for r in ordered if not r.get("resumed")]),
                "unit_counts": {"total": len(ordered), "computed": len(ordered) - sum(1 for r in ordered if r.get("resumed")), "resumed": sum(1 for r in ordered if r.get("resumed"))},
                "dim": dims.pop() if dims else None,
                "counts": counts,
                "generators": {n: gm["gen_fp"] for n, gm in gens.items()},
                "units": [{k: r[k] for k in ("partition", "key", "file", "sha256", "bytes", "rows", "computed", "reused", "commit") if k in r} for r in ordered],
            })
        if qm is None:
            qrec_done = qsummary or {**qled.committed("questions", qfp), "resumed": True}
            qm = qled.publish(qfp, {"enc_fp": efp, "queries_sha256": qrec["sha256"], "rows": qrec_done["rows"],
                                    "computed": 0 if qrec_done.get("resumed") else qrec_done["rows"], "dim": qrec_done["dim"],
                                    "file": qrec_done["file"], "sha256": qrec_done["sha256"], "bytes": qrec_done["bytes"], "commit": qled.commit_rel("questions", qfp)})
        s["rows"] = m["rows"]["computed"]
        s["reused"] = not any(u["kind"] == "partition" for u in units)
    # The test questions: their own ledger, so metrics.json says whether they were encoded again.
    ctx.timer.record(QUERIES, rows=0 if qsummary is None else qsummary["rows"], seconds=ctx.timer.stages[EMB]["seconds"], reused=qsummary is None)
    return m, qm


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
        from ..models.encoder import Encoder

        self.root, self.storage, self.cfg = root, Storage(storage_cfg), cfg
        self.encoder = Encoder(cfg, threads)
        self.schema = embeddings_schema(self.encoder.dim)

    def run_unit(self, u: Dict[str, Any]) -> Dict[str, Any]:
        led = Ledger(self.storage, self.root, u["stage"])
        record = self._queries(u) if u["kind"] == "queries" else self._partition(u)
        record.update(unit=u["unit"], dim=self.encoder.dim)
        led.commit(u["unit"], u["key"], record)
        return {**record, "key": u["key"], "commit": led.commit_rel(u["unit"], u["key"])}

    def _queries(self, u: Dict[str, Any]) -> Dict[str, Any]:
        q = read_table_verified(self.storage, self.root, u["queries"], ["qid", "lang", "text"], where="the benchmark manifest")
        vecs = self.encoder.encode(q["text"].to_pylist(), "query")
        t = pa.table({"qid": q["qid"], "lang": q["lang"], "vector": vectors_to_arrow(vecs)}, schema=query_vectors_schema(self.encoder.dim))
        return write_table_committed(self.storage, self.root, u["out"], t)

    def _rows(self, kind: str, src: str, ids: pa.Array, hashes: pa.Array, vecs: np.ndarray, counts: np.ndarray) -> pa.Table:
        n = len(ids)
        return pa.table({"kind": pa.array([kind] * n, pa.string()), "src": pa.array([src] * n, pa.string()), "id": ids, "content_hash": hashes,
                         "vector": vectors_to_arrow(vecs.reshape(n, self.encoder.dim)), "count": pa.array(counts, pa.int32())}, schema=self.schema)

    def _partition(self, u: Dict[str, Any]) -> Dict[str, Any]:
        from ..models.encoder import encode_sum, format_passage

        corpus = read_table_verified(self.storage, self.root, u["corpus"], ["id", "title", "text", "content_hash"], where="the corpus snapshot")
        prior = read_table_verified(self.storage, self.root, u["prior"], where="the previous embeddings manifest") if u["prior"] else None
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
        for name, g in u["gens"].items():
            kind = gen_kind(name)
            gt = read_table_verified(self.storage, self.root, g, ["id", "content_hash", "queries"], where=f"the generated/{name} manifest")
            old, todo = split_reuse(gt, prior_of(kind, g["src"]))
            sums, c = encode_sum(self.encoder, [[q["text"] for q in qs] for qs in todo["queries"].to_pylist()], "query")
            pieces += [old, self._rows(kind, g["src"], todo["id"], todo["content_hash"], sums, c)]
            computed[kind], reused[kind] = todo.num_rows, 0 if old is None else old.num_rows
            all_counts = np.concatenate([np.asarray(c, np.int64), np.zeros(0, np.int64) if old is None else old["count"].to_numpy().astype(np.int64)])
            counts[name] = check_counts(all_counts)
        out = pa.concat_tables([p for p in pieces if p is not None]).sort_by([("kind", "ascending"), ("id", "ascending")])
        rec = write_table_committed(self.storage, self.root, u["out"], out)
        rec.update(partition=u["partition"], computed=sum(computed.values()), reused=sum(reused.values()),
                   computed_by_kind=computed, reused_by_kind=reused, counts=counts)
        return rec
