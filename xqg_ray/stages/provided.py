"""Provided queries (query logs, held-out human questions) joined onto corpus partitions.

The table is read and checked once per stage, by one Ray task that writes it
as one slice per corpus partition (reused across runs while the table, the
partition count and the evaluated questions are the same); each unit then
reads only its partition's slice, so no actor holds the whole table.

One policy lives here: a provided query that is an evaluated question (same
qid, or same language and text) would leak the answer into the index, so it is
an error; rows for unknown docids or with empty text are set aside with a reason.
"""

from __future__ import annotations

from typing import Any, Dict, Optional, Tuple

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ..config import ConfigError, StorageConfig
from ..ids import passage_ids
from ..runtime.tasks import run_tasks
from ..schemas import GENERATED_SCHEMA, QUERY_LIST_TYPE, SET_ASIDE_SCHEMA
from ..store.integrity import read_table_verified, sha256_bytes, write_table_committed
from ..store.sealed import read_sealed, write_sealed
from ..store.ledger import fingerprint, missing_files
from ..store.storage import Storage, join

BENCHMARK_PROVIDED = "benchmark:provided"
# Provided tables split by partition live under PROVIDED_DIR/NAME/ (see provided_slices).
PROVIDED_DIR = "provided"
SPLIT_VERSION = 1  # bump when the slices' layout changes


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


def load_provided(storage: Storage, root: str, name: str, source: Dict[str, Any], evaluated: Dict[str, Any]) -> pa.Table:
    """Generator ``name``'s provided table, checked, as (line, docid, id, lang, text); ``line`` counts from 1."""
    if "rec" in source:
        table = read_table_verified(storage, root, source["rec"], where="the benchmark manifest")
    else:
        table = storage.read_any_table(source["uri"])
    missing = {"docid", "lang", "text"} - set(table.column_names)
    if missing:
        raise ConfigError(f"generators.{name}.path: missing columns {sorted(missing)}")
    _check_not_evaluated(name, table, evaluated)
    docids = table["docid"].cast(pa.string())
    return pa.table(
        {
            "line": pa.array(np.arange(1, table.num_rows + 1), pa.int64()),
            "docid": docids,
            "id": pa.array(passage_ids(docids.to_pylist()), pa.int64()),
            "lang": table["lang"].cast(pa.string()),
            "text": table["text"].cast(pa.string()),
        }
    )


def split_provided(storage_cfg: StorageConfig, root: str, name: str, source: Dict[str, Any], evaluated: Dict[str, Any],
                   num_partitions: int, prefix: str) -> Dict[str, Any]:
    """Ray task: the provided table checked once and written as one committed slice per corpus partition.

    Slice ``p`` holds the rows whose passage id is in partition ``p``, in table
    order.  Returns the slices' index (what :class:`ProvidedQueries` reads).
    """
    storage = Storage(storage_cfg)
    t = load_provided(storage, root, name, source, evaluated)
    part = t["id"].to_numpy() % num_partitions
    counts = np.bincount(part, minlength=num_partitions)
    grouped = t.take(pa.array(np.argsort(part, kind="stable")))  # stable: table order inside each partition
    bounds = np.concatenate([[0], np.cumsum(counts)])
    slices = [{"partition": p, **write_table_committed(storage, root, f"{prefix}/p-{p:05d}.parquet",
                                                       grouped.slice(int(bounds[p]), int(counts[p])))}
              for p in range(num_partitions)]
    return {"kind": "provided-slices", "generator": name, "sha256": source["sha256"], "num_partitions": num_partitions,
            "rows": t.num_rows, "slices": slices}


def provided_slices(ctx, name: str) -> Dict[str, Any]:
    """Generator ``name``'s table split by partition (one Ray task), or the split an earlier run left.

    Keyed by the table's sha256, the number of partitions and the evaluated
    questions (the leak check depends on them): the sealed index
    ``provided/NAME/KEY16.json`` and its slices are reused while intact; other
    versions under ``provided/NAME/`` are deleted once a new one is written.
    """
    source = provided_source(ctx, name)
    P = ctx.snapshot["num_partitions"]
    key = fingerprint({"v": SPLIT_VERSION, "sha256": source["sha256"], "partitions": P, "evaluated": fingerprint(ctx.bench["evaluated"])})
    base = f"{PROVIDED_DIR}/{name}"
    rel = f"{base}/{key[:16]}.json"
    if ctx.storage.exists(join(ctx.root, rel)):
        index = read_sealed(ctx.storage, ctx.root, rel)
        if not missing_files(ctx.storage, ctx.root, index):
            return index
    index = run_tasks(split_provided, [(ctx.cfg.storage, ctx.root, name, source, ctx.bench["evaluated"], P, f"{base}/{key[:16]}")],
                      min(1.0, ctx.cfg.ray.actor_num_cpus))[0]
    index = write_sealed(ctx.storage, ctx.root, rel, index)
    for sub in ctx.storage.list_relative(join(ctx.root, base)):
        if not sub.startswith(key[:16]):
            ctx.storage.delete(join(ctx.root, base, sub))
    return index


class ProvidedQueries:
    """The provided queries of one generator, read one partition's slice at a time (held by an actor)."""

    def __init__(self, storage: Storage, root: str, slices: Dict[str, Any]):
        self.storage, self.root = storage, root
        self.slices = {int(r["partition"]): r for r in slices["slices"]}
        self.rows_read = 0  # provided rows read so far: only the slices of the partitions asked for

    def for_partition(self, p: int, corpus: pa.Table, todo: Optional[pa.Table] = None) -> Tuple[pa.Table, pa.Table]:
        """(GENERATED_SCHEMA rows for the passages of ``todo`` (default: every passage of the partition,
        ``corpus``), set-aside rows of the partition's whole slice).

        A passage's provided queries depend on its id alone, so an update joins only its new and
        changed passages (``todo``) and reuses the others' rows; what is set aside is always the
        whole slice's, judged against the whole partition.
        """
        rows = read_table_verified(self.storage, self.root, self.slices[p], where="the provided queries' split")
        self.rows_read += rows.num_rows
        todo = corpus if todo is None else todo
        empty = pc.or_kleene(pc.is_null(rows["text"]), pc.equal(pc.utf8_trim_whitespace(rows["text"]), ""))
        bad_empty = rows.filter(pc.fill_null(empty, True))
        rest = rows.filter(pc.invert(pc.fill_null(empty, True)))
        unknown = rest.filter(pc.invert(pc.is_in(rest["id"], value_set=corpus["id"])))
        good = rest.filter(pc.is_in(rest["id"], value_set=todo["id"]))
        by_id: Dict[int, list] = {}
        for pid, lang, text in zip(good["id"].to_pylist(), good["lang"].to_pylist(), good["text"].to_pylist()):
            by_id.setdefault(pid, []).append({"lang": lang, "text": text})
        ids = todo["id"].to_pylist()
        out = pa.table(
            {
                "id": todo["id"],
                "content_hash": todo["content_hash"],
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


__all__ = ["BENCHMARK_PROVIDED", "ProvidedQueries", "load_provided", "provided_slices", "provided_source", "split_provided"]
