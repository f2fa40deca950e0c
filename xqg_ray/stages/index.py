"""Index stage: one FAISS file per (system, shard), built once and then updated, never overwritten.

Shard ``s`` holds the corpus partitions ``p`` with ``p % num_shards == s``.  A
shard's key is the system's settings plus the keys of its partitions'
embeddings; an unchanged shard is skipped.  A changed shard is *updated* from
its previous version when the settings are the same and the index type can
remove ids: passages removed or changed leave it, added or changed ones are
added, a trained IVF quantizer is kept.  Each version is written under a new
name with a sidecar of (id, content_hash) saying which passage version each
vector is, so the next update can diff without the old embeddings, and the
sha256 of the embeddings segments it was built from, so that an update after an
appended delta segment reads that segment alone, not the shard's embeddings.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import asdict, dataclass, field
from typing import Any, Dict, Iterator, List, Optional, Tuple

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ..ids import shard_partitions
from ..retrieval.augment import AUGMENT_VERSION
from ..retrieval.index import rows_to_add
from ..config import ConfigError, StorageConfig, section_dict
from ..config.schema import GENERATING_KINDS
from ..store.integrity import (
    IntegrityError,
    read_table_verified,
    staging_path,
    verified_local_file,
    write_file_committed,
    write_table_committed,
)
from ..store.ledger import Ledger, file_record, fingerprint, is_resumed
from ..store.segments import dead_keys, live_batches, segment_source, segments
from .plan import Plan, plan_stage
from .records import IndexManifest, ShardEntry, ShardJob, ShardSystem, entries
from ..runtime.remote import release_freed_memory
from ..runtime.tasks import run_tasks
from ..schemas import PASSAGE, SHARD_IDS_SCHEMA, gen_kind
from ..store.storage import Storage
from ..config.systems import encoder_label, query_source, selection_name
from .context import PIPELINE_VERSION, Context


def _unequal_counts_policy(ctx: Context, sysc, counts: Dict[str, int]) -> None:
    """sum with unequal query counts weights passages by how many queries they got: refuse unless allowed."""
    if sysc.aggregation != "sum" or counts["min"] == counts["max"]:
        return
    msg = (f"system {sysc.name!r}: aggregation=sum with unequal query counts per passage "
           f"(min {counts['min']}, max {counts['max']}, {counts['zero']} passages with none). The sum then "
           f"weights passages by how many queries they got; use aggregation=mean, or set "
           f"allow_unequal_counts=true to accept it.")
    if not sysc.allow_unequal_counts:
        raise ConfigError(msg)
    ctx.timer.event(f"index/{sysc.name}", "warning", message="WARNING " + msg)


def index_settings(sysc) -> Dict[str, Any]:
    """What a system's vectors depend on (not its name, sweep list or baseline: renaming or
    extending a sweep rebuilds nothing)."""
    keep = ("generator", "encoder", "alpha", "aggregation", "n", "allow_unequal_counts")
    return {k: v for k, v in asdict(sysc).items() if k in keep}


@dataclass
class SystemPlan:
    """One system's index plan: its ledger's plan and what its manifest needs."""

    sysc: Any
    fp: str
    config_key: str
    plan: Plan
    shards: Dict[int, Dict[str, Any]] = field(default_factory=dict)


def index_jobs(ctx: Context, embs: Dict[str, Dict[str, Any]]) -> Tuple[Dict[str, SystemPlan], List[ShardJob]]:
    """(system -> its plan, one shard job per (shard, encoder) with work left): the index stage's planning."""
    cfg = ctx.cfg
    S, P = cfg.index.num_shards, ctx.snapshot["num_partitions"]
    groups = shard_partitions(P, S)
    plans: Dict[str, SystemPlan] = {}
    todo: Dict[Tuple[int, str], List[ShardSystem]] = {}
    for sysc in cfg.systems:
        emb = embs[sysc.encoder]
        emb_units = {u["partition"]: u for u in emb["units"]}
        led = Ledger(ctx.storage, ctx.root, f"index/{sysc.name}")
        source = query_source(sysc)  # the generator's unfiltered queries, or GENERATOR@kept
        gen_fp = emb["generators"].get(source) if sysc.generator else None
        if sysc.generator:
            _unequal_counts_policy(ctx, sysc, emb["counts"][source])
        config_key = fingerprint({"v": PIPELINE_VERSION, "augment": AUGMENT_VERSION, "sys": index_settings(sysc), "index": section_dict(cfg.index),
                                  "partitions": P, "enc": emb["enc_fp"], "gen": gen_fp})
        fp = fingerprint({"config": config_key, "emb": emb["fingerprint"]})
        keys = {shard_label(s): fingerprint({"config": config_key, "parts": [emb_units[p]["key"] for p in parts]}) for s, parts in enumerate(groups)}

        def prior_entries(m: Dict[str, Any], config_key: str = config_key) -> Dict[str, Dict[str, Any]]:
            return {shard_label(sh["shard"]): sh for sh in m["shards"]} if m.get("config_key") == config_key else {}

        plan = plan_stage(led, fp, keys, ctx.resume, prior_entries)
        sp = SystemPlan(sysc=sysc, fp=fp, config_key=config_key, plan=plan)
        plans[sysc.name] = sp
        if plan.published:
            continue
        sp.shards = {int(rec["shard"]): rec for rec in plan.resumed.values()}
        for label in plan.todo:
            s, key, ps = int(label[2:]), keys[label], plan.prior.get(label)
            todo.setdefault((s, sysc.encoder), []).append(ShardSystem(
                name=sysc.name, generator=source, alpha=sysc.alpha, aggregation=sysc.aggregation, n=sysc.n,
                stage=f"index/{sysc.name}", label=label, key=key,
                out=led.data_rel(label, key, ".faiss"), ids_out=led.data_rel(label, key, ".ids.parquet"),
                prior={"index": file_record(ps), "ids": ps["ids"], "sources": ps.get("sources")} if ps else None,
            ))
    jobs = []
    for (s, enc), systems in sorted(todo.items()):
        units = {u["partition"]: u for u in embs[enc]["units"]}
        jobs.append(ShardJob(root=ctx.root, shard=s, emb_files=[segment_source(units[p]) for p in groups[s]], partitions=list(groups[s]),
                             num_partitions=P, systems=systems,
                             dim=embs[enc]["dim"], factory=cfg.index.factory, metric=cfg.index.metric, threads=ctx.threads))
    return plans, jobs


