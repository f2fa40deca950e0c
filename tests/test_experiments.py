"""The research-question features end to end (tiny models): sweeps, several encoders, perturbed queries.

One run of conf/smoke.yaml, cut down, with
- a sweep over alpha, n and aggregation on ``xqg`` and the same points as
  stand-alone systems: each point must equal the system built on its own;
- a second encoder (mean pooling) with its own baseline and augmented system:
  each index must hold its own encoder's vectors;
- two perturbations of the test questions, evaluated on every system.
"""

from __future__ import annotations

import json
from pathlib import Path

import faiss
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from corpus_versions import current
from xqg_ray.config import SystemConfig, SweepConfig, load_config
from xqg_ray.pipeline import run

REPO = Path(__file__).resolve().parents[1]
SMOKE = str(REPO / "conf" / "smoke.yaml")
ALONE = {"xqg@alpha=0.3": "alone-a0.3", "xqg@n=1": "alone-n1", "xqg@aggregation=mean": "alone-mean"}


def _cfg(out: Path, shared: Path):
    cfg = load_config(SMOKE, [f"output_dir={out}", f"benchmark.source={shared}", "ray.progress=false",
                              "benchmark.corpus_limit=24", "benchmark.max_queries_per_language=8",
                              "encoders.mean.model=tiny:tiny-bert", "encoders.mean.pooling=mean", "encoders.mean.max_passage_length=128"])
    t5 = dict(generator="t5", allow_unequal_counts=True)
    cfg.systems = [
        SystemConfig(name="baseline"),
        SystemConfig(name="xqg", alpha=0.01, sweep=SweepConfig(alpha=[0.01, 0.3], n=[1, 2], aggregation=["mean"]), **t5),
        SystemConfig(name="alone-a0.3", alpha=0.3, **t5),
        SystemConfig(name="alone-n1", alpha=0.01, n=1, **t5),
        SystemConfig(name="alone-mean", alpha=0.01, aggregation="mean", **t5),
        SystemConfig(name="mean-base", encoder="mean"),
        SystemConfig(name="mean-xqg", encoder="mean", alpha=0.3, **t5),
    ]
    from xqg_ray.config import PerturbationConfig

    cfg.perturbations = [PerturbationConfig(name="typos", kind="char", rate=0.2, seed=1),
                         PerturbationConfig(name="shuffled", kind="word_order", rate=0.5, seed=2)]
    from xqg_ray.config.systems import expand_sweeps

    return expand_sweeps(cfg)


@pytest.fixture(scope="module")
def exp(tmp_path_factory, ray_local, shared_datasets, tiny_models):
    out = tmp_path_factory.mktemp("experiments") / "run"
    return out, run(_cfg(out, shared_datasets))


def _trec(path: Path):
    return [line.split()[:5] for line in path.read_text().splitlines()]


def _index_vectors(out: Path, system: str):
    ids, vecs = [], []
    for sh in current(out, f"index/{system}")["shards"]:
        index = faiss.read_index(str(out / sh["file"]))
        inner = faiss.downcast_index(index.index)
        ids.append(faiss.vector_to_array(index.id_map).astype(np.int64))
        vecs.append(inner.reconstruct_n(0, index.ntotal))
    ids, vecs = np.concatenate(ids), np.concatenate(vecs)
    order = np.argsort(ids)
    return ids[order], vecs[order]


def test_sweep_expands_to_the_expected_points(exp):
    _, metrics = exp
    assert [n for n in metrics["systems"] if n.startswith("xqg@")] == ["xqg@alpha=0.3", "xqg@n=1", "xqg@aggregation=mean"]
    sweeps = {(s["system"], s["param"]): [p["value"] for p in s["points"]] for s in metrics["experiments"]["sweeps"]}
    assert sweeps == {("xqg", "alpha"): [0.01, 0.3], ("xqg", "n"): [1, 2], ("xqg", "aggregation"): ["mean", "sum"]}


@pytest.mark.parametrize("point", sorted(ALONE))
def test_sweep_point_equals_the_system_built_on_its_own(exp, point):
    out, metrics = exp
    alone = ALONE[point]
    a, b = _index_vectors(out, point), _index_vectors(out, alone)
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])  # the same bits, not just close
    assert _trec(out / "runs" / f"{point}.trec") == _trec(out / "runs" / f"{alone}.trec")
    assert metrics["systems"][point] == metrics["systems"][alone]
    assert current(out, f"index/{point}")["embeddings"] == current(out, "embeddings")["fingerprint"]


def test_n_uses_only_the_first_query_of_each_language(exp):
    """xqg@n=1 from the per-slot sums equals the formula on freshly encoded first queries."""
    from xqg_ray.models.encoder import Encoder, format_passage

    out, _ = exp
    cfg = load_config(SMOKE, [f"output_dir={out}"])
    enc = Encoder(cfg.encoder)
    gen = pa.concat_tables([pq.read_table(out / u["file"]) for u in current(out, "generated/t5")["units"]]).sort_by("id")
    snap = json.loads((out / current(out, "benchmark")["snapshot_file"]).read_text())
    corpus = pa.concat_tables([pq.read_table(out / p["file"]) for p in snap["partitions"]]).sort_by("id")
    assert gen["id"].to_pylist() == corpus["id"].to_pylist()
    p = enc.encode([format_passage(cfg.encoder.passage_template, t, x) for t, x in zip(corpus["title"].to_pylist(), corpus["text"].to_pylist())], "passage")
    firsts = []
    for qs in gen["queries"].to_pylist():
        seen, first = set(), []
        for q in qs:
            if q["lang"] not in seen:
                seen.add(q["lang"])
                first.append(q["text"])
        firsts.append(enc.encode(first, "query").astype(np.float64).sum(0))
    assert {len(qs) for qs in gen["queries"].to_pylist()} == {4}  # 2 languages x 2: n=1 really drops half
    ids, vecs = _index_vectors(out, "xqg@n=1")
    np.testing.assert_array_equal(ids, corpus["id"].to_numpy())
    np.testing.assert_allclose(vecs, 0.99 * p + 0.01 * np.stack(firsts), rtol=1e-5, atol=1e-6)


