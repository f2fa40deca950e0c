"""``ingest_corpus``: a corpus read in parallel into P id-partitioned files plus a sealed snapshot manifest.

Flow (the driver only holds the plan, small per-chunk stats and the manifest):

1. plan (:mod:`.plan`): chunks from file metadata; a parallel line-count pass;
   a file whose fingerprint key the parent snapshot recorded (:mod:`.reuse`)
   is not opened: its chunks are the parent's;
2. map (Ray Data, :func:`.partition.parse_batch`): each other chunk parsed and
   validated in a worker, its clean rows written per partition under
   ``corpus/inputs/<file key>/`` (a fingerprinted file: kept for the next
   update) or ``corpus/staging/<plan digest>/``; a parsed file whose size or
   mtime (ETag) changed meanwhile fails the ingest;
3. corpus limit, if any: every partition reports its ``limit`` smallest keys,
   the driver picks the threshold (bounded data);
4. reduce (one Ray task per partition): duplicates, collisions, limit, sort,
   diff with the parent snapshot, partition file written (or reused); a
   partition whose inputs digest is the parent's is only verified, not reduced;
5. manifest sealed at ``corpus/snapshots/<snapshot>.json``; staging removed.

Every path in the manifest is relative to ``root`` (the run's output_dir).
"""

from __future__ import annotations

import hashlib
import heapq
import json
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Sequence, Union

from ..config import StorageConfig
from ..config.secrets import redact
from ..errors import reraise_user_error
from ..runtime.cluster import current
from ..runtime.remote import remote_function
from ..store.sealed import write_sealed
from ..store.storage import Storage, join
from .partition import append_partition, parse_batch, reduce_partition, verify_partition
from .plan import make_plan
from .readers import MAX_PASSAGE_CHARS, check_max_passage_chars
from .reuse import appended_partitions, chunk_out, chunk_stats, file_keys, file_records, inputs_digests, reduce_inputs, reusable_files
from .sources import CorpusError, list_corpus_files


@dataclass
class KeepSpec:
    """benchmark.corpus_limit: every gold passage + the ``limit - len(golds)`` non-gold
    rows with the smallest ``(seed_for(seed, docid), docid)``."""

    golds: List[str]
    limit: int
    seed: int


def _sha256_file(storage_cfg: StorageConfig, uri: str) -> Dict[str, Any]:
    fs, path = Storage(storage_cfg).resolve(uri)
    h, n = hashlib.sha256(), 0
    # compression=None: the default "detect" would hash the *decompressed* bytes of a .gz file.
    with fs.open_input_stream(path, compression=None) as f:
        while True:
            block = f.read(8 << 20)  # streamed: a multi-GB file never sits in memory
            if not block:
                break
            h.update(block)
            n += len(block)
    return {"uri": uri, "bytes": n, "sha256": h.hexdigest()}


def _get_all(refs: list, what: str) -> list:
    """ray.get after *every* task finished (staging is only removed once no task can still read it),
    giving up with one line naming ``what`` once nothing finished for the cluster's wait timeout."""
    return current().get(refs, what) if refs else []


# Bytes one hashing task reads at most (unless one file is larger): the ingest's own chunk size.  A task per
# file started a worker process per small file (~1 CPU-s each for a few kB); grouped, a corpus of many
# small files is hashed by a few tasks, and one of large files still by a task per file, in parallel.
HASH_GROUP_BYTES = 64 << 20


def hash_groups(files: Sequence[str], sizes: Sequence[int], group_bytes: int = HASH_GROUP_BYTES) -> List[List[str]]:
    """``files`` cut, in order, into runs of at most ``group_bytes`` together (a larger file is a run alone)."""
    groups: List[List[str]] = []
    total = 0
    for f, size in zip(files, sizes):
        if not groups or total + size > group_bytes:
            groups.append([])
            total = 0
        groups[-1].append(f)
        total += size
    return groups


def _sha256_files(storage_cfg: StorageConfig, uris: List[str]) -> List[Dict[str, Any]]:
    return [_sha256_file(storage_cfg, u) for u in uris]