def shard_label(shard: int) -> str:
    return f"s-{shard:05d}"


def run_index(ctx: Context, embs: Dict[str, Dict[str, Any]]) -> Dict[str, Dict[str, Any]]:
    """Every system's index manifest, building or updating only the shards whose inputs changed.

    ``embs``: encoder name -> its embeddings manifest; each system is built from its own encoder's.
    """
    cfg = ctx.cfg
    S, P = cfg.index.num_shards, ctx.snapshot["num_partitions"]
    manifests: Dict[str, Dict[str, Any]] = {}
    with ctx.timer.stage("index") as st:
        plans, jobs = index_jobs(ctx, embs)
        pending = {name: sp for name, sp in plans.items() if not sp.plan.published}
        manifests.update({name: sp.plan.published for name, sp in plans.items() if sp.plan.published})
        for rows in run_tasks(build_shard, [(job.to_json(), ctx.cfg.storage) for job in jobs], cfg.ray.actor_num_cpus):
            for r in rows:
                pending[r["system"]].shards[r["shard"]] = r
        for name, pend in pending.items():
            sysc = pend.sysc
            shards = [pend.shards[s] for s in range(S)]
            ntotal = sum(int(sh["ntotal"]) for sh in shards)
            if ntotal != ctx.snapshot["rows"]["kept"]:
                raise RuntimeError(f"index {name}: {ntotal} vectors in shards, the corpus snapshot holds {ctx.snapshot['rows']['kept']} passages")
            emb = embs[sysc.encoder]
            manifests[name] = Ledger(ctx.storage, ctx.root, f"index/{name}").publish(pend.fp, IndexManifest(
                config_key=pend.config_key, system=asdict(sysc), num_shards=S, num_partitions=P, dim=emb["dim"],
                metric=cfg.index.metric, factory=cfg.index.factory, encoder=emb["encoder"]["model"],
                encoder_name=encoder_label(sysc.encoder), embeddings=emb["fingerprint"],
                alpha=sysc.alpha if sysc.generator else 0.0, aggregation=sysc.aggregation if sysc.generator else None,
                n=sysc.n if sysc.generator else None,
                generator=sysc.generator or None, query_counts=emb["counts"][query_source(sysc)] if sysc.generator else None,
                corpus_hash=ctx.snapshot["corpus_hash"], snapshot=ctx.snapshot["snapshot"], ntotal=ntotal,
                changes={k: sum(int(sh.get(k, 0)) for sh in shards if not is_resumed(sh)) for k in ("added", "removed")},
                modes=sorted({sh.get("mode", "") for sh in shards}),
                shards=entries(ShardEntry, shards),
                questions=selection_name(sysc) if sysc.generator and cfg.generators[sysc.generator].kind in GENERATING_KINDS else None,
            ).to_json())
        st["rows"] = sum(sum(int(sh.get("added", 0)) for sh in p.shards.values() if not is_resumed(sh)) for p in pending.values())
        st["reused"] = not jobs
    return manifests


