"""The question-quality step of the evaluate stage: what needs the run's storage, Ray or a model.

The measures and the per-unit tallies are pure (:mod:`xqg_ray.evaluation.question_quality`,
:mod:`xqg_ray.evaluation.quality`); here they meet committed files: the
generators' published manifests (summed, never reading a passage), the
held-out human questions' data files, and the round trip, where a seeded
sample of questions per language is re-encoded with the run's encoder in one
Ray task (a model host's call on the local cluster) and each ranked against
its own partition's passage vectors.
"""

from __future__ import annotations

from typing import Any, Callable, Dict, Iterable, List, Mapping, Optional

import pyarrow as pa
import pyarrow.compute as pc

from ..config.schema import PROVIDED_KIND
from ..evaluation.question_quality import (SAMPLE_PER_LANGUAGE, add_round_trip, question_flags, report_of, run_quality,
                                           sample_draws, sample_provided, tally)
from ..schemas import KEPT, UNFILTERED


# Per provided generator: the tallies of each data segment's live rows, so that an update recounts only
# its new segments (a sealed JSON; a cache: anything wrong with it is recomputed, never an error).
QUALITY_CACHE = "quality/{name}.json"
# The round trip's ranks, keyed by everything they depend on (the encoder, the embeddings files, the
# sampled questions, the partitions, the metric): a run whose inputs are unchanged loads no encoder.
# A cache like QUALITY_CACHE: anything wrong with it is recomputed.
ROUND_TRIP_CACHE = "quality/round_trip.json"


def provided_quality(storage: Any, root: str, manifest: Mapping[str, Any], name: str = "") -> Dict[str, Any]:
    """``{"unfiltered": quality_report}`` of a provided generator's questions (e.g. the held-out human ones),
    read from its data files: the reference figures beside a generator's (no exemplars: they never saw any).

    Read one segment of one partition at a time, so the driver holds one partition's questions, never
    the table: a first pass collects the languages (a question may be in any of them, or English, as
    :func:`quality_report` allows), a second tallies each segment's live rows with them; the merged
    tallies are :func:`quality_report` of all the rows (a duplicate is within one passage, whose rows
    lie in one segment).  With ``name``, each segment's languages and tallies are kept in
    :data:`QUALITY_CACHE`, keyed by its sha256 and its later segments' tombstones: an update that
    appends a delta segment reads only that one.
    """
    from ..store.integrity import IntegrityError
    from ..store.sealed import read_sealed, write_sealed
    from ..store.segments import dead_keys, live_mask, read_keyed, segments
    from ..store.ledger import fingerprint
    from ..store.storage import join

    rel = QUALITY_CACHE.format(name=name) if name else ""
    cache: Dict[str, Any] = {}
    if rel and storage.exists(join(root, rel)):
        try:
            cache = dict(read_sealed(storage, root, rel).get("segments", {}))
        except IntegrityError:
            cache = {}
    parts = []  # (cache key, segment, the segments after it) of every unit
    for u in manifest.get("units", []):
        segs = segments(u)
        for i, seg in enumerate(segs):
            key = fingerprint({"sha256": seg["sha256"], "dead": [t["tombstones"]["sha256"] for t in segs[i + 1:] if t.get("tombstones")]})
            parts.append((key, seg, segs[i + 1:]))

    def rows_of(seg: Dict[str, Any], later: List[Dict[str, Any]]) -> List[Dict[str, Any]]:
        t = read_keyed(storage, root, seg, ["id", "queries"], where="the generated manifest")
        if later:  # less the rows a later segment's tombstones name
            t = t.filter(pa.array(live_mask(t, dead_keys(storage, root, later, "the generated manifest"))))
        return [{"passage_id": pid, "lang": q["lang"], "text": q["text"]} for pid, qs in zip(t["id"].to_pylist(), t["queries"].to_pylist()) for q in qs]

    langs = set()
    for key, seg, later in parts:
        langs |= set(cache[key]["langs"]) if key in cache else {str(r["lang"]) for r in rows_of(seg, later)}
    allowed = sorted(langs | {"en"})
    tallies, kept = [], {}
    for key, seg, later in parts:
        hit = cache.get(key)
        if hit is None or hit.get("allowed") != allowed:
            rows = rows_of(seg, later)
            flags = question_flags(rows, None, allowed)
            by_lang: Dict[str, List[int]] = {}
            for i, r in enumerate(rows):
                by_lang.setdefault(str(r["lang"]), []).append(i)
            hit = {"langs": sorted(by_lang), "allowed": allowed,
                   "tallies": {lang: tally([str(rows[i]["text"] or "") for i in idx], [flags[i] for i in idx]) for lang, idx in by_lang.items()}}
        kept[key] = hit
        tallies.append(hit["tallies"])
    if rel and kept != cache:
        write_sealed(storage, root, rel, {"kind": "question-quality-cache", "segments": kept})
    return {UNFILTERED: report_of(tallies)}