def fingerprint_sources(storage_cfg: StorageConfig, files: List[str], num_cpus: float = 0.5,
                        sizes: Optional[Sequence[int]] = None) -> List[Dict[str, Any]]:
    """``[{"uri", "bytes", "sha256"}]`` of ``files``, in input order: one Ray task per run of files of at most
    :data:`HASH_GROUP_BYTES` (:func:`hash_groups`).  ``sizes``: the files' sizes when the caller has them
    (else one stat each)."""
    if not files:
        return []
    if sizes is None:
        storage = Storage(storage_cfg)
        client = storage.s3_client() if any(f.startswith("s3://") for f in files) else None
        sizes = [file_stamp(storage, f, client)[0] for f in files]
    task = remote_function(_sha256_files, num_cpus=num_cpus)
    try:
        done = current().get([task.remote(storage_cfg, g) for g in hash_groups(files, sizes)], "the sha256 of the input files")
    except Exception as e:
        reraise_user_error(e)
        raise
    return [r for group in done for r in group]


def file_stamp(storage: Storage, uri: str, s3_client: Any = None) -> List[Any]:
    """What says a file is unchanged without reading it: ``[size, mtime_ns]`` locally, ``[size, ETag]`` on S3.

    Storage metadata only (a stat, or one HEAD request).  S3's ETag changes with
    the content of every write; a local mtime changes on every write too, but
    also on a touch, which is why a changed stamp only means "hash it again".
    ``s3_client``: one boto3 client for many calls (made here when not given).
    """
    if uri.startswith("s3://"):
        bucket, _, key = uri[len("s3://"):].partition("/")
        head = (s3_client or storage.s3_client()).head_object(Bucket=bucket, Key=key)
        return [int(head["ContentLength"]), str(head["ETag"])]
    fs, path = storage.resolve(uri)
    info = fs.get_file_info(path)
    return [int(info.size), int(info.mtime_ns or 0)]


@dataclass
class Fingerprints:
    """The input files' records, the updated cache, and which files were read (hashed) to get them."""

    sources: List[Dict[str, Any]]
    cache: Dict[str, Dict[str, Any]]
    hashed: List[str]


def fingerprint_sources_cached(storage_cfg: StorageConfig, files: List[str], cache: Dict[str, Dict[str, Any]],
                               num_cpus: float = 0.5) -> Fingerprints:
    """:func:`fingerprint_sources` that reads only the files whose stamp (:func:`file_stamp`) is not in ``cache``.

    ``cache``: sha256 of the uri -> ``{"stamp", "bytes", "sha256"}`` from the previous run
    (keyed by a hash so that a presigned token or password in a URI is never written).  A
    file whose stamp is recorded reuses its sha256 unread; any other file is
    hashed (so a touched but identical file gets its old sha256 back and is the
    same input; an edited one is new input).  The returned cache holds exactly
    ``files``.
    """
    storage = Storage(storage_cfg)
    client = storage.s3_client() if any(f.startswith("s3://") for f in files) else None
    stamps = {f: file_stamp(storage, f, client) for f in files}
    keys = {f: hashlib.sha256(f.encode()).hexdigest() for f in files}
    todo = [f for f in files if (cache.get(keys[f]) or {}).get("stamp") != stamps[f]]
    fresh = {r["uri"]: r for r in fingerprint_sources(storage_cfg, todo, num_cpus, sizes=[stamps[f][0] for f in todo])}
    sources, new_cache = [], {}
    for f in files:
        old = cache.get(keys[f]) or {}
        rec = fresh.get(f) or {"uri": f, "bytes": old["bytes"], "sha256": old["sha256"]}
        sources.append(rec)
        new_cache[keys[f]] = {"stamp": stamps[f], "bytes": rec["bytes"], "sha256": rec["sha256"]}
    return Fingerprints(sources=sources, cache=new_cache, hashed=todo)


def _run_map(storage_cfg: StorageConfig, root: str, plan: List[Dict[str, Any]], num_partitions: int,
             num_cpus: float, max_passage_chars: int) -> List[Dict[str, Any]]:
    import ray

    items = [{"chunk": c["chunk"], "spec": json.dumps(c)} for c in plan]
    ds = ray.data.from_items(items, override_num_blocks=len(items)).map_batches(
        parse_batch, batch_size=1, num_cpus=num_cpus, batch_format="default",
        fn_kwargs={"storage_cfg": storage_cfg, "root": root, "num_partitions": num_partitions,
                   "max_passage_chars": max_passage_chars},
    )
    stats = sorted(ds.take_all(), key=lambda r: int(r["chunk"]))
    errors = [r["error"] for r in stats if r["error"]]
    if errors:
        raise CorpusError(errors[0])  # the first bad chunk in input order, as the single-process reader
    return [{"chunk": int(r["chunk"]), "rows_read": int(r["rows_read"]), "blank_lines": int(r["blank_lines"]),
             "quarantined": int(r["quarantined"]), "counts": json.loads(r["counts"]), "clean": json.loads(r["clean"]),
             "q": json.loads(r["q"])} for r in stats]