def test_each_encoder_has_its_own_embeddings_and_indexes(exp):
    from xqg_ray.models.encoder import Encoder, format_passage

    out, metrics = exp
    default, mean = current(out, "embeddings"), current(out, "encoders/mean/embeddings")
    assert default["fingerprint"] != mean["fingerprint"]
    assert (default["encoder"]["pooling"], mean["encoder"]["pooling"]) == ("cls", "mean")
    for system, emb in (("baseline", default), ("xqg", default), ("mean-base", mean), ("mean-xqg", mean)):
        assert current(out, f"index/{system}")["embeddings"] == emb["fingerprint"], system
    # The vectors themselves: mean-base holds mean-pooled E(p), baseline CLS E(p).
    cfg = load_config(SMOKE, [f"output_dir={out}", "encoders.mean.model=tiny:tiny-bert", "encoders.mean.pooling=mean",
                              "encoders.mean.max_passage_length=128"])
    snap = json.loads((out / current(out, "benchmark")["snapshot_file"]).read_text())
    corpus = pa.concat_tables([pq.read_table(out / p["file"]) for p in snap["partitions"]]).sort_by("id")
    texts = [format_passage(cfg.encoder.passage_template, t, x) for t, x in zip(corpus["title"].to_pylist(), corpus["text"].to_pylist())]
    for system, ecfg in (("baseline", cfg.encoder), ("mean-base", cfg.encoders["mean"])):
        ids, vecs = _index_vectors(out, system)
        np.testing.assert_array_equal(ids, corpus["id"].to_numpy())
        np.testing.assert_allclose(vecs, Encoder(ecfg).encode(texts, "passage"), rtol=1e-5, atol=1e-6)
    scopes = {(c["system"], c["baseline"], c["scope"]) for c in metrics["comparisons"]}
    assert ("mean-xqg", "mean-base", "within-encoder") in scopes and ("mean-base", "baseline", "across-encoders") in scopes
    assert ("xqg", "baseline", "within-encoder") in scopes


def test_perturbed_query_sets_are_encoded_once_and_run_on_every_system(exp):
    out, metrics = exp
    qm = current(out, "queries")
    assert sorted(qm["sets"]) == ["clean", "shuffled", "typos"]
    clean = pq.read_table(out / qm["sets"]["clean"]["file"])
    typos = pq.read_table(out / qm["sets"]["typos"]["file"])
    assert typos["qid"].to_pylist() == clean["qid"].to_pylist() and typos["lang"].to_pylist() == clean["lang"].to_pylist()
    # Exactly the pure function's output on the benchmark's questions, and a real change.
    from xqg_ray.config import PerturbationConfig
    from xqg_ray.evaluation.perturb import perturb_table

    bench = pq.read_table(out / current(out, "benchmark")["files"]["queries"]["file"])
    expected = perturb_table(bench.select(["qid", "lang", "text"]), PerturbationConfig("typos", "char", 0.2, 1))
    assert typos["text"].to_pylist() == expected["text"].to_pylist()
    changed = sum(a != b for a, b in zip(clean["text"].to_pylist(), typos["text"].to_pylist()))
    assert changed == clean.num_rows  # rate 0.2 edits every question of this length
    # The mean encoder has its own perturbed sets, with the same texts.
    qm2 = current(out, "encoders/mean/queries")
    assert pq.read_table(out / qm2["sets"]["typos"]["file"])["text"].to_pylist() == typos["text"].to_pylist()
    rob = metrics["experiments"]["robustness"]
    assert sorted(rob) == ["shuffled", "typos"] and sorted(rob["typos"]) == sorted(metrics["systems"])
    per_q = pq.read_table(out / "per_query" / "perturbed" / "typos" / "xqg.parquet")
    assert per_q["qid"].to_pylist() == pq.read_table(out / "per_query" / "xqg.parquet")["qid"].to_pylist()
    row = next(r for r in rob["typos"]["xqg"]["comparisons"] if r["metric"] == "R@2kt" and r["lang"] == "all")
    clean_v = metrics["systems"]["xqg"]["macro"]["R@2kt"]
    assert rob["typos"]["xqg"]["clean"]["R@2kt"]["mean"] == pytest.approx(clean_v)
    assert row["mean_diff"] == pytest.approx(row["mean_system"] - row["mean_baseline"])
    assert (out / "runs" / "perturbed" / "typos" / "xqg.trec").exists()


def test_language_view_is_ordered_by_resource_level(exp):
    _, metrics = exp
    langs = metrics["experiments"]["languages"]
    assert langs["order"] == ["de", "zh"]  # CC-100: German 66.6 GiB before Chinese 46.9
    v = langs["values"]["baseline"]["R@2kt"]["de"]
    assert v["mean"] == pytest.approx(metrics["systems"]["baseline"]["per_language"]["de"]["R@2kt"])
    assert v["ci95"][0] <= v["mean"] <= v["ci95"][1]
