"""Generate stage: queries for every passage, one corpus partition per unit, reused per passage.

A unit's key is (generator settings, the partition's digest): an unchanged
partition is skipped outright.  A changed partition reuses the earlier output
rows whose (id, content_hash) still exist and generates only added and changed
passages; removed passages simply are not carried over.  A small change of a
partition (within ``corpus.compact_fraction``) writes only the added and changed
passages' rows, as a delta segment of each file the unit writes (its queries,
its draws) with tombstones of the prior rows that died
(:mod:`xqg_ray.store.segments`); every reader reads the live rows.
"""

from __future__ import annotations

from typing import Any, Dict, List, Optional, Tuple

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ..arrow_utils import vectors_to_arrow
from ..config import GeneratorConfig, StorageConfig, section_dict
from ..store.integrity import write_table_committed
from ..store.ledger import Ledger, file_record, fingerprint, row_counts
from ..store.segments import NO_KIND, append_segment, delta_allowed, live_table, segment_source
from .plan import Plan, plan_stage
from .records import GeneratedEntry, GeneratedManifest, GenerateUnit, entries
from ..runtime.units import UnitRunner, iter_progress, run_units
from .reuse import split_reuse, version_keys
from ..config.schema import PER_LANGUAGE_LAYOUT, PROVIDED_KIND, ROUND_TRIP, TORCH_RUNTIME
from ..config.systems import DEFAULT_ENCODER, encoder_cfg
from ..evaluation.question_filter import replay, selection
from ..models.prompts import prompt_assets_sha256
from ..evaluation.question_quality import filter_counts, sum_filter_counts, unit_quality
from ..schemas import ATTEMPTS_SCHEMA, ATTEMPTS_VERSION, GENERATED_SCHEMA, QUERY_LIST_TYPE, SET_ASIDE_SCHEMA, UNFILTERED, passage_vectors_schema
from ..store.storage import Storage
from .context import PIPELINE_VERSION, Context, encoder_key
from .provided import ProvidedQueries, provided_slices, provided_source


def generator_settings(g: GeneratorConfig) -> Dict[str, Any]:
    """A generator's section as its key and manifest show it: ``runtime`` only when not torch.

    Every config from before runtimes ran on torch: its key and manifest stay what they were,
    and questions from another runtime never reuse (nor are reused as) torch's.
    """
    gen = section_dict(g)
    if gen["runtime"] == TORCH_RUNTIME:
        del gen["runtime"]
    if gen["prompt_layout"] == PER_LANGUAGE_LAYOUT:  # as runtime: configs from before layouts keep their keys
        del gen["prompt_layout"]
    if ROUND_TRIP not in g.filters.enabled:  # its settings change nothing: keys from before the round trip stay
        gen["filters"].pop("round_trip_top_k", None)
        gen["filters"].pop("fill_empty", None)
    if not g.filters.draw_ahead:  # as runtime: keys from before draws ahead stay
        gen["filters"].pop("draw_ahead", None)
    return gen


def round_trip_judge(ctx: Context, name: str) -> Optional[Dict[str, Any]]:
    """The round-trip judge's settings of generator ``name`` (the run's default encoder and the index's
    metric), None when its filters do not name ``round_trip``."""
    g = ctx.cfg.generators[name]
    if g.kind == PROVIDED_KIND or ROUND_TRIP not in g.filters.enabled:
        return None
    enc = encoder_cfg(ctx.cfg, DEFAULT_ENCODER)
    return {"encoder": enc, "metric": ctx.cfg.index.metric, "fp": encoder_key(enc)}