def ingest_corpus(storage_cfg: StorageConfig, root: str, inputs: Union[List[str], str], *, num_partitions: int,
                  fmt: str = "auto", chunk_bytes: int = 64 << 20, parent: Optional[Dict[str, Any]] = None,
                  keep: Optional[KeepSpec] = None, sources: Optional[list] = None, num_cpus: float = 0.5,
                  max_passage_chars: int = MAX_PASSAGE_CHARS, compact_fraction: float = 0.0) -> Dict[str, Any]:
    """Read ``inputs`` with Ray Data into ``num_partitions`` partition files under ``root``; returns the manifest.

    ``max_passage_chars`` is corpus.max_passage_chars: a longer passage text is quarantined with its length.
    ``compact_fraction`` is corpus.compact_fraction: with a parent, a changed partition within that churn
    is written as a delta segment over the parent's files (:func:`.partition.write_partition`); 0: always whole.

    Requires Ray to be initialised.  Raises :class:`CorpusError` (bad input,
    id collision, nothing usable) or :class:`~xqg_ray.store.integrity.IntegrityError`
    (a parent partition file changed), as one-line errors even when a worker found them.
    """
    try:
        return _ingest(storage_cfg, root, inputs, num_partitions=num_partitions, fmt=fmt, chunk_bytes=chunk_bytes,
                       parent=parent, keep=keep, sources=sources, num_cpus=num_cpus,
                       max_passage_chars=max_passage_chars, compact_fraction=compact_fraction)
    except Exception as e:
        reraise_user_error(e)  # a worker's CorpusError/IntegrityError, without Ray's wrapper
        raise


def _ingest(storage_cfg: StorageConfig, root: str, inputs: Union[List[str], str], *, num_partitions: int,
            fmt: str, chunk_bytes: int, parent: Optional[Dict[str, Any]], keep: Optional[KeepSpec],
            sources: Optional[list], num_cpus: float, max_passage_chars: int, compact_fraction: float) -> Dict[str, Any]:
    check_max_passage_chars(max_passage_chars)  # here, not in every worker
    if num_partitions < 1:
        raise CorpusError(f"num_partitions must be >= 1, got {num_partitions}")
    if parent is not None and parent.get("num_partitions") != num_partitions:
        raise CorpusError(
            f"parent snapshot {parent.get('snapshot')} has {parent.get('num_partitions')} partitions, "
            f"this ingest asks for {num_partitions}: use the same number or ingest without a parent"
        )
    if keep is not None and keep.limit <= 0:
        keep = None  # corpus_limit <= 0 means "no limit"
    storage = Storage(storage_cfg)
    files = list_corpus_files(storage, inputs, fmt)
    keys = file_keys(files, sources, fmt, chunk_bytes, max_passage_chars, num_partitions)
    reused = reusable_files(parent, keys)
    watch = _stamps_before(storage, files, keys, reused, sources)
    plan = make_plan(storage_cfg, files, fmt, chunk_bytes, num_cpus, {i: len(r["chunks"]) for i, r in reused.items()})
    token = hashlib.sha256(json.dumps([plan, num_partitions], sort_keys=True).encode()).hexdigest()[:16]
    staging = f"corpus/staging/{token}"  # deterministic: a rerun of the same plan overwrites the same names
    for c in plan:
        c["out"] = chunk_out(keys[c["file_idx"]], c["part"], staging, c["chunk"])
        c["kept"] = keys[c["file_idx"]] is not None
    try:
        stats = _chunk_stats(storage_cfg, root, plan, reused, num_partitions, num_cpus, max_passage_chars)
        _check_unchanged(storage, watch)
        return _reduce(storage_cfg, storage, root, files, keys, set(reused), stats, num_partitions, parent, keep,
                       sources, num_cpus, compact_fraction)
    finally:
        storage.delete(join(root, staging))
        if not storage.list_files(join(root, "corpus/staging")):
            storage.delete(join(root, "corpus/staging"))  # no other ingest is staging here


def _shown(uri: str, root: str) -> str:
    """An input file as a manifest records it: relative to the output directory when it lies inside
    (the XQuAD benchmark stages its corpus there; a copied output directory must not point back), else
    its URI with any credential masked."""
    inside = root.rstrip("/") + "/"
    return uri[len(inside):] if uri.startswith(inside) else redact(uri)


