"""The xQG job end to end on Ray: prepare, generate, encode, index, search, evaluate, compare.

:func:`run` is the one library entry point that the CLI and ``jobs/*.py`` call.
Model work runs in Ray Data actor pools; the math lives in pure modules
(``augment``, ``topk``, ``metrics``, ``significance``).  Every stage commits a
manifest last (see ``stagestore``), so a rerun resumes where inputs are unchanged.
"""

from __future__ import annotations

import logging
import os
from dataclasses import asdict
from typing import Dict, List, Optional, Tuple

import numpy as np
import pyarrow as pa

from . import metrics as M
from .arrow_utils import arrow_to_vectors
from .augment import AUGMENT_VERSION, check_counts
from .config import ConfigError, RayConfig, RunConfig, section_dict, to_yaml, validate
from .progress import StageTimer
from .stagestore import StageStore, fingerprint
from .storage import Storage, join
from .topk import merge_topk

log = logging.getLogger("xqg_ray")

# Bump when a stage's output format or semantics change, so old outputs are not reused.
PIPELINE_VERSION = 1


def init_ray(rc: RayConfig) -> None:
    """Start (address="local") or join a Ray cluster once per process."""
    import ray

    if ray.is_initialized():
        return
    if rc.address == "local":
        # A private in-process cluster: no token auth needed on loopback.
        os.environ.setdefault("RAY_AUTH_MODE", "disabled")
        ray.init(address="local", num_cpus=rc.num_cpus, include_dashboard=False, logging_level=logging.WARNING)
    else:
        ray.init(address=rc.address, logging_level=logging.WARNING)


def _threads(rc: RayConfig) -> int:
    return rc.torch_threads if rc.torch_threads > 0 else max(1, int(rc.actor_num_cpus))


def _metric_names(cfg: RunConfig) -> List[str]:
    return [f"R@{n}kt" for n in cfg.eval.kt] + [f"Recall@{k}" for k in cfg.eval.recall_k] + [f"MRR@{cfg.eval.mrr_k}"]