def round_trip_task(root: str, storage_cfg: Any, encoder_cfg: Any, threads: int, embeddings: Mapping[int, Mapping[str, Any]],
                    samples: Mapping[str, List[Dict[str, Any]]], num_partitions: int, metric: str) -> Dict[str, List[int]]:
    """Ray task (a model host's call on the local cluster): generator -> the rank of each sampled question's own passage among its partition's
    passages (``embeddings``: partition -> the embeddings file record), under ``encoder_cfg``."""
    import numpy as np

    from ..models.factory import make_encoder
    from ..schemas import PASSAGE
    from ..store.segments import live_table
    from ..store.storage import Storage
    from ..evaluation.quality import round_trip_ranks

    storage, enc = Storage(storage_cfg), make_encoder(encoder_cfg, threads)
    parts: Dict[int, tuple] = {}
    out: Dict[str, List[int]] = {}
    for gen, rows in samples.items():
        vecs = enc.encode([r["text"] for r in rows], "query")
        ranks = [0] * len(rows)
        for p in sorted({int(r["id"]) % num_partitions for r in rows}):
            if p not in parts:
                t = live_table(storage, root, embeddings[p], ["kind", "id", "vector"], where="the embeddings manifest")  # every live segment
                t = t.filter(pc.equal(t["kind"], PASSAGE))
                ids = t["id"].to_numpy()
                parts[p] = (ids, np.asarray(t["vector"].combine_chunks().flatten().to_numpy(), np.float32).reshape(len(ids), -1))
            ids, pv = parts[p]
            idx = [i for i, r in enumerate(rows) if int(r["id"]) % num_partitions == p]
            row_of = {int(pid): k for k, pid in enumerate(ids)}
            got = round_trip_ranks(vecs[idx], [row_of[int(rows[i]["id"])] for i in idx], pv, metric, passage_ids=ids)
            for i, rank in zip(idx, got.tolist()):
                ranks[i] = int(rank)
        out[gen] = ranks
    return out


def read_run_quality(storage: Any, root: str, generators: Iterable[str]) -> Dict[str, Any]:
    """:func:`run_quality` of the ``generated/NAME`` manifests published under ``root`` (the evaluate stage's
    one call), plus :func:`provided_quality` for provided generators: a generating kind's figures come from
    its manifest alone."""
    from ..store.ledger import Ledger

    manifests = {name: Ledger(storage, root, f"generated/{name}").current() for name in generators}
    out = run_quality(manifests)
    for name, m in manifests.items():
        if m and m.get("generator", {}).get("kind") == PROVIDED_KIND and m.get("units"):
            out[name] = provided_quality(storage, root, m, name)
    return {name: out[name] for name in sorted(out)}


def cached_ranks(storage: Any, root: str, key: str) -> Optional[Dict[str, List[int]]]:
    """The ranks :data:`ROUND_TRIP_CACHE` holds for ``key``; None when it holds another key, none, or a damaged file."""
    from ..store.integrity import IntegrityError
    from ..store.sealed import read_sealed
    from ..store.storage import join

    if not storage.exists(join(root, ROUND_TRIP_CACHE)):
        return None
    try:
        cache = read_sealed(storage, root, ROUND_TRIP_CACHE)
    except IntegrityError:
        return None
    return cache["ranks"] if cache.get("key") == key else None


def seeded_reads(units: List[Dict[str, Any]], seed: int, generator: str, langs: Iterable[str],
                 read: Callable[[Dict[str, Any]], pa.Table], langs_of: Callable[[pa.Table], List[str]]) -> List[pa.Table]:
    """``read`` of each of ``units`` (a generator's manifest units), partitions in a seeded order, until every
    language of ``langs`` has SAMPLE_PER_LANGUAGE rows that can be sampled (``langs_of``: their languages)."""
    from ..ids import seed_for

    tables: List[pa.Table] = []
    have = {lang: 0 for lang in langs}
    for u in sorted(units, key=lambda u: seed_for(seed, "round-trip", generator, u["partition"])):
        if min(have.values()) >= SAMPLE_PER_LANGUAGE:
            break
        t = read(u)
        tables.append(t)
        for lang in langs_of(t):
            if lang in have:
                have[lang] += 1
    return tables