def _stamps_before(storage: Storage, files: List[str], keys: List[Optional[str]], reused: Dict[int, Any],
                   sources: Optional[list]) -> Dict[str, List[Any]]:
    """:func:`file_stamp` of each keyed file to be parsed; one that is not the size fingerprinted is an error."""
    todo = [f for i, f in enumerate(files) if keys[i] is not None and i not in reused]
    if not todo:
        return {}
    size = {s["uri"]: s.get("bytes") for s in sources or []}
    client = storage.s3_client() if any(f.startswith("s3://") for f in todo) else None
    stamps = {f: file_stamp(storage, f, client) for f in todo}
    for f, st in stamps.items():
        if size.get(f) is not None and st[0] != size[f]:
            raise CorpusError(f"{redact(f)} changed after its sha256 was taken ({size[f]} bytes then, {st[0]} now): "
                              "rerun to fingerprint and read it again")
    return stamps


def _check_unchanged(storage: Storage, before: Dict[str, List[Any]]) -> None:
    """A kept parse must be of the fingerprinted bytes: a file written to while it was read fails the ingest."""
    if not before:
        return
    client = storage.s3_client() if any(f.startswith("s3://") for f in before) else None
    for f, st in before.items():
        if file_stamp(storage, f, client) != st:
            raise CorpusError(f"{redact(f)} changed while the ingest read it: rerun once it is no longer being written")


def _chunk_stats(storage_cfg: StorageConfig, root: str, plan: List[Dict[str, Any]], reused: Dict[int, Dict[str, Any]],
                 P: int, num_cpus: float, max_chars: int) -> List[Dict[str, Any]]:
    """Every chunk's stats in plan order: parsed now (Ray Data map) or recorded by the parent."""
    todo = [c for c in plan if c["kind"] != "reused"]
    parsed = {s["chunk"]: s for s in (_run_map(storage_cfg, root, todo, P, num_cpus, max_chars) if todo else [])}
    return [chunk_stats(c["chunk"], c["file_idx"], c["part"],
                        reused[c["file_idx"]]["chunks"][c["part"]] if c["kind"] == "reused" else parsed[c["chunk"]])
            for c in plan]


def _reused_partition(parent_rec: Dict[str, Any], recorded: Dict[str, Any]) -> Dict[str, Any]:
    """A reduce result for a partition whose inputs are the parent's: the parent's partition, unchanged."""
    return {"partition": parent_rec["partition"], "record": dict(parent_rec), "digest": parent_rec["digest"],
            "rows": parent_rec["rows"], "changes": {"added": 0, "changed": 0, "removed": 0, "unchanged": parent_rec["rows"]},
            "duplicates": recorded["duplicates"], "limited_out": 0, "golds_found": 0, "quarantine": recorded["quarantine"]}


