"""Search results and per-query evaluations kept as committed units, so a rerun searches only what changed.

One ledger, ``results/``, with two kinds of unit per (query set, system):

- ``search--QSET--SYSTEM``: the merged top-k ``(scores, ids)`` as Parquet,
  keyed by the system's index manifest fingerprint, the query set's sha256,
  k and the metric (:func:`search_key`): the top-k is a function of exactly
  those, so a committed one is that search's answer;
- ``eval--QSET--SYSTEM``: the per-query metrics table and the run files (TREC
  run, XOR-Retrieve predictions) written from that top-k, keyed by the search
  key, the evaluated questions' sha256, the corpus, the system's name (it is
  the run tag) and the metric settings.

A system whose search unit is committed starts no shard actor; one whose
evaluation is committed has its files copied back, byte for byte, without
looking up a passage.  After evaluation the stage publishes a manifest naming
every unit of the run, so units of older versions are deleted (the ledger's
rule for every stage).
"""

from __future__ import annotations

from typing import Any, Dict, List, Optional, Tuple

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from ..config.schema import DEV_QUERY_SET
from ..store.integrity import read_verified, write_committed
from ..store.ledger import Ledger, fingerprint
from .context import PIPELINE_VERSION, Context
from .plan import plan_stage

STAGE = "results"
RESULTS_VERSION = 1  # bump when the unit files' layout changes

TopK = Tuple[np.ndarray, np.ndarray]
# An evaluation unit's files: name -> suffix of its committed copy.
EVAL_FILES = {"per_query": ".parquet", "trec": ".trec", "xor": ".xor.json"}


def search_key(index_manifest: Dict[str, Any], queries_sha256: str, k: int, metric: str) -> str:
    """What a system's merged top-k of a query set depends on: its index version, the query vectors, k, the metric."""
    return fingerprint({"v": PIPELINE_VERSION, "results": RESULTS_VERSION, "index": index_manifest["fingerprint"],
                        "queries": queries_sha256, "k": int(k), "metric": metric})


def topk_bytes(d: np.ndarray, i: np.ndarray) -> bytes:
    """A ``[n, k]`` top-k as Parquet bytes: fixed-size list columns ``scores`` (float32) and ``ids`` (int64)."""
    d, i = np.ascontiguousarray(d, np.float32), np.ascontiguousarray(i, np.int64)
    k = d.shape[1] if d.ndim == 2 else 0
    t = pa.table({"scores": pa.FixedSizeListArray.from_arrays(pa.array(d.reshape(-1), pa.float32()), k),
                  "ids": pa.FixedSizeListArray.from_arrays(pa.array(i.reshape(-1), pa.int64()), k)})
    return _parquet(t)


def topk_from_bytes(data: bytes) -> TopK:
    """:func:`topk_bytes` read back: exactly the arrays written."""
    t = pq.read_table(pa.BufferReader(data))
    n = t.num_rows
    cols = [t[c].combine_chunks() for c in ("scores", "ids")]
    d = cols[0].flatten().to_numpy(zero_copy_only=False).astype(np.float32).reshape(n, -1)
    i = cols[1].flatten().to_numpy(zero_copy_only=False).astype(np.int64).reshape(n, -1)
    return d, i


def _parquet(t: pa.Table) -> bytes:
    sink = pa.BufferOutputStream()
    pq.write_table(t, sink, compression="zstd")
    return sink.getvalue().to_pybytes()


def search_label(qset: str, system: str) -> str:
    return f"search--{qset}--{system}"


def eval_label(qset: str, system: str) -> str:
    return f"eval--{qset}--{system}"