def generator_fingerprint(ctx: Context, name: str) -> str:
    """Everything a passage's queries depend on besides the passage itself."""
    g = ctx.cfg.generators[name]
    key: Dict[str, Any] = {"v": PIPELINE_VERSION, "name": name, "gen": generator_settings(g)}
    if g.kind == "provided":
        # The table's content, not just its path: an edited query log is new input.
        key["source"] = provided_source(ctx, name)["sha256"]
    if g.kind == "causal":
        # The exemplars and headers a prompt shows live in package files, not in the config.
        key["prompt"] = prompt_assets_sha256()
    judge = round_trip_judge(ctx, name)
    if judge:  # the kept questions depend on the encoder that judged them
        key["judge"] = {"encoder": section_dict(judge["encoder"]), "metric": judge["metric"]}
        key["draws"] = ATTEMPTS_VERSION  # also: the unit stores the judge's passage vectors
    return fingerprint(key)


def generate_units(ctx: Context, name: str) -> Tuple[str, Plan, List[GenerateUnit]]:
    """(stage fingerprint, plan, unit plans still to run) of generator ``name`` for the context's snapshot.

    The public entry point of the stage's planning (``bench/generate.py`` uses it).
    """
    stage = f"generated/{name}"
    led = Ledger(ctx.storage, ctx.root, stage)
    gfp = generator_fingerprint(ctx, name)
    fp = fingerprint({"gen": gfp, "corpus": ctx.snapshot["corpus_hash"]})
    parts = {ctx.partition_label(part["partition"]): part for part in ctx.snapshot["partitions"]}
    keys = {label: fingerprint({"gen": gfp, "digest": part["digest"]}) for label, part in parts.items()}

    def prior_entries(m: Dict[str, Any]) -> Dict[str, Dict[str, Any]]:
        return {ctx.partition_label(u["partition"]): u for u in m["units"]} if m.get("gen_fp") == gfp else {}

    plan = plan_stage(led, fp, keys, ctx.resume, prior_entries)
    units = [GenerateUnit(partition=parts[label]["partition"], unit=label, key=keys[label], corpus=file_record(parts[label]),
                          prior=segment_source(plan.prior[label]) if label in plan.prior else None, out=led.data_rel(label, keys[label]),
                          prior_attempts=plan.prior[label].get("attempts") if label in plan.prior else None)
             for label in plan.todo]
    return fp, plan, units


def generate_actor_args(ctx: Context, name: str) -> Dict[str, Any]:
    """The constructor arguments of :class:`GeneratePartition` for generator ``name``."""
    g = ctx.cfg.generators[name]
    ctor = {"root": ctx.root, "storage_cfg": ctx.cfg.storage, "stage": f"generated/{name}", "name": name, "cfg": g,
            "threads": ctx.pool("generate").torch_threads, "num_partitions": ctx.snapshot["num_partitions"],
            "compact_fraction": ctx.cfg.corpus.compact_fraction}
    if g.kind == "provided":
        ctor["provided"] = provided_slices(ctx, name)  # split once; each unit reads its partition's slice
    judge = round_trip_judge(ctx, name)
    if judge:
        ctor["judge"] = judge
    return ctor


def run_generate(ctx: Context, name: str) -> Dict[str, Any]:
    """Queries from generator ``name`` for the snapshot's passages; returns the stage manifest."""
    g = ctx.cfg.generators[name]
    stage = f"generated/{name}"
    with ctx.timer.stage(stage) as s:
        fp, plan, units = generate_units(ctx, name)
        if plan.published:
            s.update(rows=plan.published["rows"]["total"], reused=True)
            return plan.published
        records: Dict[str, Dict[str, Any]] = dict(plan.resumed)
        on_done = iter_progress(len(units), stage, ctx.timer.event)
        for summary in run_units([u.to_json() for u in units], GeneratePartition, generate_actor_args(ctx, name), ctx.pool("generate"), on_done):
            records[summary["unit"]] = summary
        ordered = [records[ctx.partition_label(p["partition"])] for p in ctx.snapshot["partitions"]]
        rows = row_counts(ordered)
        failed = sum(r["failed_slots"] for r in ordered)
        set_aside = sum(r.get("set_aside", 0) for r in ordered)
        if failed:
            ctx.timer.event(stage, "warning", message=f"{failed} query slots stayed empty after retries; those passages have fewer queries")
        if set_aside:
            ctx.timer.event(stage, "warning", message=f"{set_aside} provided queries set aside (see {stage}/data/quarantine-*.parquet)")
        s["rows"] = rows["computed"]
        manifest = GeneratedManifest(
            gen_fp=generator_fingerprint(ctx, name), generator=generator_settings(g), snapshot=ctx.snapshot["snapshot"],
            passages=ctx.snapshot.get("changes", {}), rows=rows,
            unit_counts={"total": len(ordered), "computed": len(units), "resumed": len(ordered) - len(units)},
            failed_slots=failed, set_aside=set_aside, units=entries(GeneratedEntry, ordered),
            filter=None if g.kind == PROVIDED_KIND else sum_filter_counts(r.get("filter") for r in ordered),
        )
        return Ledger(ctx.storage, ctx.root, stage).publish(fp, manifest.to_json())