class Job:
    """State shared by the stages of one run."""

    def __init__(self, cfg: RunConfig):
        validate(cfg)
        self.cfg = cfg
        self.storage = Storage(cfg.storage)
        self.out = cfg.output_dir
        self.store = StageStore(self.storage, self.out, cfg.resume)
        self.timer = StageTimer()
        self.threads = _threads(cfg.ray)

    # -- Ray Data plumbing -------------------------------------------------
    def read(self, uri: str, columns: Optional[List[str]] = None):
        import ray

        fs, path = self.storage.resolve(uri)
        return ray.data.read_parquet(path, filesystem=fs, columns=columns)

    def write(self, ds, uri: str) -> None:
        from ray.data import SaveMode

        fs, path = self.storage.resolve(uri)
        ds.write_parquet(path, filesystem=fs, mode=SaveMode.OVERWRITE)

    def actor_map(self, ds, cls, batch_size: int, **ctor):
        from ray.data import ActorPoolStrategy

        rc = self.cfg.ray
        # Ray Data hands whole blocks to actors: a one-file corpus is one block
        # and would keep every actor but one idle.  Small blocks (a few batches)
        # spread the work; strict=False only splits/merges, no shuffle.
        ds = ds.repartition(target_num_rows_per_block=max(1, batch_size * 2))
        return ds.map_batches(
            cls,
            fn_constructor_kwargs={**ctor, "threads": self.threads},
            batch_size=batch_size,
            batch_format="pyarrow",
            compute=ActorPoolStrategy(min_size=rc.min_actors, max_size=rc.max_actors),
            num_cpus=rc.actor_num_cpus,
            num_gpus=rc.actor_num_gpus,
        )

    # -- stages ------------------------------------------------------------
    def benchmark(self) -> Dict:
        from .benchmark import load_benchmark, prepare_benchmark

        bdir = join(self.out, "benchmark")
        want = section_dict(self.cfg.benchmark)
        with self.timer.stage("benchmark") as s:
            m = None
            if self.cfg.resume and self.storage.exists(join(bdir, "manifest.json")):
                m = self.storage.read_json(join(bdir, "manifest.json"))
                if m.get("config") != want:
                    m = None
            if m is None:
                m = prepare_benchmark(self.cfg.benchmark, bdir, self.storage)
            else:
                s["reused"] = True
            self.tables = load_benchmark(bdir, self.storage)
            s["rows"] = self.tables["corpus"].num_rows + self.tables["queries"].num_rows
        self.corpus_hash = m["corpus_hash"]
        self.corpus_uri = join(bdir, "corpus.parquet")
        self.queries_fp = fingerprint(self.tables["queries"].to_pylist())
        if self.tables["queries"].num_rows == 0:
            raise ConfigError("the benchmark has no queries: check benchmark.languages and the source")
        return m

    def generate(self, name: str) -> Tuple[str, Dict]:
        """Queries for every passage from generator ``name``; returns (fingerprint, manifest)."""
        g = self.cfg.generators[name]
        stage = f"generated/{name}"
        key = {"v": PIPELINE_VERSION, "corpus": self.corpus_hash, "name": name, "gen": section_dict(g)}
        if g.kind == "provided":
            # The table's content, not just its path: an edited query log is new input.
            key["source_sha256"] = self._provided_sha(name, g.path)
        fp = fingerprint(key)
        with self.timer.stage(stage) as s:
            m = self.store.reusable(stage, fp)
            if m:
                s.update(rows=m["rows"], reused=True)
                return fp, m
            data = self.store.data_uri(stage, fp)
            extra: Dict = {}
            if g.kind == "provided":
                extra = self._provided(name, g.path, data)
            else:
                ds = self.read(self.corpus_uri, ["id", "docid", "title", "text"])
                from .stages import GenerateQueries

                self.write(self.actor_map(ds, GenerateQueries, g.batch_size, name=name, cfg=g), data)
            t = self.storage.read_table(data, ["id", "failed"] if g.kind != "provided" else ["id"])
            failed = int(np.asarray(t["failed"]).sum()) if "failed" in t.column_names else 0
            if failed:
                self.timer.event(stage, "warning", message=f"{failed} query slots stayed empty after retries; those passages have fewer queries")
            s["rows"] = t.num_rows
            m = self.store.commit(stage, fp, data=data, rows=t.num_rows, failed_slots=failed, generator=section_dict(g), **extra)
            return fp, m

    def _provided_uri(self, name: str, path: str) -> str:
        uri = join(self.out, "benchmark", "provided.parquet") if path == "benchmark:provided" else path
        if not self.storage.exists(uri):
            hint = " (set benchmark.heldout_fraction > 0 to hold out human questions)" if path == "benchmark:provided" else ""
            raise ConfigError(f"generators.{name}.path: {uri} does not exist{hint}")
        return uri

    def _provided_sha(self, name: str, path: str) -> str:
        from .storage import sha256_bytes

        uri = self._provided_uri(name, path)
        files = self.storage.list_files(uri) if self.storage.is_dir(uri) else [uri]
        return fingerprint([sha256_bytes(self.storage.read_bytes(f)) for f in files])

    def _provided(self, name: str, path: str, data: str) -> Dict:
        """Join a provided query table (docid, lang, text) onto the corpus by docid."""
        uri = self._provided_uri(name, path)
        prov = self.storage.read_any_table(uri)
        missing = {"docid", "lang", "text"} - set(prov.column_names)
        if missing:
            raise ConfigError(f"generators.{name}.path {uri}: missing columns {sorted(missing)}")
        self._assert_not_evaluated(name, prov)
        corpus = self.tables["corpus"]
        by_doc: Dict[str, List[Dict[str, str]]] = {}
        set_aside = []
        known = set(corpus["docid"].to_pylist())
        for i, (d, lang, text) in enumerate(zip(prov["docid"].to_pylist(), prov["lang"].to_pylist(), prov["text"].to_pylist())):
            if d not in known:
                set_aside.append({"line": i + 1, "docid": d, "reason": "docid not in corpus", "text": text})
            elif not text or not text.strip():
                set_aside.append({"line": i + 1, "docid": d, "reason": "empty query text", "text": text})
            else:
                by_doc.setdefault(d, []).append({"lang": lang, "text": text})
        from .stages import QUERY_LIST_TYPE

        table = pa.table(
            {
                "id": corpus["id"],
                "docid": corpus["docid"],
                "queries": pa.array([by_doc.get(d, []) for d in corpus["docid"].to_pylist()], type=QUERY_LIST_TYPE),
            }
        )
        self.storage.write_table(join(data, "part-00000.parquet"), table)
        if set_aside:
            self.storage.write_table(join(self.out, "generated", name, "quarantine.parquet"), pa.Table.from_pylist(set_aside))
            self.timer.event(f"generated/{name}", "warning", message=f"{len(set_aside)} provided queries set aside (see quarantine.parquet)")
        return {"source": uri, "set_aside": len(set_aside)}

    def _assert_not_evaluated(self, name: str, prov: pa.Table) -> None:
        """Human queries used for augmentation must never be the evaluated ones."""
        q = self.tables["queries"]
        if "qid" in prov.column_names:
            clash = set(prov["qid"].to_pylist()) & set(q["qid"].to_pylist())
            if clash:
                raise ConfigError(f"generators.{name}: {len(clash)} provided queries are evaluated queries (e.g. {sorted(clash)[:3]})")
        clash_t = set(zip(prov["lang"].to_pylist(), prov["text"].to_pylist())) & set(zip(q["lang"].to_pylist(), q["text"].to_pylist()))
        if clash_t:
            raise ConfigError(f"generators.{name}: {len(clash_t)} provided query texts equal evaluated questions, e.g. {sorted(clash_t)[:2]}")

    def encode(self, gens: Dict[str, Tuple[str, Dict]]) -> Tuple[str, Dict]:
        """E(p) for every passage, E(q) for every test question, sum E(q) per passage and generator.

        One Ray Data pass and one encoder actor pool for all three: the model
        loads once per actor, not once per kind of text.
        """
        import ray

        from .index import gen_kind
        from .stages import EncodeTexts, encode_rows

        stage = "embeddings"
        enc = self.cfg.encoder
        fp = fingerprint({"v": PIPELINE_VERSION, "corpus": self.corpus_hash, "queries": self.queries_fp, "gens": {k: v[0] for k, v in sorted(gens.items())}, "encoder": section_dict(enc)})
        with self.timer.stage(stage) as s:
            m = self.store.reusable(stage, fp)
            if m:
                s.update(rows=m["rows"], reused=True)
                return fp, m
            template = enc.passage_template

            def passages(b: pa.Table) -> pa.Table:
                from .models.encoder import format_passage

                texts = [[format_passage(template, t, x)] for t, x in zip(b["title"].to_pylist(), b["text"].to_pylist())]
                return encode_rows("passage", texts, ids=b["id"])

            def generated(kind: str):
                def fn(b: pa.Table) -> pa.Table:
                    texts = [[q["text"] for q in qs] for qs in b["queries"].to_pylist()]
                    return encode_rows(kind, texts, ids=b["id"])

                return fn

            q = self.tables["queries"]
            test_q = encode_rows("query", [[t] for t in q["text"].to_pylist()], qids=q["qid"])
            parts = [self.read(self.corpus_uri, ["id", "title", "text"]).map_batches(passages, batch_format="pyarrow"), ray.data.from_arrow(test_q)]
            for name, (_, gm) in sorted(gens.items()):
                parts.append(self.read(gm["data"], ["id", "queries"]).map_batches(generated(gen_kind(name)), batch_format="pyarrow"))
            ds = parts[0].union(*parts[1:])
            data = self.store.data_uri(stage, fp)
            self.write(self.actor_map(ds, EncodeTexts, enc.batch_size, cfg=enc), data)

            t = self.storage.read_table(data, ["kind", "id", "count"])
            kinds = np.asarray(t["kind"].to_pylist(), dtype=object)
            counts = t["count"].to_numpy()
            n_pass = int((kinds == "passage").sum())
            if n_pass != self.tables["corpus"].num_rows or int((kinds == "query").sum()) != q.num_rows:
                raise RuntimeError(f"embeddings: expected {self.tables['corpus'].num_rows} passages and {q.num_rows} queries, got {n_pass} and {int((kinds == 'query').sum())}")
            per_gen = {name: check_counts(counts[kinds == gen_kind(name)]) for name in gens}
            for name, c in per_gen.items():
                if c["passages"] != n_pass:
                    raise RuntimeError(f"embeddings: generator {name} has rows for {c['passages']} of {n_pass} passages")
            s["rows"] = int(counts.sum())  # texts encoded
            files = self.storage.list_files(data, ".parquet")
            m = self.store.commit(stage, fp, data=data, files=files, rows=int(counts.sum()), passages=n_pass, queries=q.num_rows, dim=self._dim(data), counts=per_gen, encoder=section_dict(enc))
        return fp, m

    def test_query_vectors(self, emb: Dict) -> np.ndarray:
        """The encoded test questions, in benchmark order; also written to queries/encoded.parquet."""
        import pyarrow.compute as pc

        t = self.storage.read_table(emb["data"], ["kind", "qid", "vector"])
        t = t.filter(pc.equal(t["kind"], "query"))
        pos = {qid: i for i, qid in enumerate(t["qid"].to_pylist())}
        q = self.tables["queries"]
        t = t.take(pa.array([pos[x] for x in q["qid"].to_pylist()]))
        table = pa.table({"qid": q["qid"], "lang": q["lang"], "vector": t["vector"]})
        self.storage.write_table(join(self.out, "queries", "encoded.parquet"), table)
        return arrow_to_vectors(table["vector"])

    def _dim(self, data_uri: str) -> int:
        import pyarrow.parquet as pq

        fs, path = self.storage.resolve(data_uri)
        for frag in pq.ParquetDataset(path, filesystem=fs).fragments:
            t = frag.to_table(columns=["vector"]).slice(0, 1)
            if t.num_rows:
                return int(arrow_to_vectors(t["vector"]).shape[1])
        raise ValueError(f"no vectors under {data_uri}")

    def build_indexes(self, emb_fp: str, emb: Dict) -> Dict[str, Dict]:
        """One FAISS shard set per system; the systems that need (re)building share one shuffle."""
        from .index import build_shards

        cfg = self.cfg
        dim, S = emb["dim"], cfg.index.num_shards
        todo, manifests, fps = [], {}, {}
        for sysc in cfg.systems:
            stage = f"index/{sysc.name}"
            fps[sysc.name] = fingerprint({"v": PIPELINE_VERSION, "augment": AUGMENT_VERSION, "emb": emb_fp, "sys": asdict(sysc), "index": section_dict(cfg.index)})
            m = self.store.reusable(stage, fps[sysc.name])
            if m:
                manifests[sysc.name] = m
            else:
                todo.append(sysc)
            if sysc.generator:
                c = emb["counts"][sysc.generator]
                if sysc.aggregation == "sum" and c["min"] != c["max"]:
                    msg = (
                        f"system {sysc.name!r}: aggregation=sum with unequal query counts per passage "
                        f"(min {c['min']}, max {c['max']}, {c['zero']} passages with none). The sum then "
                        f"weights passages by how many queries they got; use aggregation=mean, or set "
                        f"allow_unequal_counts=true to accept it."
                    )
                    if not sysc.allow_unequal_counts:
                        raise ConfigError(msg)
                    self.timer.event(stage, "warning", message="WARNING " + msg)
        with self.timer.stage("index") as s:
            if not todo:
                s.update(rows=sum(m["ntotal"] for m in manifests.values()), reused=True)
                return manifests
            rows = build_shards(emb["files"], [asdict(x) for x in todo], join(self.out, "index"), dim, cfg.index.factory, cfg.index.metric, S, cfg.storage, self.threads, cfg.ray.actor_num_cpus)
            built: Dict[str, Dict[int, Dict]] = {x.name: {} for x in todo}
            for r in rows:
                built[r["system"]][int(r["shard"])] = r
            for sysc in todo:
                shards = [built[sysc.name][i] for i in range(S)]
                ntotal = sum(int(sh["ntotal"]) for sh in shards)
                if ntotal != emb["passages"]:
                    raise RuntimeError(f"index {sysc.name}: {ntotal} vectors in shards but {emb['passages']} passages")
                manifests[sysc.name] = self.store.commit(
                    f"index/{sysc.name}",
                    fps[sysc.name],
                    system=asdict(sysc),
                    shards=[{k: sh[k] for k in ("shard", "file", "sha256", "ntotal")} for sh in shards],
                    ntotal=ntotal,
                    dim=dim,
                    metric=cfg.index.metric,
                    factory=cfg.index.factory,
                    num_shards=S,
                    encoder=cfg.encoder.model,
                    alpha=sysc.alpha if sysc.generator else 0.0,
                    aggregation=sysc.aggregation if sysc.generator else None,
                    generator=sysc.generator or None,
                    query_counts=emb["counts"][sysc.generator] if sysc.generator else None,
                    corpus_hash=self.corpus_hash,
                )
            s["rows"] = sum(manifests[x.name]["ntotal"] for x in todo)
        return manifests

    def search_all(self, qvecs: np.ndarray) -> Dict[str, List[List[Tuple[int, float]]]]:
        """Fan the test queries out over one searcher actor per shard and merge each system's top-k."""
        import ray

        from .index import ShardSearcher, search_shards

        cls = ray.remote(num_cpus=self.cfg.ray.actor_num_cpus)(ShardSearcher)
        S, k = self.cfg.index.num_shards, self.cfg.search.top_k
        actors = []
        for s in range(S):
            shards = {}
            for name, m in self.index_manifests.items():
                sh = m["shards"][s]
                shards[name] = (join(self.out, "index", name, sh["file"]), sh["sha256"])
            actors.append(cls.remote(shards, self.cfg.storage, self.threads))
        try:
            out = {}
            for sysc in self.cfg.systems:
                d, i = search_shards(actors, sysc.name, qvecs, k, self.cfg.search.query_batch_size)
                out[sysc.name] = merge_topk(d, i, k, self.docid_of, higher_is_better=self.cfg.index.metric == "ip")
            return out
        finally:
            for a in actors:
                ray.kill(a)

    def write_runs(self, name: str, ranked: List[List[Tuple[int, float]]]) -> Dict[str, List[str]]:
        """TREC run and XOR-Retrieve prediction JSON; returns qid -> ranked docids."""
        q = self.tables["queries"]
        qids, langs = q["qid"].to_pylist(), q["lang"].to_pylist()
        max_tokens = max(self.cfg.eval.kt) * 1000
        lines, preds, rankings = [], [], {}
        for qid, lang, hits in zip(qids, langs, ranked):
            docids = [self.docid_of[pid] for pid, _ in hits]
            rankings[qid] = docids
            lines += [f"{qid} Q0 {self.docid_of[pid]} {r} {score:.6f} {name}" for r, (pid, score) in enumerate(hits, 1)]
            # Only the passages the metric can read: word_tokenize never yields fewer
            # tokens than whitespace splitting, so N*1000 whitespace tokens suffice.
            ctxs, n = [], 0
            for d in docids:
                if n >= max_tokens:
                    break
                t = self.text_of[d]
                ctxs.append(t)
                n += len(t.split())
            preds.append({"id": qid, "lang": lang, "ctxs": ctxs})
        self.storage.write_text(join(self.out, "runs", f"{name}.trec"), "\n".join(lines) + "\n")
        self.storage.write_json(join(self.out, "runs", f"{name}.xor.json"), preds)
        return rankings

    def evaluate(self, rankings: Dict[str, Dict[str, List[str]]]) -> Dict:
        from .report import bar_chart_png, render_markdown
        from .significance import compare

        names = _metric_names(self.cfg)
        q = self.tables["queries"]
        queries = [
            {"qid": a, "lang": b, "answers": c, "gold_docid": d}
            for a, b, c, d in zip(q["qid"].to_pylist(), q["lang"].to_pylist(), q["answers"].to_pylist(), q["gold_docid"].to_pylist())
        ]
        per_query, systems = {}, {}
        with self.timer.stage("evaluate") as s:
            for name, ranks in rankings.items():
                t = M.per_query_metrics(queries, ranks, self.text_of, kt=tuple(self.cfg.eval.kt), recall_ks=tuple(self.cfg.eval.recall_k), mrr_k=self.cfg.eval.mrr_k)
                self.storage.write_table(join(self.out, "per_query", f"{name}.parquet"), t)
                per_query[name] = t
                systems[name] = M.aggregate(t, names)
            s["rows"] = len(queries) * len(rankings)
        with self.timer.stage("compare") as s:
            comparisons = compare(per_query, self.cfg.eval.baseline, names, n_boot=self.cfg.eval.bootstrap_samples, seed=self.cfg.eval.seed)
            s["rows"] = len(comparisons)
        result = {
            "benchmark": {
                "kind": self.cfg.benchmark.kind,
                "passages": self.tables["corpus"].num_rows,
                "queries": q.num_rows,
                "languages": sorted(set(q["lang"].to_pylist())),
                "corpus_hash": self.corpus_hash,
            },
            "tokenizer": M.TOKENIZER,
            "metric_names": names,
            "systems": systems,
            "comparisons": comparisons,
            "indexes": {n: {k: m.get(k) for k in ("alpha", "aggregation", "generator", "query_counts", "num_shards", "factory", "metric", "dim")} for n, m in self.index_manifests.items()},
            "stages": self.timer.stages,
        }
        charts = {}
        for metric in [n for n in names if n.startswith("R@")] + [f"MRR@{self.cfg.eval.mrr_k}"]:
            fname = f"plots/{metric.replace('@', '_at_')}.png"
            self.storage.write_bytes(join(self.out, fname), bar_chart_png(result, metric))
            charts[metric] = fname
        self.storage.write_text(join(self.out, "report.md"), render_markdown(result, charts))
        self.storage.write_json(join(self.out, "metrics.json"), result)
        return result

    # -- the whole job -----------------------------------------------------
    def run(self) -> Dict:
        from ray.data import DataContext

        self.storage.write_text(join(self.out, "config.yaml"), to_yaml(self.cfg))
        self.benchmark()  # before Ray starts: bad data fails in a second, not after start-up
        init_ray(self.cfg.ray)
        ctx = DataContext.get_current()
        ctx.execution_options.preserve_order = True  # same batches, same outputs, every run
        ctx.enable_progress_bars = self.cfg.ray.progress

        corpus = self.tables["corpus"]
        self.docid_of = dict(zip(corpus["id"].to_pylist(), corpus["docid"].to_pylist()))
        self.text_of = dict(zip(corpus["docid"].to_pylist(), corpus["text"].to_pylist()))

        gens: Dict[str, Tuple[str, Dict]] = {}
        for name in dict.fromkeys(s.generator for s in self.cfg.systems if s.generator):
            gens[name] = self.generate(name)
        emb_fp, emb = self.encode(gens)
        qvecs = self.test_query_vectors(emb)
        self.index_manifests = self.build_indexes(emb_fp, emb)

        rankings = {}
        with self.timer.stage("search") as s:
            for name, ranked in self.search_all(qvecs).items():
                rankings[name] = self.write_runs(name, ranked)
            s["rows"] = len(qvecs) * len(self.cfg.systems)
        return self.evaluate(rankings)


def run(cfg: RunConfig) -> Dict:
    """Run the whole job for ``cfg``; returns the contents of metrics.json."""
    return Job(cfg).run()


__all__ = ["run", "Job", "init_ray"]
