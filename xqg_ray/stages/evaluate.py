"""Evaluate stage: run files, per-query metrics, paired comparisons and metrics.json (the report package draws).

The driver reads the texts of the retrieved passages only: the ids in the
test questions' top-k are looked up in their corpus partitions by Ray tasks,
one per partition that holds any of them (:mod:`xqg_ray.ingest.lookup`).
"""

from __future__ import annotations

from typing import Any, Dict, List, Optional, Tuple

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from ..evaluation import metrics as M
from .question_quality import question_quality
from ..ingest.lookup import lookup_rows
from ..store.storage import join
from ..schemas import CLEAN
from ..config.schema import DEV_QUERY_SET
from ..evaluation.coverage import apply_coverage, covered_per_query
from ..report.write import write_report
from .context import Context
from .results import ResultStore


def metric_names(ctx: Context) -> List[str]:
    e = ctx.cfg.eval
    return M.metric_names(e.kt, e.recall_k, e.mrr_k)


def lookup_passages(ctx: Context, ids: np.ndarray) -> Dict[int, Tuple[str, str]]:
    """id -> (docid, text) for the given (retrieved) passage ids only."""
    ids = np.unique(ids[ids >= 0])
    out: Dict[int, Tuple[str, str]] = {}
    for t in lookup_rows(ctx.root, ctx.cfg.storage, ctx.snapshot, ids, ctx.cfg.ray, storage=ctx.storage):
        out.update(zip(t["id"].to_pylist(), zip(t["docid"].to_pylist(), t["text"].to_pylist())))
    missing = set(ids.tolist()) - set(out)
    if missing:
        raise RuntimeError(f"{len(missing)} retrieved ids are not in the corpus snapshot, e.g. {sorted(missing)[:3]}")
    return out


def project_order(scores: np.ndarray, ids: np.ndarray) -> np.ndarray:
    """Positions of the valid hits (id >= 0) in the project's ranking: score descending, then passage id ascending."""
    keep = np.flatnonzero(np.asarray(ids) >= 0)
    s, p = np.asarray(scores, np.float32)[keep], np.asarray(ids, np.int64)[keep]
    return keep[np.lexsort((p, -s))]


def strictly_decreasing(scores: np.ndarray) -> np.ndarray:
    """float32 ``scores`` (non-increasing, in rank order) made strictly decreasing: each score that does
    not fall below the one before it becomes that one stepped down by one float32 ulp."""
    out = np.asarray(scores, np.float32).copy()
    for r in range(1, len(out)):
        if out[r] >= out[r - 1]:
            out[r] = np.nextafter(out[r - 1], np.float32(-np.inf))
    return out


def write_runs(ctx: Context, name: str, queries: pa.Table, d: np.ndarray, i: np.ndarray, docs: Dict[int, Tuple[str, str]], where: str = "runs",
               xor: bool = True) -> Dict[str, List[str]]:
    """TREC run and (``xor``) XOR-Retrieve prediction JSON; returns qid -> ranked docids.

    Tie rule: the project ranks by score descending, then passage id
    ascending -- the run file, the prediction JSON and the metrics (which use
    the returned rankings) all in that order.  TREC tools re-sort a run by
    score, then docno descending, so the run file's scores are written at full
    float32 round-trip precision (``%.9g``) and, where equal, stepped down by
    one float32 ulp per tied position (:func:`strictly_decreasing`): any TREC
    tool then reproduces the project's ranks exactly.
    """
    max_tokens = max(ctx.cfg.eval.kt) * 1000
    lines, preds, rankings = [], [], {}
    for qid, lang, row_d, row_i in zip(queries["qid"].to_pylist(), queries["lang"].to_pylist(), d, i):
        order = project_order(row_d, row_i)
        hits = [int(p) for p in np.asarray(row_i, np.int64)[order]]
        scores = strictly_decreasing(np.asarray(row_d, np.float32)[order])
        docids = [docs[p][0] for p in hits]
        rankings[qid] = docids
        lines += [f"{qid} Q0 {docids[r - 1]} {r} {float(score):.9g} {name}" for r, score in enumerate(scores, 1)]
        if not xor:
            continue
        # Only the passages the metric can read: word_tokenize never yields fewer
        # tokens than whitespace splitting, so N*1000 whitespace tokens suffice.
        ctxs, n = [], 0
        for p in hits:
            if n >= max_tokens:
                break
            ctxs.append(docs[p][1])
            n += len(docs[p][1].split())
        preds.append({"id": qid, "lang": lang, "ctxs": ctxs})
    ctx.storage.write_text(join(ctx.root, where, f"{name}.trec"), "\n".join(lines) + "\n")
    if xor:
        ctx.storage.write_json(join(ctx.root, where, f"{name}.xor.json"), preds)
    return rankings