class GeneratePartition(UnitRunner):
    """Actor: loads the generator once; each call generates the missing passages of one partition."""

    def __init__(self, root: str, storage_cfg: StorageConfig, stage: str, name: str, cfg: GeneratorConfig, threads: int,
                 num_partitions: int, provided: Optional[Dict[str, Any]] = None, evaluated: Optional[Dict[str, Any]] = None,
                 compact_fraction: float = 0.0, judge: Optional[Dict[str, Any]] = None):
        self.root, self.storage, self.cfg = root, Storage(storage_cfg), cfg
        self.compact_fraction = compact_fraction  # past it a changed partition is rewritten whole, not given a delta
        self.ledger = Ledger(self.storage, root, stage)
        if cfg.kind == "provided":
            self.provided = ProvidedQueries(self.storage, root, provided or {"slices": []})
        else:
            from ..models.generator import QueryGenerator

            self.gen = QueryGenerator(name, cfg, threads)
        self.judge, self.judge_fp, self.threads = None, None, threads
        if judge:
            from ..models.judge import RoundTripJudge

            self.judge, self.judge_fp = RoundTripJudge(judge["encoder"], judge["metric"], threads), judge["fp"]

    def run_unit(self, plan: Dict[str, Any]) -> Dict[str, Any]:
        u = GenerateUnit.from_json(plan)
        # A provided table is joined by id: the passages' texts are not read.
        cols = ["id", "content_hash"] if self.cfg.kind == "provided" else ["id", "docid", "title", "text", "content_hash"]
        corpus = live_table(self.storage, self.root, u.corpus, cols, where="the corpus snapshot")
        prior = live_table(self.storage, self.root, u.prior, where="the previous generated manifest") if u.prior else None
        record: Dict[str, Any] = {"partition": u.partition, "unit": u.unit}
        draws = None
        if self.cfg.kind == "provided":
            # The prior is of the same table (its generator fingerprint holds the table's sha256), and a
            # passage's provided queries depend on its id alone: only new and changed passages are joined.
            reused, todo = split_reuse(corpus, prior)
            computed, set_aside = self.provided.for_partition(u.partition, corpus, todo)
            reused = reused.select(GENERATED_SCHEMA.names).cast(GENERATED_SCHEMA) if reused is not None else None
            todo_rows = computed.num_rows
            if set_aside.num_rows:  # written whole: it holds only the rows set aside, not the partition's
                qrel = u.out.replace("/data/", "/data/quarantine-")
                record["quarantine"] = write_table_committed(self.storage, self.root, qrel, set_aside.cast(SET_ASIDE_SCHEMA))
            record["set_aside"] = set_aside.num_rows
        else:
            # A passage's queries are reused only with its stored draws (output from before
            # filters has none: it is generated again).
            prior_draws = live_table(self.storage, self.root, u.prior_attempts, where="the previous generated manifest") if u.prior_attempts else None
            reused, todo = split_reuse(corpus, prior if prior_draws is not None else None)
            if self.judge is not None and todo.num_rows:
                # The reference set: every live passage of the partition, the reused ones too.
                self.judge.use(corpus["id"].to_pylist(), corpus["title"].to_pylist(), corpus["text"].to_pylist())
                record["passage_vectors"] = self.passage_vectors(u.out.replace("/data/", "/passages/"), corpus)
            computed, draws = self.generate_table(todo)
            todo_rows = todo.num_rows
            if todo_rows:  # what the questions were computed in (dtype auto resolves by device)
                record["computed_in"] = self.gen.computed_in
            if todo_rows and self.cfg.filters.draw_ahead:  # their cost: draws sampled ahead and never read
                record["drawn_ahead"] = {"made": self.gen.plan.made, "unused": self.gen.plan.unused}
            reused = reused.select(GENERATED_SCHEMA.names).cast(GENERATED_SCHEMA) if reused is not None else None
            if reused is not None and prior_draws is not None:
                old = prior_draws.filter(pc.is_in(prior_draws["id"], value_set=reused["id"])).select(ATTEMPTS_SCHEMA.names).cast(ATTEMPTS_SCHEMA)
                draws = pa.concat_tables([old, draws])
            draws = sort_draws(draws, self.cfg.languages)
            record["attempts"] = None  # written below, with the data file; the record's key order as before
            record["filter"] = filter_counts(draws, self.cfg.languages, self.cfg.n_per_language)
            record["quality"] = unit_quality(draws)
        parts = [t for t in (reused, computed) if t is not None and t.num_rows]
        out = pa.concat_tables(parts).sort_by("id") if parts else GENERATED_SCHEMA.empty_table()
        # Beside data/, not in it: data/ holds what the encode stage reads today.
        files = {"data": (u.out, u.prior, out)} if draws is None else {
            "data": (u.out, u.prior, out), "attempts": (u.out.replace("/data/", "/attempts/"), u.prior_attempts, draws)}
        written = self.write(files, prior, out, u.prior is not None and (draws is None or u.prior_attempts is not None))
        if draws is not None:
            record["attempts"] = written["attempts"]
        failed = int(pc.sum(out["failed"]).as_py() or 0)
        record.update(written["data"], computed=todo_rows, reused=0 if reused is None else reused.num_rows, failed_slots=failed)
        committed = self.ledger.commit(u.unit, u.key, record)
        return {**record, "key": u.key, "commit": self.ledger.commit_rel(u.unit, u.key), "created": committed["created"]}

    def passage_vectors(self, rel: str, corpus: pa.Table) -> Dict[str, Any]:
        """Commit the judge's E(p) of the partition (``passage_vectors_schema``), with what the encode
        stage checks before taking them for its own: the encoder's key, the torch threads and device."""
        t = pa.table({"id": corpus["id"], "content_hash": corpus["content_hash"], "vector": vectors_to_arrow(self.judge.vecs)},
                     schema=passage_vectors_schema(self.judge.vecs.shape[1]))
        rec = write_table_committed(self.storage, self.root, rel, t)
        return {**rec, "encoder": self.judge_fp, "threads": self.threads, "device": self.judge.device}

    def write(self, files: Dict[str, Tuple[str, Optional[Dict[str, Any]], pa.Table]], prior: Optional[pa.Table], out: pa.Table,
              can_delta: bool) -> Dict[str, Dict[str, Any]]:
        """The records of the unit's files (name -> (path, prior record, every live row)): each written
        whole, or -- a small change over a prior with every file (``can_delta``) -- each as a delta
        segment of the rows of passages not in ``prior`` (same id and content hash), with tombstones
        of the prior passages that died (changed or removed), beside the prior's segments."""
        new = out
        if can_delta:
            alive = pc.is_in(version_keys(prior), value_set=version_keys(out)).to_numpy(zero_copy_only=False) if prior.num_rows else np.zeros(0, bool)
            new = out.filter(pc.invert(pc.is_in(version_keys(out), value_set=version_keys(prior)))) if prior.num_rows else out
            can_delta = delta_allowed(files["data"][1], files["data"][0], out.num_rows, new.num_rows, self.compact_fraction)
        if not can_delta:
            return {name: write_table_committed(self.storage, self.root, rel, t) for name, (rel, _, t) in files.items()}
        dead = {NO_KIND: prior["id"].to_numpy()[~alive]}
        recs = {}
        for name, (rel, prior_rec, t) in files.items():
            rows = t.filter(pc.is_in(t["id"], value_set=new["id"]))  # in the file's order
            recs[name] = append_segment(self.storage, self.root, prior_rec, write_table_committed(self.storage, self.root, rel, rows), dead, t.num_rows)
        return recs

    def generate_table(self, todo: pa.Table) -> Tuple[pa.Table, pa.Table]:
        """GENERATED_SCHEMA rows (the unfiltered queries) and ATTEMPTS_SCHEMA rows (every draw) of the
        passages of ``todo`` (id, title, text, content_hash)."""
        # One call for the partition: prompts are batched across its passages
        # (each passage's queries are still independent of its neighbours).
        results = self.gen.generate_attempts(list(zip(todo["id"].to_pylist(), todo["title"].to_pylist(), todo["text"].to_pylist())),
                                             judge=self.judge)
        draws = draws_table(todo["id"].to_pylist(), todo["content_hash"].to_pylist(), results)
        return queries_table(draws, self.cfg.languages, self.cfg.n_per_language, UNFILTERED), draws