class ResultStore:
    """The ``results`` ledger of one run: what is already searched and evaluated, commits, and the final publish.

    ``pairs``: query set -> system -> the query set's sha256 (the encoded
    vectors' file), for every (query set, system) the run evaluates.
    """

    def __init__(self, ctx: Context, indexes: Dict[str, Dict[str, Any]], pairs: Dict[str, Dict[str, str]]):
        cfg = ctx.cfg
        self.ctx = ctx
        self.ledger = Ledger(ctx.storage, ctx.root, STAGE)
        metric_settings = {"kt": list(cfg.eval.kt), "recall_k": list(cfg.eval.recall_k), "mrr_k": cfg.eval.mrr_k}
        self.keys: Dict[str, str] = {}
        for qset, systems in pairs.items():
            for name, qsha in systems.items():
                sk = search_key(indexes[name], qsha, cfg.search.top_k, cfg.index.metric)
                self.keys[search_label(qset, name)] = sk
                self.keys[eval_label(qset, name)] = fingerprint({
                    "search": sk, "questions": ctx.bench["files"][DEV_QUERY_SET if qset == DEV_QUERY_SET else "queries"]["sha256"], "corpus": ctx.snapshot["corpus_hash"],
                    "system": name, "qset": qset, "metrics": metric_settings})
        self.fp = fingerprint(self.keys)
        plan = plan_stage(self.ledger, self.fp, self.keys, ctx.resume)
        if plan.published is not None:
            self.done = {u["unit"]: u for u in plan.published["units"]}
        else:
            self.done = dict(plan.resumed)
        self.records: Dict[str, Dict[str, Any]] = dict(self.done)

    # -- search ------------------------------------------------------------------
    def searched(self, qset: str, system: str) -> Optional[TopK]:
        """The committed top-k of ``system`` on ``qset``, or None when it must be searched."""
        rec = self.done.get(search_label(qset, system))
        if rec is None:
            return None
        return topk_from_bytes(read_verified(self.ctx.storage, self.ctx.root, rec["topk"], where="the results ledger"))

    def commit_search(self, qset: str, system: str, d: np.ndarray, i: np.ndarray) -> None:
        label = search_label(qset, system)
        key = self.keys[label]
        rec = write_committed(self.ctx.storage, self.ctx.root, self.ledger.data_rel(label, key), topk_bytes(d, i))
        self.records[label] = {"unit": label, "key": key, "topk": rec, "commit": self.ledger.commit_rel(label, key)}
        self.ledger.commit(label, key, {"topk": rec})

    # -- evaluate ----------------------------------------------------------------
    def evaluated(self, qset: str, system: str) -> Optional[Dict[str, Any]]:
        """The committed evaluation (records of ``per_query``, ``trec``, ``xor``) of ``system`` on ``qset``, or None."""
        return self.done.get(eval_label(qset, system))

    def read(self, rec: Dict[str, Any]) -> bytes:
        return read_verified(self.ctx.storage, self.ctx.root, rec, where="the results ledger")

    def commit_eval(self, qset: str, system: str, files: Dict[str, bytes]) -> None:
        """Commit the evaluation's files (name -> bytes: ``per_query``, ``trec``, ``xor``)."""
        label = eval_label(qset, system)
        key = self.keys[label]
        recs = {name: write_committed(self.ctx.storage, self.ctx.root, self.ledger.data_rel(f"{label}--{name}", key, EVAL_FILES[name]), data)
                for name, data in files.items()}
        self.records[label] = {"unit": label, "key": key, **recs, "commit": self.ledger.commit_rel(label, key)}
        self.ledger.commit(label, key, recs)

    def publish(self) -> Dict[str, Any]:
        """The manifest naming every unit of this run (older units are then deleted)."""
        units: List[Dict[str, Any]] = [
            {**{k: v for k, v in self.records[label].items() if k not in ("stage", "created", "seal", "mode")},
             "commit": self.ledger.commit_rel(label, self.keys[label])}
            for label in self.keys if label in self.records]
        return self.ledger.publish(self.fp, {"units": units})


__all__ = ["EVAL_FILES", "ResultStore", "eval_label", "search_key", "search_label", "topk_bytes", "topk_from_bytes"]