def measure_round_trip(ctx: Any, quality: Dict[str, Any]) -> None:
    """Round trip of every generating generator of ``quality``, and of every provided one in their languages,
    under the run's default encoder, in one Ray task or model-host call (see ``SAMPLE_PER_LANGUAGE``), or
    from :data:`ROUND_TRIP_CACHE` when nothing it depends on changed; adds it in place.  ``ctx``: the stage context."""
    from ..config.systems import DEFAULT_ENCODER, encoder_cfg
    from ..runtime.tasks import run_model_task
    from ..store.ledger import Ledger, fingerprint
    from ..store.sealed import write_sealed
    from ..store.segments import live_table
    from .context import encoder_key

    emb = Ledger(ctx.storage, ctx.root, "embeddings").current()
    gens = [g for g in quality if KEPT in quality[g]]
    if not emb or not gens:
        return
    # The provided (human) questions in the generators' languages: the reference their round trip is read
    # against (the report puts them side by side).
    gen_langs = sorted({lang for g in gens for lang in ctx.cfg.generators[g].languages})
    provided = [g for g in quality if g in ctx.cfg.generators and ctx.cfg.generators[g].kind == PROVIDED_KIND]
    embeddings = {u["partition"]: u for u in emb["units"]}
    seed = ctx.cfg.eval.seed
    samples, read = {}, {}
    for g in gens:
        units = Ledger(ctx.storage, ctx.root, f"generated/{g}").current()["units"]
        tables = seeded_reads(units, seed, g, ctx.cfg.generators[g].languages,
                              lambda u: live_table(ctx.storage, ctx.root, u["attempts"], where="the generated manifest"),
                              lambda t: t.filter(pc.or_(t[UNFILTERED], t[KEPT]))["lang"].to_pylist())
        samples[g], read[g] = sample_draws(tables, g, seed), len(tables)
    for g in provided:
        units = Ledger(ctx.storage, ctx.root, f"generated/{g}").current()["units"]
        tables = seeded_reads(units, seed, g, gen_langs,
                              lambda u: live_table(ctx.storage, ctx.root, u, ["id", "queries"], where="the generated manifest"),
                              # what sample_provided can draw: questions with text
                              lambda t: [q["lang"] for qs in t["queries"].to_pylist() for q in qs or () if (q["text"] or "").strip()])
        if rows := sample_provided(tables, g, seed, gen_langs):  # none in these languages: nothing to rank
            samples[g], read[g] = rows, len(tables)
    provided = [g for g in provided if g in samples]
    pool, enc = ctx.pool("encode"), encoder_cfg(ctx.cfg, DEFAULT_ENCODER)
    key = fingerprint({"encoder": encoder_key(enc), "embeddings": embeddings, "samples": samples,
                       "partitions": ctx.snapshot["num_partitions"], "metric": ctx.cfg.index.metric})
    ranks = cached_ranks(ctx.storage, ctx.root, key)
    if ranks is None:
        ranks = run_model_task(round_trip_task, (ctx.root, ctx.cfg.storage, enc, pool.torch_threads,
                                                 embeddings, samples, ctx.snapshot["num_partitions"], ctx.cfg.index.metric), pool)
        write_sealed(ctx.storage, ctx.root, ROUND_TRIP_CACHE, {"kind": "round-trip-cache", "key": key, "ranks": ranks})
    for g in gens + provided:
        add_round_trip(quality, {g: samples[g]}, ranks, {
            "per_language": SAMPLE_PER_LANGUAGE, "seed": seed, "encoder": "default", "partitions_read": read[g],
            "against": "the passages of the question's own partition (stored E(p)), exhaustive; ties by passage id"})


def question_quality(ctx: Any) -> Dict[str, Any]:
    """metrics.json's ``question_quality`` for the stage context ``ctx`` (the evaluate stage's one call):
    :func:`read_run_quality` of its generators, with :func:`measure_round_trip`."""
    quality = read_run_quality(ctx.storage, ctx.root, sorted(ctx.cfg.generators))
    measure_round_trip(ctx, quality)
    return quality
