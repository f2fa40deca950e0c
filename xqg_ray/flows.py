"""The job as an ordered list of stages: ``run(cfg)`` (build or update) and ``prepare(cfg)``.

Each stage reads committed files and writes its own; only manifests and the
test questions' top-k pass through here.  Rerunning the same command resumes
(skips every committed unit) and, pointed at a new version of the corpus,
updates incrementally: a new corpus snapshot with a parent, generation and
encoding of the added and changed passages only, index shards updated in place
of rebuilt, and search and evaluation only for systems whose index or query
vectors changed (the ``results/`` ledger, :mod:`xqg_ray.stages.results`).
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Any, Dict, Iterator, Tuple

from .arrow_utils import arrow_to_vectors
from .config import RunConfig, to_yaml
from .store.integrity import read_table_verified
from .config.preflight import preflight, preflight_index
from .progress import StageTimer
from .runtime.capacity import check_schedulable
from .runtime.cluster import init_ray
from .runtime.devices import resolve_generator_dtypes
from .runtime.units import threads_for
from .stages.context import Context
from .stages.encode import run_encode
from .stages.evaluate import evaluate
from .stages.generate import run_generate
from .stages.index import run_index
from .stages.prepare import load_dev, load_queries, run_benchmark
from .stages.results import ResultStore
from .stages.search import run_search
from .stages.train import pin_trained, run_train, training_metrics
from .store.lock import hold_output
from .store.storage import Storage, check_writable, join
from .config.systems import encoders_used
from .config.schema import DEV_QUERY_SET


@contextmanager
def job_context(cfg: RunConfig, whole_job: bool) -> Iterator[Context]:
    """The context stages run in, held for the run: the config checked, the output directory locked,
    the cluster up and (``whole_job``) sized for every pool, generators' ``dtype: auto`` resolved
    for it, and the config as resolved saved as ``config.yaml``."""
    preflight(cfg)  # every value that can fail late, before any work
    storage = Storage(cfg.storage)
    check_writable(storage, cfg.output_dir)  # the bucket exists, the directory can be written
    with hold_output(storage, cfg.output_dir):  # one writer per output directory, until the run ends
        init_ray(cfg.ray)
        if whole_job:  # `prepare` starts no actor pool and no search actor
            check_schedulable(cfg)  # every pool and the search actors fit the cluster, before any work
            cfg = resolve_generator_dtypes(cfg)  # dtype auto: bfloat16 where the generate pool's CPU computes it fast
        storage.write_text(join(cfg.output_dir, "config.yaml"), to_yaml(cfg))  # as resolved: what the run computes in
        yield Context(cfg=cfg, storage=storage, root=cfg.output_dir, timer=StageTimer(), threads=threads_for(cfg.ray))


def prepare(cfg: RunConfig) -> Dict[str, Any]:
    """Only the benchmark stage (questions + corpus snapshot); returns the benchmark manifest."""
    with job_context(cfg, whole_job=False) as ctx:
        ctx.bench, ctx.snapshot = run_benchmark(ctx)
        return ctx.bench


def run(cfg: RunConfig) -> Dict[str, Any]:
    """Run (or resume, or update) the whole job for ``cfg``; returns the contents of metrics.json."""
    with job_context(cfg, whole_job=True) as ctx:
        cfg = ctx.cfg  # as resolved for this cluster (generators' dtype auto)
        ctx.bench, ctx.snapshot = run_benchmark(ctx)
        preflight_index(ctx)  # the index factory can train on the smallest shard, before generation
        gens = {name: run_generate(ctx, name) for name in dict.fromkeys(s.generator for s in cfg.systems if s.generator)}
        trained = run_train(ctx, gens)
        # From here on a trained encoder's model is trained:NAME@KEY: its encodings are keyed by the artifact.
        ctx.cfg = pin_trained(cfg, trained)
        embs, qms = {}, {}
        for enc in encoders_used(cfg):  # one pool per encoder; every encoder reads the same generated queries
            embs[enc], qms[enc] = run_encode(ctx, gens, enc)
        queries, dev = load_queries(ctx), load_dev(ctx)
        indexes = run_index(ctx, embs)
        results, store = search_or_reuse(ctx, indexes, qms, queries, dev)
        metrics = evaluate(ctx, queries, results, indexes, store, dev=dev, training=training_metrics(cfg, trained))
        store.publish()
        return metrics


def search_or_reuse(ctx: Context, indexes: Dict[str, Dict[str, Any]], qms: Dict[str, Dict[str, Any]],
                    queries: Any, dev: Any = None) -> Tuple[Dict[str, Dict[str, Tuple[Any, Any]]], ResultStore]:
    """Per query set and system, the merged top-k: from the results ledger where its index and
    query vectors are unchanged, searched (and committed) otherwise; no shard actor starts when
    nothing is left to search.  ``dev``: the dev questions (the ``dev`` query set holds them), or None."""
    cfg = ctx.cfg
    pairs: Dict[str, Dict[str, str]] = {}
    for enc, qm in qms.items():
        for qset, rec in qm["sets"].items():
            pairs.setdefault(qset, {}).update({sc.name: rec["sha256"] for sc in cfg.systems if sc.encoder == enc})
    store = ResultStore(ctx, indexes, pairs)
    # The order systems are evaluated and reported in: query set, then encoder, then config order.
    results: Dict[str, Dict[str, Tuple[Any, Any]]] = {qset: dict.fromkeys(systems) for qset, systems in pairs.items()}
    jobs: Dict[str, list] = {}
    for enc, qm in qms.items():
        mine = [sc.name for sc in cfg.systems if sc.encoder == enc]
        for qset, rec in qm["sets"].items():
            results[qset].update({n: store.searched(qset, n) for n in mine})
            todo = [n for n in mine if results[qset][n] is None]
            if not todo:
                continue
            # Every query set (clean, each perturbation) on every system of this encoder not searched before.
            qt = read_table_verified(ctx.storage, ctx.root, rec, ["qid", "vector"], where="the queries manifest")
            expected = dev if qset == DEV_QUERY_SET else queries
            if expected is None or qt["qid"].to_pylist() != expected["qid"].to_pylist():
                raise RuntimeError(f"query set {qset!r} does not hold the benchmark's questions in order")
            jobs.setdefault(qset, []).append((todo, arrow_to_vectors(qt["vector"])))
    with ctx.timer.stage("search") as s:
        if jobs:
            searched = sorted({n for parts in jobs.values() for names, _ in parts for n in names})
            fresh = run_search(ctx, {n: indexes[n] for n in searched}, jobs)
            for qset, res in fresh.items():
                for name, (d, i) in res.items():
                    store.commit_search(qset, name, d, i)
                    results[qset][name] = (d, i)
        s["rows"] = sum(len(q) * len(names) for parts in jobs.values() for names, q in parts)
        s["reused"] = not jobs
    return results, store


__all__ = ["run", "prepare", "job_context"]