def question_rows(queries: pa.Table) -> List[Dict[str, Any]]:
    """(qid, lang, answers, gold_docid) of each question, as the per-query metrics read them."""
    return [{"qid": a, "lang": b, "answers": c, "gold_docid": g} for a, b, c, g in zip(
        queries["qid"].to_pylist(), queries["lang"].to_pylist(), queries["answers"].to_pylist(), queries["gold_docid"].to_pylist())]


def evaluate(ctx: Context, queries: pa.Table, results: Dict[str, Dict[str, Tuple[np.ndarray, np.ndarray]]],
             index_manifests: Dict[str, Dict[str, Any]], store: Optional[ResultStore] = None,
             dev: Optional[pa.Table] = None, training: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
    """Runs, per-query metrics, comparisons, experiments, metrics.json, report.md and plots.

    ``results``: query set ("clean", a perturbation or "dev") -> system -> merged (D, I).
    ``store``: the run's results ledger; a (query set, system) it has evaluated
    is copied back from it, every other one is evaluated and committed to it.
    ``dev``: the dev questions of the ``dev`` query set; their metrics feed the
    tuning (``eval.tune_on``) only, never a comparison or a headline table.
    ``training``: the train stage's facts (``stages.train.training_metrics``), metrics.json's
    ``training`` when the run trained an encoder.  Returns metrics.json's content.
    """
    from ..evaluation import experiments as X
    from ..evaluation.tuning import tune, tune_groups
    from ..evaluation.significance import compare
    from ..config.systems import baseline_of, comparisons as pairs, tune_candidates

    names = metric_names(ctx)
    e = ctx.cfg.eval
    with ctx.timer.stage("evaluate") as s:
        # Only the passages of the (query set, system) pairs not evaluated before are looked up.
        todo = [i.reshape(-1) for qset, res in results.items() for name, (_, i) in res.items()
                if store is None or store.evaluated(qset, name) is None]
        docs = lookup_passages(ctx, np.concatenate(todo)) if todo else {}
        text_of = {docid: text for docid, text in docs.values()}
        tokens_of: Dict[str, List[str]] = {}  # every (query set, system) below reads the same passages: tokenized once
        tables = {qset: dev if qset == DEV_QUERY_SET else queries for qset in results}
        rows_of = {qset: question_rows(t) for qset, t in tables.items()}
        per_query_sets: Dict[str, Dict[str, pa.Table]] = {}
        for qset, res in results.items():
            # The clean questions keep the plain paths; a perturbation or the dev questions get their own directory.
            sub = "" if qset == CLEAN else "dev/" if qset == DEV_QUERY_SET else f"perturbed/{qset}/"
            where = f"runs/{sub}".rstrip("/")
            per_query_sets[qset] = {}
            for name, (d, i) in res.items():
                paths = {"per_query": join(ctx.root, f"per_query/{sub}{name}.parquet"), "trec": join(ctx.root, where, f"{name}.trec")}
                if qset != DEV_QUERY_SET:
                    # The XOR-Retrieve prediction file is what its official evaluation reads: for evaluated
                    # questions only (on the demo the dev ones' would add 10 files of 25 MB, and their copies).
                    paths["xor"] = join(ctx.root, where, f"{name}.xor.json")
                done = store.evaluated(qset, name) if store is not None else None
                if done is not None:
                    # The same top-k, questions, corpus and settings: the committed files, byte for byte.
                    data = {f: store.read(done[f]) for f in paths}
                    for f, uri in paths.items():
                        ctx.storage.write_bytes(uri, data[f])
                    t = pq.read_table(pa.BufferReader(data["per_query"]))
                else:
                    ranks = write_runs(ctx, name, tables[qset], d, i, docs, where=where, xor="xor" in paths)
                    t = M.per_query_metrics(rows_of[qset], ranks, text_of, kt=tuple(e.kt), recall_ks=tuple(e.recall_k), mrr_k=e.mrr_k,
                                             token_cache=tokens_of)
                    ctx.storage.write_table(paths["per_query"], t)
                    if store is not None:
                        store.commit_eval(qset, name, {f: ctx.storage.read_bytes(uri) for f, uri in paths.items()})
                per_query_sets[qset][name] = t
        # Languages an encoder does not cover (mUSE: el, hi, vi) are marked, not scored.
        per_query_sets = {q: covered_per_query(ctx.cfg, t, names) for q, t in per_query_sets.items()}
        dev_per_query = per_query_sets.pop(DEV_QUERY_SET, None)  # tuning's alone: out of every table below
        per_query = per_query_sets[CLEAN]
        systems = apply_coverage(ctx.cfg, {name: M.aggregate(t, names) for name, t in per_query.items()}, names)
        s["rows"] = sum(len(rows_of[q]) * len(r) for q, r in results.items())
    with ctx.timer.stage("compare") as s:
        cmp_kw = {"n_boot": e.bootstrap_samples, "seed": e.seed, "n_perm": e.permutation_samples}
        comparisons = []
        for pr in pairs(ctx.cfg):
            rows = compare({pr["baseline"]: per_query[pr["baseline"]], pr["system"]: per_query[pr["system"]]}, pr["baseline"], names, **cmp_kw)
            comparisons += [{**r, "scope": pr["scope"]} for r in rows]
        experiments = {
            "sweeps": X.sweeps(ctx.cfg, per_query, comparisons, names, e.bootstrap_samples, e.seed),
            "robustness": X.robustness(per_query_sets, names, compare, e.bootstrap_samples, e.seed, e.permutation_samples),
            "languages": X.languages(ctx.cfg, per_query, names, e.bootstrap_samples, e.seed),
        }
        # Each sweep's value, and each tuning group's system, is chosen on the dev questions only (never on the evaluated ones).
        on_dev = e.tune_on == "dev" and bool(dev_per_query)
        headline = M.metric_names((), (), e.mrr_k)[0]
        tuning = tune(experiments["sweeps"], dev_per_query, headline) if on_dev else {}
        by_name = {x.name: x for x in ctx.cfg.systems}
        groups = tune_groups({g: tune_candidates(ctx.cfg, members) for g, members in e.tune_groups.items()},
                             {g: baseline_of(ctx.cfg, by_name[members[0]]) for g, members in e.tune_groups.items()}, dev_per_query, headline,
                             lambda name: X.tuned_figures(name, per_query, comparisons, names, headline, e.bootstrap_samples, e.seed)) \
            if on_dev else {}
        s["rows"] = len(comparisons)
    # Facts about the systems come from the sealed index manifests, not from the config.
    facts = ("alpha", "aggregation", "n", "generator", "questions", "encoder", "encoder_name", "embeddings", "query_counts", "num_shards", "factory", "metric", "dim", "corpus_hash", "snapshot", "ntotal")
    result = {
        "benchmark": {
            "kind": ctx.cfg.benchmark.kind,
            "passages": ctx.snapshot["rows"]["kept"],
            "queries": queries.num_rows,
            **({"dev_questions": dev.num_rows} if dev is not None else {}),
            "languages": sorted(set(queries["lang"].to_pylist())),
            "corpus_hash": ctx.snapshot["corpus_hash"],
            "snapshot": ctx.snapshot["snapshot"],
            "parent_snapshot": ctx.snapshot.get("parent"),
            "changes": ctx.snapshot.get("changes"),
        },
        "tokenizer": M.TOKENIZER,
        "metric_names": names,
        "systems": systems,
        "comparisons": comparisons,
        "experiments": experiments,
        **({"tuning": tuning} if tuning else {}),
        **({"tuning_groups": groups} if groups else {}),
        "indexes": {n: {k: m.get(k) for k in facts} for n, m in index_manifests.items()},
        "stages": ctx.timer.stages,
    }
    if training:
        result["training"] = training
    result["question_quality"] = question_quality(ctx)
    write_report(ctx.storage, ctx.root, result)  # sets result["plots"]
    ctx.storage.write_json(join(ctx.root, "metrics.json"), result)
    return result
