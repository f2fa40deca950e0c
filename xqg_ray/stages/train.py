"""Train stage: fine-tune every encoder a system names as ``trained:NAME``, on pairs from committed files.

Runs after generate and before encode (``flows.run``).  For each training a
system's encoder uses, the pairs come from committed files only: a generator's
output (its ``kept`` selection rebuilt from ``generated/NAME/attempts/``, or
the data files' ``unfiltered`` queries) or the benchmark's held-out human
questions, joined with the corpus partitions one partition at a time, then
passed through the leak guard against the benchmark's evaluated questions and,
with ``max_pairs``, a seeded bottom-k sample kept while reading
(``training.pairs.keep_smallest``): the driver's memory is bounded by
``max_pairs``, not by the number of pairs.
:func:`~xqg_ray.training.run.train_or_reuse` trains (on Ray Train) or reuses
the artifact keyed by the base encoder, the pairs' content and the settings.

The run's later stages then see each trained encoder's model pinned to
``trained:NAME@KEY`` (:func:`pin_trained`): the encode fingerprint holds the
artifact key, so a retrain re-encodes and a reuse does not, and the encode
actors load the artifact's files, sha256-checked (``artifact.resolve_encoder``).
"""

from __future__ import annotations

import copy
from collections import Counter
from typing import Any, Dict, Iterator, List, Optional, Tuple

import pyarrow as pa

from ..config import HUMAN_PAIRS, RunConfig, TrainConfig, encoder_cfg, encoder_label, encoders_used, trained_name
from ..schemas import UNFILTERED
from ..store.integrity import read_table_verified
from ..store.ledger import file_record
from ..store.segments import live_table
from ..training.artifact import pinned_spec
from ..training.pairs import generated_pairs, guard_pairs, keep_smallest, provided_pairs, sampled_pairs, set_aside_counts
from ..training.run import train_or_reuse
from .context import Context
from .generate import queries_table, run_generate

STAGE = "train"
CORPUS_COLUMNS = ["id", "content_hash", "title", "text"]
# A pair's `source` for the held-out human questions; a generator's is gen:NAME.
HUMAN_SOURCE = "human"


def trainings_used(cfg: RunConfig) -> List[str]:
    """The trainings some system's encoder names (``trained:NAME``), in the order the encoders are used."""
    names = [trained_name(encoder_cfg(cfg, enc).model) for enc in encoders_used(cfg)]
    return list(dict.fromkeys(n for n in names if n is not None))


def pairs_source(t: TrainConfig) -> str:
    """What a training's pairs are (``human`` or ``gen:NAME``): the pairs' ``source`` column and metrics' name for it."""
    return HUMAN_SOURCE if t.pairs == HUMAN_PAIRS else f"gen:{t.pairs}"


def base_view(cfg: RunConfig) -> RunConfig:
    """``cfg`` with every ``trained:NAME`` encoder's model replaced by its base's: what the checks before
    training can load (the trained weights have the base's architecture, dimension and tokenizer)."""
    if not any(trained_name(e.model) for e in cfg.encoders.values()):
        return cfg
    out = copy.deepcopy(cfg)
    for e in out.encoders.values():
        name = trained_name(e.model)
        if name is not None and name in cfg.trainings:
            e.model = encoder_cfg(cfg, cfg.trainings[name].encoder).model
    return out


def pin_trained(cfg: RunConfig, trained: Dict[str, Dict[str, Any]]) -> RunConfig:
    """``cfg`` with each trained encoder's model pinned to ``trained:NAME@KEY`` (``trained``: :func:`run_train`'s result)."""
    if not trained:
        return cfg
    out = copy.deepcopy(cfg)
    for e in out.encoders.values():
        name = trained_name(e.model)
        if name in trained:
            e.model = pinned_spec(name, trained[name]["manifest"]["key"])
    return out


def _corpus(ctx: Context, part: Dict[str, Any]) -> pa.Table:
    return live_table(ctx.storage, ctx.root, file_record(part), CORPUS_COLUMNS, where="the corpus snapshot")


def generator_partition_pairs(ctx: Context, name: str, manifest: Dict[str, Any], questions: str) -> Iterator[Tuple[pa.Table, pa.Table]]:
    """(pairs, set aside) of each partition from generator ``name``'s published output: the ``kept``
    selection rebuilt from its attempts files, or the data files' (``unfiltered``) queries."""
    g = ctx.cfg.generators[name]
    units = {u["partition"]: u for u in manifest["units"]}
    where = f"the generated/{name} manifest"
    for part in ctx.snapshot["partitions"]:
        u = units[part["partition"]]
        if questions != UNFILTERED:
            draws = live_table(ctx.storage, ctx.root, u["attempts"], where=where)
            gen = queries_table(draws, g.languages, g.n_per_language, questions)
        else:
            gen = live_table(ctx.storage, ctx.root, u, ["id", "content_hash", "queries", "failed"], where=where)
        yield generated_pairs(gen, _corpus(ctx, part), f"gen:{name}")