def build_shard(job_json: Dict[str, Any], storage_cfg: StorageConfig) -> List[Dict[str, Any]]:
    """Ray task: one shard of every system of a :class:`ShardJob`, built from scratch or updated from its prior version.

    Systems one after another, each freed before the next: a system reads from each
    embeddings file only its own rows and columns (the passages', then its
    generator's), batch by batch, and an update keeps only the rows to add.  The index
    is written by FAISS to a local file and committed from there (hashed while
    streaming), never serialised into memory.  Peak: about three copies of the
    shard's vectors for an xQG system (E(p), the query sums, the index), two for the
    baseline, plus one read batch (:data:`READ_BATCH_BYTES`).
    """
    import faiss

    job = ShardJob.from_json(job_json)
    faiss.omp_set_num_threads(max(1, job.threads))
    storage = Storage(storage_cfg)
    out = []
    for system in job.systems:
        rec = build_system_shard(storage, job, system)
        release_freed_memory()  # what this system freed, before the next one's reads
        led = Ledger(storage, job.root, system.stage)
        led.commit(system.label, system.key, rec)
        out.append({**rec, "key": system.key, "commit": led.commit_rel(system.label, system.key)})
    return out


PASSAGE_COLUMNS = ["id", "content_hash", "vector"]


# Decoded bytes per batch read from an embeddings file: a build holds one batch of a file, never the file
# (one partition's rows: at xor-tydi's settings about 0.5 GB, at the scale benchmark's 1M 42 MB).
READ_BATCH_BYTES = 8 << 20


def embedding_parts(storage: Storage, job: ShardJob, wanted: Dict[str, List[str]]) -> Iterator[Dict[str, pa.Table]]:
    """The shard's embeddings files streamed batch by batch (their live segments), read when asked for:
    per batch, kind -> that kind's rows, only its columns (``wanted``)."""
    columns = list(dict.fromkeys(c for cols in wanted.values() for c in cols))
    for f in job.emb_files:
        for t in live_batches(storage, job.root, f, ["kind", *columns], READ_BATCH_BYTES, where="the embeddings manifest"):
            yield {kind: t.filter(pc.equal(t["kind"], kind)).select(cols) for kind, cols in wanted.items()}


def in_sorted(sorted_ids: np.ndarray, ids: np.ndarray) -> np.ndarray:
    """Mask of ``ids`` found in the sorted array ``sorted_ids`` (binary search)."""
    if len(sorted_ids) == 0:
        return np.zeros(len(ids), bool)
    return sorted_ids[np.minimum(np.searchsorted(sorted_ids, ids), len(sorted_ids) - 1)] == ids


def sidecar_table(seen: List[Tuple[pa.Table, np.ndarray]]) -> Tuple[pa.Table, np.ndarray]:
    """(the shard version's (id, content_hash) sidecar sorted by id, ids of its unchanged passages)
    from each file's passage (id, content_hash) and its mask of rows to add."""
    if not seen:
        return SHARD_IDS_SCHEMA.empty_table(), np.zeros(0, np.int64)
    t = pa.concat_tables([v for v, _ in seen])
    order = np.argsort(t["id"].to_numpy(), kind="stable")
    add = np.concatenate([m for _, m in seen])[order]
    take = pa.array(order)
    new = pa.table({"id": t["id"].combine_chunks().take(take), "content_hash": t["content_hash"].combine_chunks().take(take)},
                   schema=SHARD_IDS_SCHEMA)
    return new, new["id"].to_numpy()[~add]


