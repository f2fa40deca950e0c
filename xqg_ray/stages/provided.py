"""Provided queries (query logs, held-out human questions) joined onto corpus partitions.

One policy lives here: a provided query that is an evaluated question (same
qid, or same language and text) would leak the answer into the index, so it is
an error; rows for unknown docids or with empty text are set aside with a reason.
"""

from __future__ import annotations

from typing import Any, Dict, Tuple

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ..config import ConfigError
from ..ids import passage_ids
from ..store.integrity import read_table_verified, sha256_bytes
from ..schemas import GENERATED_SCHEMA, QUERY_LIST_TYPE, SET_ASIDE_SCHEMA
from ..store.storage import Storage

BENCHMARK_PROVIDED = "benchmark:provided"


def provided_source(ctx, name: str) -> Dict[str, Any]:
    """Where generator ``name``'s table is and the sha256 of its content."""
    path = ctx.cfg.generators[name].path
    if path == BENCHMARK_PROVIDED:
        rec = ctx.bench.get("files", {}).get("provided")
        if rec is None:
            raise ConfigError(f"generators.{name}.path: the benchmark has no held-out questions (set benchmark.heldout_fraction > 0)")
        return {"rec": rec, "sha256": rec["sha256"]}
    if not ctx.storage.exists(path):
        raise ConfigError(f"generators.{name}.path: {path} does not exist")
    files = ctx.storage.list_files(path) if ctx.storage.is_dir(path) else [path]
    return {"uri": path, "sha256": sha256_bytes("".join(sha256_bytes(ctx.storage.read_bytes(f)) for f in files).encode())}


class ProvidedQueries:
    """The provided table of one generator, checked once and split by partition (held by an actor)."""

    def __init__(self, storage: Storage, root: str, name: str, source: Dict[str, Any], evaluated: Dict[str, Any], num_partitions: int):
        if "rec" in source:
            table = read_table_verified(storage, root, source["rec"], where="the benchmark manifest")
        else:
            table = storage.read_any_table(source["uri"])
        missing = {"docid", "lang", "text"} - set(table.column_names)
        if missing:
            raise ConfigError(f"generators.{name}.path: missing columns {sorted(missing)}")
        _check_not_evaluated(name, table, evaluated)
        self.num_partitions = num_partitions
        self.table = pa.table(
            {
                "line": pa.array(np.arange(1, table.num_rows + 1), pa.int64()),
                "docid": table["docid"].cast(pa.string()),
                "id": pa.array(passage_ids(table["docid"].cast(pa.string()).to_pylist()), pa.int64()),
                "lang": table["lang"].cast(pa.string()),
                "text": table["text"].cast(pa.string()),
            }
        )
        self.partition = pa.array(self.table["id"].to_numpy() % num_partitions)

    def for_partition(self, p: int, corpus: pa.Table) -> Tuple[pa.Table, pa.Table]:
        """(GENERATED_SCHEMA rows for every passage of the partition, set-aside rows)."""
        rows = self.table.filter(pc.equal(self.partition, p))
        empty = pc.or_kleene(pc.is_null(rows["text"]), pc.equal(pc.utf8_trim_whitespace(rows["text"]), ""))
        bad_empty = rows.filter(pc.fill_null(empty, True))
        rest = rows.filter(pc.invert(pc.fill_null(empty, True)))
        unknown = rest.filter(pc.invert(pc.is_in(rest["id"], value_set=corpus["id"])))
        good = rest.filter(pc.is_in(rest["id"], value_set=corpus["id"]))
        by_id: Dict[int, list] = {}
        for pid, lang, text in zip(good["id"].to_pylist(), good["lang"].to_pylist(), good["text"].to_pylist()):
            by_id.setdefault(pid, []).append({"lang": lang, "text": text})
        ids = corpus["id"].to_pylist()
        out = pa.table(
            {
                "id": corpus["id"],
                "content_hash": corpus["content_hash"],
                "queries": pa.array([by_id.get(i, []) for i in ids], type=QUERY_LIST_TYPE),
                "failed": pa.array(np.zeros(len(ids), np.int32)),
            },
            schema=GENERATED_SCHEMA,
        )
        aside = [
            pa.table({"line": t["line"], "docid": t["docid"], "reason": pa.array([why] * t.num_rows, pa.string()), "text": t["text"]})
            for t, why in ((unknown, "docid not in corpus"), (bad_empty, "empty query text"))
            if t.num_rows
        ]
        set_aside = pa.concat_tables(aside).sort_by("line") if aside else SET_ASIDE_SCHEMA.empty_table()
        return out, set_aside


def _check_not_evaluated(name: str, prov: pa.Table, evaluated: Dict[str, Any]) -> None:
    """Human queries used for augmentation must never be the evaluated ones."""
    if "qid" in prov.column_names:
        clash = set(prov["qid"].cast(pa.string()).to_pylist()) & set(evaluated.get("qids", []))
        if clash:
            raise ConfigError(f"generators.{name}: {len(clash)} provided queries are evaluated queries (e.g. {sorted(clash)[:3]})")
    pairs = {(lang, text) for lang, text in evaluated.get("texts", [])}
    clash_t = set(zip(prov["lang"].to_pylist(), prov["text"].to_pylist())) & pairs
    if clash_t:
        raise ConfigError(f"generators.{name}: {len(clash_t)} provided query texts equal evaluated questions, e.g. {sorted(clash_t)[:2]}")


__all__ = ["BENCHMARK_PROVIDED", "ProvidedQueries", "provided_source"]
