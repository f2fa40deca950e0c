"""Benchmark stage: test questions (small, in the driver) and the corpus snapshot (streamed by Ray Data).

The stage is keyed by its settings and the sha256 of every input file, so an
edited source is new input, never a silently reused benchmark.  The corpus
goes through :func:`xqg_ray.ingest.ingest_corpus`, which writes partition
files and a snapshot manifest whose parent is the previous snapshot: that is
how a new version of the corpus becomes an incremental update.  For XQuAD the
benchmark builder (2,067 SQuAD paragraphs at most) runs in a Ray task and
hands the ingest a staged passage file, so the driver never holds passages.
"""

from __future__ import annotations

from typing import Any, Dict, List, Optional, Tuple

import pyarrow as pa

from ..benchmark.build import BenchmarkError, build_benchmark, xquad_files
from ..config import BenchmarkConfig, StorageConfig, section_dict
from ..config.secrets import mask_secrets, redact
from ..benchmark.corpus import list_corpus_files
from ..ids import passage_id
from ..ingest import KeepSpec, ingest_corpus
from ..ingest.snapshot import fingerprint_sources_cached
from ..store.integrity import IntegrityError, read_table_verified, write_table_committed
from ..store.sealed import read_sealed, write_sealed
from ..store.ledger import Ledger, fingerprint, missing_files
from .plan import plan_stage
from .records import BenchmarkManifest
from ..runtime.tasks import run_tasks
from ..store.storage import Storage, join
from .context import PIPELINE_VERSION, Context

STAGE = "benchmark"
# uri hash -> (stamp, bytes, sha256) of every input file last run: unchanged files are not read again.
FINGERPRINTS = f"{STAGE}/fingerprints.json"


def input_files(ctx: Context) -> List[str]:
    """Every file the benchmark is made from (their content is the stage's key)."""
    b, st = ctx.cfg.benchmark, ctx.storage
    if b.kind == "xquad":
        f = xquad_files(b.source, st, () if b.heldout_fraction > 0 else b.languages)
        return list(f.squad) + list(f.xquad.values())
    return list_corpus_files(st, b.corpus, ctx.cfg.corpus.format) + [b.queries]


def source_fingerprints(ctx: Context) -> List[Dict[str, Any]]:
    """``[{"uri", "bytes", "sha256"}]`` of :func:`input_files`, reading only the files changed since the last run.

    The cache is a sealed record under the output dir; a damaged or hand-edited
    one is ignored (every file is hashed again), never trusted.
    """
    cache: Dict[str, Any] = {}
    if ctx.storage.exists(join(ctx.root, FINGERPRINTS)):
        try:
            cache = read_sealed(ctx.storage, ctx.root, FINGERPRINTS).get("files", {})
        except IntegrityError:
            cache = {}
    got = fingerprint_sources_cached(ctx.cfg.storage, input_files(ctx), cache)
    if got.cache != cache:
        write_sealed(ctx.storage, ctx.root, FINGERPRINTS, {"kind": "input-fingerprints", "files": got.cache})
    return got.sources


def _build_tables(cfg: BenchmarkConfig, storage_cfg: StorageConfig, root: str, prefix: str) -> Dict[str, Any]:
    """Ray task: build the benchmark tables and write them as committed files; returns their records."""
    storage = Storage(storage_cfg)
    t = build_benchmark(cfg, storage)
    files: Dict[str, Any] = {}
    for name in ("corpus", "queries", "quarantine", "provided", "dev"):
        table = getattr(t, name)
        if table is not None:
            files[name] = write_table_committed(storage, root, f"{prefix}/{name}.parquet", table)
    langs = t.queries.column("lang").to_pylist()
    return {"files": files, "notes": t.notes, "extra": t.extra, "source": t.source,
            "languages": {lang: langs.count(lang) for lang in sorted(set(langs))},
            "evaluated": {"qids": t.queries["qid"].to_pylist(), "texts": list(zip(langs, t.queries["text"].to_pylist()))}}


