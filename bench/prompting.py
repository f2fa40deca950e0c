"""Few-shot prompting arms of the causal generator, measured on the same passages and seeds in one run.

    nice .venv/bin/python bench/prompting.py --passages 40 --json prompting.json
    .venv/bin/python bench/prompting.py --tiny        (tiny random models: a check that it runs)

Arms (one question per passage and language, the same sampling seeds in each):

- ``today``: the prompt before issue 15: the language's first ``few_shot``
  exemplars for every passage, English header and label;
- ``drawn``: exemplars drawn per passage (``prompts.draw_exemplars``), English header;
- ``target``: drawn exemplars, header and ``<Language> question:`` label in the
  target language (``header_language: target``).

Passages: the demo's benchmark (XQuAD, de/es/zh/ar/hi, 100 questions per
language, corpus of 240 SQuAD v1.1 dev paragraphs, half the questions held
out) built with the project's reader; questions are generated for
``--passages`` corpus passages that are not the gold passage of any evaluated
question (the first by ``seed_for("prompting", docid)``), and each question's
round trip ranks its passage among the whole corpus under the demo's encoder
(multilingual-e5-small), as the issue measured it.  Per arm and language: the
target-language rate, exemplar copies (exact, near) of the exemplars its prompt
showed and of any exemplar of the language's pool, degenerate repetition,
empty draws, round-trip top-1 and MRR, and questions/s.  Filters are off and
there is one sampling round: the raw draws of each prompt are compared.
Passages run in chunks, all three arms per chunk, so ``--max-minutes`` cuts
every arm at the same passages (a passage's draws never depend on its batch).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any, Dict, List

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

ARMS = ("today", "drawn", "target")


def bench_passages(source: str, langs: List[str], passages: int, corpus_limit: int) -> Dict[str, Any]:
    """The demo-like corpus and the passages to generate for: ``{"corpus": rows, "rows": (id, title, text)}``."""
    from xqg_ray.benchmark.build import build_benchmark
    from xqg_ray.config import BenchmarkConfig
    from xqg_ray.ids import seed_for

    tables = build_benchmark(BenchmarkConfig(kind="xquad", source=source, languages=langs, max_queries_per_language=100,
                                             corpus_limit=corpus_limit, heldout_fraction=0.5))
    corpus = tables.corpus.sort_by("id").to_pylist()
    golds = set(tables.queries["gold_docid"].to_pylist())
    free = sorted((r for r in corpus if r["docid"] not in golds), key=lambda r: (seed_for("prompting", r["docid"]), r["docid"]))
    rows = [(r["id"], r["title"], r["text"]) for r in free[:passages]]
    return {"corpus": corpus, "rows": rows, "golds": len(golds)}


def arm_figures(rows, draws, langs, pool, ranks, seconds: float) -> Dict[str, Any]:  # noqa: ANN001
    """Per language and overall: the quality tallies of the arm's questions, copies of any pool exemplar,
    empty draws, the round trip and the rate."""
    from xqg_ray.evaluation.quality import exemplar_copies, round_trip_summary
    from xqg_ray.evaluation.question_quality import report_of, unit_quality
    from xqg_ray.schemas import UNFILTERED
    from xqg_ray.stages.generate import draws_table

    table = draws_table([r[0] for r in rows], ["-"] * len(rows), draws)
    report = report_of([unit_quality(table)[UNFILTERED]])
    texts = {lang: [(i, d["text"]) for i, ds in enumerate(draws) for d in ds if d["lang"] == lang and d[UNFILTERED]] for lang in langs}
    out: Dict[str, Any] = {"seconds": seconds, "questions_per_s": sum(len(ds) for ds in draws) / seconds, "by_language": {}}
    for group in [*langs, "overall"]:
        g = report["overall"] if group == "overall" else report["by_language"].get(group, {"n": 0, "counts": {}, "rates": {}})
        chosen = [(lang, i, t) for lang in (langs if group == "overall" else [group]) for i, t in texts[lang]]
        any_copy = sum(c is not None for lang in (langs if group == "overall" else [group])
                       for c in exemplar_copies([t for _, t in texts[lang]], pool[lang], passages=[rows[i][2] for i, _ in texts[lang]]))
        fig = {"n": g["n"], "slots": len(rows) * (len(langs) if group == "overall" else 1),
               "target_language": None if not g["n"] else 1 - g["rates"]["wrong_language"] - g["rates"]["language_unknown"],
               "counts": g["counts"], "copies_of_any_pool_exemplar": any_copy,
               "round_trip": round_trip_summary([ranks[(lang, i)] for lang, i, _ in chosen])}
        if group == "overall":
            out.update(fig)
        else:
            out["by_language"][group] = fig
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tiny", action="store_true", help="tiny random models, 4 passages, de and zh: a check that it runs")
    ap.add_argument("--model", default="bundled:gemma3-270m")
    ap.add_argument("--encoder", default="bundled:multilingual-e5-small")
    ap.add_argument("--source", default=os.environ.get("XQG_SHARED_DATASETS") or str(Path(__file__).resolve().parents[2] / "shared" / "datasets"))
    ap.add_argument("--passages", type=int, default=40)
    ap.add_argument("--corpus-limit", type=int, default=240)
    ap.add_argument("--languages", default="de,es,zh,ar,hi")
    ap.add_argument("--few-shot", type=int, default=2)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--chunk", type=int, default=10, help="passages per round of the three arms")
    ap.add_argument("--max-minutes", type=float, default=0, help="start no chunk after this long (0: no limit)")
    ap.add_argument("--json", default="", help="also write the figures here")
    a = ap.parse_args()
    if a.tiny:
        from xqg_ray.models.loading import resolve_model

        a.model, a.encoder = resolve_model("tiny:tiny-gpt2").path, "tiny:tiny-bert"
        a.passages, a.corpus_limit, a.languages, a.chunk = 4, 40, "de,zh", 2
    import numpy as np
    import torch

    from xqg_ray.config import EncoderConfig, GeneratorConfig
    from xqg_ray.config.schema import FilterConfig
    from xqg_ray.evaluation.quality import round_trip_ranks
    from xqg_ray.models.encoder import format_passage
    from xqg_ray.models.factory import make_encoder
    from xqg_ray.models.generator import QueryGenerator
    from xqg_ray.models.prompts import load_fewshot
    from xqg_ray.schemas import UNFILTERED

    torch.set_num_threads(a.threads)
    langs = a.languages.split(",")
    data = bench_passages(a.source, langs, a.passages, a.corpus_limit)
    rows, corpus = data["rows"], data["corpus"]
    # filters off, one round: every prompt's first draw is what is measured
    gcfg = GeneratorConfig(kind="causal", model=a.model, languages=langs, n_per_language=1, few_shot=a.few_shot,
                           batch_size=a.batch_size, seed=a.seed, filters=FilterConfig(enabled=[], max_attempts=1))
    ecfg = EncoderConfig(model=a.encoder, pooling="mean", normalize=True, query_prefix="query: ", passage_prefix="passage: ",
                         max_query_length=64, max_passage_length=256, batch_size=16)
    print(f"{len(rows)} passages (not gold of the {data['golds']} evaluated gold passages) x {len(langs)} languages, "
          f"round trip among {len(corpus)} passages; {a.model}, few_shot {a.few_shot}, {a.threads} threads", flush=True)
    enc = make_encoder(ecfg, a.threads)
    pvecs = enc.encode([format_passage(ecfg.passage_template, r["title"], r["text"]) for r in corpus], "passage")
    pids = np.asarray([r["id"] for r in corpus], np.int64)
    row_of = {int(p): k for k, p in enumerate(pids)}
    gen = QueryGenerator("g", gcfg, a.threads)
    gen.prefixes.entries = 128  # every arm's prefixes stay cached across chunks, as one prompt kind's do in a run
    gen.generate_attempts(rows[:1])  # warm-up
    pool = {lang: load_fewshot()[lang] for lang in langs}
    # Chunks of passages, every arm per chunk: stopped by --max-minutes, the arms still cover the same passages.
    draws: Dict[str, List[Any]] = {arm: [] for arm in ARMS}
    seconds = {arm: 0.0 for arm in ARMS}
    started, done = time.perf_counter(), 0
    while done < len(rows) and (a.max_minutes <= 0 or time.perf_counter() - started < 60 * a.max_minutes):
        chunk = rows[done : done + a.chunk]
        for arm in ARMS:
            gen.draw_exemplars = arm != "today"
            gen.cfg.header_language = "target" if arm == "target" else "english"
            t0 = time.perf_counter()
            draws[arm] += gen.generate_attempts(chunk)
            seconds[arm] += time.perf_counter() - t0
        done += len(chunk)
        print(f"{done} passages: " + ", ".join(f"{arm} {seconds[arm]:.0f} s" for arm in ARMS), flush=True)
    rows = rows[:done]
    figures: Dict[str, Any] = {}
    samples: Dict[str, List[Dict[str, Any]]] = {}
    for arm in ARMS:
        chosen = [(d["lang"], i, d["text"]) for i, ds in enumerate(draws[arm]) for d in ds if d[UNFILTERED]]
        qv = enc.encode([text for _, _, text in chosen], "query")
        got = round_trip_ranks(qv, [row_of[int(rows[i][0])] for _, i, _ in chosen], pvecs, "ip", passage_ids=pids) if chosen else []
        ranks = {(lang, i): int(k) for (lang, i, _), k in zip(chosen, got)}
        figures[arm] = arm_figures(rows, draws[arm], langs, pool, ranks, seconds[arm])
        samples[arm] = [{"id": rows[i][0], "lang": lang, "text": text} for lang, i, text in chosen[:: max(1, len(chosen) // 10)]]

    head = f"{'arm':<7} {'lang':<5} {'n':>4} {'target':>7} {'copy ex':>7} {'near':>5} {'any':>4} {'degen':>6} {'empty':>5} {'rt@1':>6} {'mrr':>6} {'q/s':>6}"
    print(head)
    for arm in ARMS:
        for group in ["all", *langs]:
            f = figures[arm] if group == "all" else figures[arm]["by_language"][group]
            c, rt = f["counts"], f["round_trip"]
            pct = lambda x: "-" if x is None else f"{100 * x:.1f}"  # noqa: E731
            qps = f"{figures[arm]['questions_per_s']:.2f}" if group == "all" else ""
            print(f"{arm:<7} {group:<5} {f['n']:>4} {pct(f['target_language']):>7} {c.get('exemplar_exact', 0):>7} "
                  f"{c.get('exemplar_near', 0):>5} {f['copies_of_any_pool_exemplar']:>4} {c.get('degenerate', 0):>6} "
                  f"{f['slots'] - f['n']:>5} {pct(rt['rate@1']):>6} {'-' if rt['mrr'] is None else format(rt['mrr'], '.3f'):>6} {qps:>6}")
    print("questions/s: this machine at the time of the run (load from other processes counts)")
    summary = {"passages": len(rows), "corpus": len(corpus), "languages": langs, "model": a.model, "encoder": a.encoder,
               "few_shot": a.few_shot, "seed": a.seed, "arms": figures, "samples": samples}
    if a.json:
        Path(a.json).write_text(json.dumps(summary, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
    print(json.dumps({arm: {"round_trip_top1": f["round_trip"]["rate@1"], "target_language": f["target_language"],
                            "exemplar_copies": f["counts"].get("exemplar_exact", 0) + f["counts"].get("exemplar_near", 0),
                            "n": f["n"]} for arm, f in figures.items()}))
    rt = "/".join(f"{(figures[x]['round_trip']['rate@1'] or 0):.3f}" for x in ARMS)
    tl = "/".join(f"{(figures[x]['target_language'] or 0):.3f}" for x in ARMS)
    cp = "/".join(str(figures[x]["counts"].get("exemplar_exact", 0) + figures[x]["counts"].get("exemplar_near", 0)) for x in ARMS)
    print(f"arms {'/'.join(ARMS)}: round-trip top-1 {rt}, target language {tl}, exemplar copies {cp} of {len(rows) * len(langs)} slots")


if __name__ == "__main__":
    main()