def build_system_shard(storage: Storage, job: ShardJob, system: ShardSystem) -> Dict[str, Any]:
    """Build or update one system's shard; its commit record (index file, ids sidecar, counts, mode).

    A build reads the files twice, passages then queries, so that only one kind's
    parts are held next to the shard's vectors.  An update reads of each embeddings
    file only the segments appended since its prior version, or the whole file where
    it was rewritten, and keeps only the rows to add (:func:`update_rows`).
    """
    from ..retrieval.index import build_index, read_index_file, system_vectors, update_index, write_index_file

    root, dim, prior, sysj = job.root, job.dim, system.prior, system.to_json()
    gen = gen_kind(system.generator) if system.generator else ""
    gen_cols = ["id", "vector", "count"] + (["slots", "slot_counts"] if int(system.n or 0) > 0 else [])
    seen: List[Tuple[pa.Table, np.ndarray]] = []  # per file: passage (id, content_hash), rows to add

    # After each read pass, before the shard's vectors are placed and augmented, the decode
    # buffers it freed go back to the OS: glibc and Arrow keep them otherwise, and the peak
    # came on top of them (measured at 1M passages: see release_freed_memory).
    def passages() -> Iterator[pa.Table]:
        for d in embedding_parts(storage, job, {PASSAGE: PASSAGE_COLUMNS}):
            seen.append((d[PASSAGE].select(["id", "content_hash"]), np.ones(d[PASSAGE].num_rows, bool)))
            yield d[PASSAGE]
        release_freed_memory()

    def queries() -> Iterator[pa.Table]:
        if gen:
            for d in embedding_parts(storage, job, {gen: gen_cols}):
                yield d[gen]
            release_freed_memory()

    mode, index, read = "built", None, [0]  # read: embeddings rows an update read
    if prior is None:
        ids_add, _, vecs = system_vectors(passages(), queries(), sysj, dim)
        new, _ = sidecar_table(seen)
        added, removed = new.num_rows, 0
    else:
        old = read_table_verified(storage, root, prior["ids"], where=f"the {system.stage} manifest").sort_by("id")
        old_ids, old_hashes = old["id"].to_numpy(), old["content_hash"].combine_chunks()
        new, p_add, g_add = update_rows(storage, job, prior.get("sources"), old, gen, gen_cols, read)
        ids_add, _, vecs = system_vectors(p_add, g_add, sysj, dim)
        del p_add, g_add
        # Removed: the old versions the new one does not hold (gone or changed); the
        # same split as reuse.diff_versions, by binary search on ids instead of strings.
        remove = old_ids[rows_to_add(new["id"].to_numpy(), new["content_hash"], old_ids, old_hashes)]
        # Read into memory (not mapped): the update changes it in place.
        index = read_index_file(verified_local_file(storage, root, prior["index"], index_cache_dir(), where=f"the {system.stage} manifest"))
        if update_index(index, remove, vecs, ids_add):
            mode, added, removed = "updated", len(ids_add), len(remove)
        else:
            index = None  # this index type cannot remove ids: rebuild from every row
            del vecs
            seen.clear()
            ids_add, _, vecs = system_vectors(passages(), queries(), sysj, dim)
            added, removed = new.num_rows, 0
    if index is None:
        index = build_index(vecs, ids_add, dim, job.factory, job.metric)
    del vecs
    if index.ntotal != new.num_rows:
        raise RuntimeError(f"shard {job.shard} of {system.name}: index holds {index.ntotal} vectors, expected {new.num_rows}")
    local = staging_path(storage, root, system.out)
    try:
        write_index_file(index, local)
    except BaseException:
        if os.path.exists(local):
            os.remove(local)
        raise
    del index
    rec = write_file_committed(storage, root, system.out, local)
    rec["ids"] = write_table_committed(storage, root, system.ids_out, new)
    rec.update(system=system.name, shard=job.shard, ntotal=int(new.num_rows), added=added, removed=removed, mode=mode,
               sources=[[seg["sha256"] for seg in segments(f)] for f in job.emb_files])
    if mode == "updated":
        rec["rows_read"] = read[0]
    return rec