def human_partition_pairs(ctx: Context) -> Iterator[Tuple[pa.Table, pa.Table]]:
    """(pairs, set aside) of each partition holding held-out human questions' passages, joined with its corpus."""
    provided = read_table_verified(ctx.storage, ctx.root, ctx.bench["files"]["provided"], where="the benchmark manifest")
    of = provided["id"].to_numpy() % ctx.snapshot["num_partitions"]  # a passage's partition: id mod partitions
    for part in ctx.snapshot["partitions"]:
        mine = provided.filter(pa.array(of == part["partition"]))
        if mine.num_rows:
            yield provided_pairs(mine, _corpus(ctx, part), HUMAN_SOURCE)


def training_pairs(ctx: Context, t: TrainConfig, gens: Dict[str, Dict[str, Any]]) -> Tuple[pa.Table, Dict[str, int], int]:
    """(guarded pairs, rows set aside per reason, guarded pairs before the sample) of training ``t``.

    Guarded: no evaluated question, nor a translation of one, nor a duplicate.  The
    guard runs per partition (a pair's passage id names its partition, so duplicates
    share one), and ``t.max_pairs`` > 0 keeps a seeded bottom-k sample of the guarded
    pairs while reading, so the driver holds the sample and one partition's pairs.
    """
    parts = human_partition_pairs(ctx) if t.pairs == HUMAN_PAIRS else generator_partition_pairs(ctx, t.pairs, gens[t.pairs], t.questions)
    evaluated = ctx.bench.get("evaluated") or {}
    sample, aside, candidates = None, Counter(), 0
    for pairs, unusable in parts:
        kept, leaks = guard_pairs(pairs, evaluated)
        aside.update(set_aside_counts(unusable))
        aside.update(set_aside_counts(leaks))
        candidates += kept.num_rows
        sample = keep_smallest(sample, kept, t.max_pairs, t.seed)
    return sampled_pairs(sample), {r: aside[r] for r in sorted(aside)}, candidates


def run_train(ctx: Context, gens: Dict[str, Dict[str, Any]]) -> Dict[str, Dict[str, Any]]:
    """NAME -> ``{"manifest": artifact manifest, "reused": bool}`` of every training a system uses.

    ``gens``: the generators' published manifests the run already has; a generator
    only a training reads is run here (its stage reuses committed output as any other).
    """
    names = trainings_used(ctx.cfg)
    out: Dict[str, Dict[str, Any]] = {}
    if not names:
        return out
    gens = dict(gens)
    for name in names:
        src = ctx.cfg.trainings[name].pairs
        if src != HUMAN_PAIRS and src not in gens:
            gens[src] = run_generate(ctx, src)
    with ctx.timer.stage(STAGE) as s:
        trained_rows = 0
        for name in names:
            t = ctx.cfg.trainings[name]
            pairs, aside, candidates = training_pairs(ctx, t, gens)
            extra = {"source": pairs_source(t), "questions": None if t.pairs == HUMAN_PAIRS else t.questions, "set_aside": aside,
                     "candidates": candidates}
            ctx.timer.event(STAGE, "training", name=name, pairs=pairs.num_rows, candidates=candidates, set_aside=sum(aside.values()))
            done = train_or_reuse(ctx.storage, ctx.root, name, pairs, encoder_cfg(ctx.cfg, t.encoder), t, extra)
            out[name] = {"manifest": done.manifest, "reused": done.reused}
            trained_rows += 0 if done.reused else pairs.num_rows
        s["rows"] = trained_rows
        s["reused"] = all(v["reused"] for v in out.values())
    return out


def training_metrics(cfg: RunConfig, trained: Dict[str, Dict[str, Any]]) -> Optional[Dict[str, Any]]:
    """metrics.json's ``training``: per training, its base, pairs, cost, loss and whether it was reused (None: no training)."""
    if not trained:
        return None
    out: Dict[str, Any] = {}
    for name, t in trained.items():
        m = t["manifest"]
        p = m["pairs"]
        out[name] = {
            "base": {"encoder": encoder_label(cfg.trainings[name].encoder), "model": m["base"]["model"]},
            "key": m["key"],
            # candidates: the guarded pairs before the max_pairs sample (an artifact from before it: all of them).
            "pairs": {"source": p["source"], "questions": p.get("questions"), "rows": p["rows"],
                      "candidates": p.get("candidates", p["rows"]), "set_aside": p.get("set_aside", {})},
            "settings": m["train"],
            "cost": {k: m["cost"][k] for k in ("steps", "epochs", "pairs_per_epoch", "loop_seconds", "wall_seconds", "pairs_per_s")},
            "loss": m["loss"],
            "reused": t["reused"],
        }
    return out


__all__ = ["HUMAN_SOURCE", "STAGE", "base_view", "generator_partition_pairs", "human_partition_pairs", "pairs_source", "pin_trained", "run_train",
           "training_metrics", "training_pairs", "trainings_used"]