def run_benchmark(ctx: Context) -> Tuple[Dict[str, Any], Dict[str, Any]]:
    """(benchmark manifest, corpus snapshot manifest); reused when settings and input bytes are unchanged."""
    cfg, led = ctx.cfg, Ledger(ctx.storage, ctx.root, STAGE)
    with ctx.timer.stage(STAGE) as s:
        sources = source_fingerprints(ctx)
        # compact_fraction decides how files are laid out (delta segments or whole), never what they hold: not in the key.
        corpus_settings = {k: v for k, v in section_dict(cfg.corpus).items() if k != "compact_fraction"}
        fp = fingerprint({"v": PIPELINE_VERSION, "benchmark": section_dict(cfg.benchmark), "corpus": corpus_settings,
                          "sources": [(x["uri"], x["sha256"]) for x in sources]})
        snapshots: Dict[str, Dict[str, Any]] = {}

        def snapshot_intact(m: Dict[str, Any]) -> bool:
            # The published benchmark is done only while its corpus snapshot and partition files are there too.
            if not ctx.storage.exists(join(ctx.root, m["snapshot_file"])):
                return False
            snapshots[m["snapshot_file"]] = read_sealed(ctx.storage, ctx.root, m["snapshot_file"])
            return not missing_files(ctx.storage, ctx.root, snapshots[m["snapshot_file"]])

        plan = plan_stage(led, fp, {}, ctx.resume, usable=snapshot_intact)
        m = plan.published
        if m is not None:
            s.update(rows=m["counts"]["passages"] + m["counts"]["queries_total"], reused=True)
            return m, snapshots[m["snapshot_file"]]
        prefix = f"{STAGE}/data/{fp[:16]}"
        built = run_tasks(_build_tables, [(cfg.benchmark, cfg.storage, ctx.root, prefix)], 1)[0]
        files = built["files"]
        if not built["languages"]:
            raise BenchmarkError("the benchmark has no queries: check benchmark.languages and the source")
        keep: Optional[KeepSpec] = None
        if cfg.benchmark.kind == "xquad":
            inputs = [f"{ctx.root.rstrip('/')}/{files.pop('corpus')['file']}"]
        else:
            inputs = list_corpus_files(ctx.storage, cfg.benchmark.corpus, cfg.corpus.format)
            if cfg.benchmark.corpus_limit > 0:
                keep = KeepSpec(golds=built["extra"]["golds"], limit=cfg.benchmark.corpus_limit, seed=cfg.benchmark.seed)
        prior = plan.current
        parent = None
        if prior is not None and ctx.storage.exists(join(ctx.root, prior["snapshot_file"])):
            parent = read_sealed(ctx.storage, ctx.root, prior["snapshot_file"], reset=f"{STAGE}/current.json")
        if parent is not None and parent["num_partitions"] != cfg.corpus.num_partitions:
            parent = None  # another layout: nothing to diff against
        if parent is not None and missing_files(ctx.storage, ctx.root, parent):
            parent = None  # a partition file was deleted: ingest everything again rather than diff against what is gone
        snap = ingest_corpus(cfg.storage, ctx.root, inputs, num_partitions=cfg.corpus.num_partitions, fmt=cfg.corpus.format,
                             chunk_bytes=cfg.corpus.read_chunk_mb << 20, parent=parent, keep=keep, sources=sources,
                             num_cpus=min(1.0, cfg.ray.actor_num_cpus), max_passage_chars=cfg.corpus.max_passage_chars,
                             compact_fraction=cfg.corpus.compact_fraction)
        _check_golds(ctx, snap, built["extra"].get("golds") or [], cfg.benchmark.queries)
        counts = {"passages": snap["rows"]["kept"], "queries": built["languages"], "queries_total": sum(built["languages"].values()),
                  "quarantined": snap["rows"]["quarantined"] + files["quarantine"]["rows"], "provided": files.get("provided", {}).get("rows", 0)}
        if "dev" in files:  # absent without a dev split, so such a manifest is as before
            counts["dev"] = files["dev"]["rows"]
        s["rows"] = counts["passages"] + counts["queries_total"]
        snapshot_file = f"corpus/snapshots/{snap['snapshot']}.json"
        m = led.publish(fp, BenchmarkManifest(
            kind=cfg.benchmark.kind, config=section_dict(mask_secrets(cfg.benchmark)),
            sources=[{**x, "uri": redact(x["uri"])} for x in sources], source=built["source"],
            snapshot=snap["snapshot"], snapshot_file=snapshot_file, parent_snapshot=snap.get("parent"),
            corpus_hash=snap["corpus_hash"], changes=snap["changes"], files=files, counts=counts,
            languages=sorted(built["languages"]), notes=built["notes"], evaluated=built["evaluated"],
            extra={k: v for k, v in built["extra"].items() if k != "golds"},
        ).to_json(), keep=[files[k]["file"] for k in files] + [FINGERPRINTS])
        # The corpus directory keeps exactly what the current snapshot names.
        Ledger(ctx.storage, ctx.root, "corpus").gc(snap, keep=[snapshot_file])
        return m, snap


def _check_golds(ctx: Context, snap: Dict[str, Any], golds: List[str], where: str) -> None:
    """Every gold passage of a query must be in the clean corpus, or the recall numbers lie."""
    if not golds:
        return
    import numpy as np

    from ..ingest.lookup import lookup_rows

    ids = np.array([passage_id(g) for g in golds], np.int64)
    found: set = set()
    for t in lookup_rows(ctx.root, ctx.cfg.storage, snap, ids, ctx.cfg.ray):
        found |= set(t["docid"].to_pylist())
    missing = sorted(set(golds) - found)
    if missing:
        raise BenchmarkError(f"{len(missing)} gold_docid(s) in {where} are not in the clean corpus (absent or quarantined), e.g. {missing[:5]}")


def load_queries(ctx: Context) -> pa.Table:
    """The evaluated questions (small: they stay in the driver), verified against the benchmark manifest."""
    return read_table_verified(ctx.storage, ctx.root, ctx.bench["files"]["queries"], where="the benchmark manifest")


def load_dev(ctx: Context) -> Optional[pa.Table]:
    """The dev questions (``benchmark.dev_fraction``), verified; None when the benchmark has none."""
    rec = ctx.bench["files"].get("dev")
    return None if rec is None else read_table_verified(ctx.storage, ctx.root, rec, where="the benchmark manifest")