def segments_since(files: List[Dict[str, Any]], sources: Optional[List[List[str]]]) -> List[Optional[List[Dict[str, Any]]]]:
    """Per embeddings file of the shard, its segments appended since the prior version was built from
    ``sources`` (each file's segment sha256s then, oldest first), or None where the file is not its
    prior's segments plus new ones (rewritten whole, compacted, or a prior from before sources were
    recorded): that file is then read whole."""
    if not sources or len(sources) != len(files):
        return [None] * len(files)
    out: List[Optional[List[Dict[str, Any]]]] = []
    for f, before in zip(files, sources):
        segs = segments(f)
        same = len(before) <= len(segs) and [s["sha256"] for s in segs[:len(before)]] == list(before)
        out.append(segs[len(before):] if same else None)
    return out


def update_rows(storage: Storage, job: ShardJob, sources: Optional[List[List[str]]], old: pa.Table, gen: str, gen_cols: List[str],
                read: List[int]) -> Tuple[pa.Table, List[pa.Table], List[pa.Table]]:
    """(the new sidecar, passage rows to add, query rows to add) of a shard update, reading per embeddings file
    only the segments appended since the prior version, or the whole file where it was rewritten.

    The prior's passages of a partition stay unless a new segment's tombstones name
    them (removed or changed) or its file was rewritten (then the file's passages
    replace them); the passages read whose (id, content_hash) the prior does not hold
    are added, with their query rows (computed with their E(p), keyed by the same
    content hash: in the same segment).  ``read[0]`` counts the rows read, of the
    system's kinds.
    """
    where = "the embeddings manifest"
    old_ids, old_hashes = old["id"].to_numpy(), old["content_hash"].combine_chunks()
    keep = np.ones(old.num_rows, bool)
    fresh: List[Tuple[pa.Table, np.ndarray]] = []
    p_add, g_add = [], []

    def take(entry: Dict[str, Any]) -> None:
        # Streamed batch by batch, in two passes: a file holds a kind's rows together ("gen:..."
        # before "passage"), so a passage's query rows are in another batch than its E(p) row.
        added = []
        for t in live_batches(storage, job.root, entry, ["kind", *PASSAGE_COLUMNS], READ_BATCH_BYTES, where=where):
            p = t.filter(pc.equal(t["kind"], PASSAGE)).select(PASSAGE_COLUMNS)
            read[0] += p.num_rows
            add = rows_to_add(old_ids, old_hashes, p["id"].to_numpy(), p["content_hash"].combine_chunks())
            fresh.append((p.select(["id", "content_hash"]), add))
            p_add.append(p.filter(pa.array(add)))
            added.append(p["id"].to_numpy()[add])
        if gen:
            ids = np.sort(np.concatenate(added)) if added else np.zeros(0, np.int64)
            for t in live_batches(storage, job.root, entry, ["kind", *gen_cols], READ_BATCH_BYTES, where=where):
                g = t.filter(pc.equal(t["kind"], gen)).select(gen_cols)
                read[0] += g.num_rows
                g_add.append(g.filter(pa.array(in_sorted(ids, g["id"].to_numpy()))))

    for f, part, segs in zip(job.emb_files, job.partitions, segments_since(job.emb_files, sources)):
        if segs is None:  # rewritten: its live rows replace the prior's passages of the partition
            keep &= old_ids % job.num_partitions != part
            take(f)
            continue
        if not segs:  # unchanged since the prior version
            continue
        gone = dead_keys(storage, job.root, segs, where).get(PASSAGE)
        if gone is not None:
            keep &= ~in_sorted(gone, old_ids)
        take({"segments": segs})  # the new segments' live rows
    kept = old.filter(pa.array(keep))
    ids = [t["id"].to_numpy() for t, _ in fresh]
    if in_sorted(kept["id"].to_numpy(), np.concatenate(ids) if ids else np.zeros(0, np.int64)).any():
        # a passage live in two segments: the files are not what was committed
        raise IntegrityError(f"shard {job.shard}: a passage of a new embeddings segment is also live in an earlier one and no "
                             "tombstone names it; delete the embeddings stage's output and rerun the same command to recompute it")
    new, _ = sidecar_table([(kept, np.zeros(kept.num_rows, bool)), *fresh])
    return new, p_add, g_add

def index_cache_dir() -> str:
    """Where index shards of an ``s3://`` run are downloaded to on a worker (one copy per sha256)."""
    return os.path.join(tempfile.gettempdir(), "xqg-ray-index-cache")