def queries_table(draws: pa.Table, langs: List[str], n: int, which: str, again: Optional[Dict[str, Any]] = None) -> pa.Table:
    """GENERATED_SCHEMA rows, one per passage of ``draws`` (ATTEMPTS_SCHEMA, in its order), sorted by id,
    holding the ``which`` selection (``UNFILTERED``: the data file's queries; ``KEPT``: the filtered ones)
    and its empty slots of ``n`` per language of ``langs``.  A system of filtered questions reads the
    unit's attempts file through this; ``again`` (the ``replay`` of a selected source's spec): the
    verdicts replayed at a system's own round-trip top k and rounds first."""
    by: Dict[int, Tuple[str, List[Dict[str, Any]]]] = {}
    for r in draws.to_pylist():
        by.setdefault(r["id"], (r["content_hash"], []))[1].append(r)
    ids = sorted(by)
    if again is not None:
        for i in ids:
            by[i] = (by[i][0], replay(by[i][1], langs, n, again["enabled"], again["round_trip_top_k"], again["max_attempts"],
                                      again["duplicate_jaccard"], again["fill_empty"])[0])
    chosen = [selection(by[i][1], langs, n, which) for i in ids]
    return pa.table(
        {"id": pa.array(ids, pa.int64()), "content_hash": pa.array([by[i][0] for i in ids], pa.string()),
         "queries": pa.array([qs for qs, _ in chosen], type=QUERY_LIST_TYPE), "failed": pa.array([f for _, f in chosen], pa.int32())},
        schema=GENERATED_SCHEMA,
    )


def draws_table(ids: List[int], hashes: List[str], draws: List[List[Dict[str, Any]]]) -> pa.Table:
    """ATTEMPTS_SCHEMA rows of passages ``ids`` (with content ``hashes``) from their draws
    (:meth:`QueryGenerator.generate_attempts`), in the draws' order."""
    rows = [{"id": pid, "content_hash": h, **d} for pid, h, ds in zip(ids, hashes, draws) for d in ds]
    return pa.Table.from_pylist(rows, schema=ATTEMPTS_SCHEMA)


def sort_draws(draws: pa.Table, langs: List[str]) -> pa.Table:
    """``draws`` in ATTEMPTS_SCHEMA's order: passage id, language in the generator's order, round, draw."""
    rank = pa.array([langs.index(lang) for lang in draws["lang"].to_pylist()], pa.int32())
    keys = pa.table({"id": draws["id"], "l": rank, "r": draws["round"], "d": draws["draw"]})
    return draws.take(pc.sort_indices(keys, sort_keys=[(k, "ascending") for k in keys.column_names]))