def _reduce(storage_cfg, storage, root, files, keys, reused_idx, stats, P, parent, keep, sources, num_cpus, compact_fraction):
    read = sum(s["rows_read"] for s in stats)
    blank = sum(s["blank_lines"] for s in stats)
    if read == 0:
        raise CorpusError(f"the corpus is empty: 0 rows read from {len(files)} file(s) "
                          f"({blank} blank line(s)): {', '.join(files[:3])}{' ...' if len(files) > 3 else ''}")
    candidates = sum(sum(s["counts"]) for s in stats)
    clean_inputs, q_inputs = reduce_inputs(stats, P)
    digests = inputs_digests(stats, keys, P, limited=keep is not None)
    parents = {r["partition"]: r for r in parent["partitions"]} if parent is not None else {}
    recorded = {r["partition"]: r for r in ((parent or {}).get("inputs") or {}).get("partitions", [])}
    same = [p for p in range(P) if digests[p] is not None and p in parents and parents[p] is not None
            and (recorded.get(p) or {}).get("inputs") == digests[p]]
    where = f"corpus snapshot {parent['snapshot']}" if parent is not None else ""
    task = remote_function(reduce_partition, num_cpus=num_cpus)
    common = dict(golds=list(keep.golds) if keep else None, seed=keep.seed if keep else 0)

    keep_all, cut, n_extra = True, None, 0
    if keep is not None:
        n_extra = max(0, keep.limit - len(set(keep.golds)))
        sel = _get_all([task.remote(storage_cfg, root, p, files, clean_inputs[p], [], select=n_extra, **common)
                       for p in range(P)], "the corpus partitions' passage selection (benchmark.corpus_limit)")
        if sum(r["nongold"] for r in sel) > n_extra:
            keep_all = False
            best = heapq.nsmallest(n_extra, (k for r in sel for k in r["keys"]))
            cut = tuple(best[-1]) if best else None  # None with keep_all=False: no non-gold row is kept

    # A reused partition's file is still verified (a stream of its bytes, no parsing): a reused record must
    # point at intact bytes.
    verify = remote_function(verify_partition, num_cpus=num_cpus)
    # A partition that only gained rows of new files reads those alone, not its old chunks (an append).
    appended = set(appended_partitions(stats, keys, reused_idx, parent, P, limited=keep is not None)) - set(same)
    append = remote_function(append_partition, num_cpus=num_cpus)
    refs = {p: verify.remote(storage_cfg, root, parents[p], where) if p in same else
            append.remote(storage_cfg, root, p, files, clean_inputs[p], q_inputs[p], len(reused_idx), parent_rec=parents[p],
                          parent_inputs=recorded[p], parent_where=where, compact_fraction=compact_fraction)
            if p in appended and candidates > 0 and compact_fraction > 0 else
            task.remote(storage_cfg, root, p, files, clean_inputs[p], q_inputs[p], parent_rec=parents.get(p),
                        parent_where=where, cut=cut, keep_all=keep_all, write_parts=candidates > 0,
                        compact_fraction=compact_fraction, **common)
            for p in range(P)}
    got = dict(zip(refs, _get_all(list(refs.values()), "the corpus partitions' reduce")))
    results = [_reused_partition(parents[p], recorded[p]) if p in same else got[p] for p in range(P)]
    quarantine = [r["quarantine"] for r in results if r["quarantine"]]
    n_quarantined = sum(s["quarantined"] for s in stats) + sum(r["duplicates"] for r in results)
    kept = sum(r["rows"] for r in results)
    limited_out = sum(r["limited_out"] for r in results)
    if kept == 0:
        raise CorpusError(
            f"no usable passages: {read} row(s) read, {n_quarantined} quarantined "
            f"(see {join(root, 'corpus/quarantine')}: {', '.join(q['file'] for q in quarantine[:3])})"
        )
    if read != kept + n_quarantined + limited_out:  # every row is accounted for exactly once
        raise AssertionError(f"ingest lost rows: read {read} != kept {kept} + quarantined {n_quarantined} "
                             f"+ limited_out {limited_out}")
    corpus_hash = hashlib.sha256("".join(f"{r['partition']}:{r['digest']}\n" for r in results).encode()).hexdigest()
    parent_id = parent["snapshot"] if parent is not None else None
    changes = {k: sum(r["changes"][k] for r in results) for k in ("added", "changed", "removed", "unchanged")}
    limit = None
    if keep is not None:
        limit = {"requested": keep.limit, "golds": len(set(keep.golds)),
                 "golds_found": sum(r["golds_found"] for r in results),
                 "exceeded_by_golds": len(set(keep.golds)) > keep.limit}
    rows = {"read": read, "kept": kept, "quarantined": n_quarantined, "blank_lines": blank, "limited_out": limited_out}
    # The id covers everything the manifest says, so two snapshots never share a file:
    # the same clean rows with another quarantine or other sources are another snapshot.
    snapshot = hashlib.sha256(json.dumps([corpus_hash, parent_id, [q["sha256"] for q in quarantine], sources, rows, limit],
                                         sort_keys=True, default=str).encode()).hexdigest()[:16]
    manifest = {
        "kind": "corpus-snapshot",
        "snapshot": snapshot,
        "parent": parent_id,
        "num_partitions": P,
        "partitions": [r["record"] for r in results],
        "rows": rows,
        "quarantine": quarantine,
        "changes": changes,
        "corpus_hash": corpus_hash,
        # The id above hashes the real URIs; what is written has any presigned token or user:password@ masked.
        "sources": [{**s, "uri": redact(s["uri"])} for s in sources] if sources else sources,
        "limit": limit,
        # Per input file what its parse gave (reused by the next update); per partition what its reduce read.
        "inputs": {
            "files": file_records(files, keys, sources, stats),
            "partitions": [{"partition": r["partition"], "inputs": d, "duplicates": r["duplicates"],
                            "quarantine": r["quarantine"]} for r, d in zip(results, digests)],
            "parsed": [_shown(f, root) for i, f in enumerate(files) if i not in reused_idx],
            "reused": [_shown(f, root) for i, f in enumerate(files) if i in reused_idx],
            "partitions_reused": same,
            "partitions_appended": [r["partition"] for r in results if r.get("appended")],
        },
    }
    return write_sealed(storage, root, f"corpus/snapshots/{snapshot}.json", manifest)
