"""Questions/s of query generation: the generate stage against today's per-prompt path and a bare batched HF loop, in one run.

    .venv/bin/python bench/generate.py --passages 24 --languages de,es,zh --n 1 --batch-size 8

Passages: the XQuAD benchmark's corpus (``prepare``: questions + a corpus of
``--passages`` passages, one partition), read back from the committed snapshot.
Every arm gets the same prompts (few-shot causal prompts, or the seq2seq
template), the same sampling settings, ``max_new_tokens``, and stops at a
newline (causal) or EOS in every arm.  Arms:

- ``today``: the old ``QueryGenerator.generate`` (kept below, verbatim): one
  ``model.generate`` call per (passage, language), with its retries;
- ``stage``: ``run_units(units, GeneratePartition, ...)`` over the committed
  partitions on a local Ray cluster, as ``run_generate`` runs it; its rate is
  over the actor's generation time (model load excluded, as in the other arms),
  its wall time with actor start and load is printed too;
- ``stage-bf16``: the same with the actor's model cast to bfloat16 (what
  ``dtype: bfloat16`` runs, on CPU too); fast where the CPU has AMX or avx512_bf16;
- ``stage-llamacpp``: the same with ``runtime: llamacpp`` (the GGUF in
  llama.cpp; needs ``llama-cpp-py-sync`` loading here, else the arm says why);
- ``stage-rt``: the stage with the demo's filters, the round trip judged under
  ``--encoder`` (``generators.gemma.filters`` of conf/demo.yaml): the shipped path; its
  seconds include the judge's encoding of the passages and of every draw;
- ``stage-rt-ahead``: ``stage-rt`` with ``filters.draw_ahead: 1`` (the demo's): round 0 samples
  each prompt's round-1 draws from its prefill; prints how many of its draws equal stage-rt's;
- ``stage-shared``: the stage with ``prompt_layout: shared_passage`` (``--shared-few-shot``
  exemplars of every language, then the passage, then the language's label: one
  prefill of the passage serves every language), to compare with ``stage``;
- ``bare``: ``model.generate`` on batches of ``--batch-size`` prompts of one
  language (left padding, ``num_return_sequences=n``), no prefix reuse, no retries;
- ``new``: ``generate_many`` in this process (the stage without Ray);
  ``grouped``, ``no-reuse`` and ``bs1``: the same with batches of one prefix
  each (as before batches mixed prefixes), with prefix reuse off, and with
  batch size 1: new/grouped, new/no-reuse and new/bs1 are what mixing,
  reuse and batching contribute.

Rate = question slots (prompts x n) / seconds; empty outputs are counted per arm.
``--split``: the ``new`` arm's seconds by kind of forward call (a causal model): the
few-shot prefixes' prefill, the batches' suffix prefill (each prompt's passage
and label) and the decode steps.
``--quality``: per stage arm, on the same passages and seeds, the first draws'
target-language rate (``question_quality``'s flags) and round trip (rank of a
question's passage among the bench's passages under ``--encoder``), as a run's
``metrics.json`` measures them.  A measured run (load average printed first):

    .venv/bin/python bench/generate.py --passages 40 --languages de,es,zh --threads 1 \
        --arms stage,stage-bf16,stage-llamacpp,bare --quality
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Dict, List, Tuple

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))  # forward_split
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from xqg_ray.stages.generate import GeneratePartition  # noqa: E402


STAGE_ARMS = ("stage", "stage-bf16", "stage-llamacpp", "stage-rt", "stage-rt-ahead", "stage-shared")
DEMO = Path(__file__).resolve().parents[1] / "conf" / "demo.yaml"  # its generator's filters and its encoder: stage-rt, --quality


class TimedGeneratePartition(GeneratePartition):
    """The stage's actor, reporting the seconds its generation took (model load excluded).

    ``bench_dtype``: cast the torch model (the ``stage-bf16`` arm).
    """

    def __init__(self, *args, bench_dtype: str = "", **kw):  # noqa: ANN002, ANN003
        super().__init__(*args, **kw)
        if bench_dtype:
            import torch

            self.gen.model.to(getattr(torch, bench_dtype))
        if self.judge is not None:  # the round trip's encoding of each unit's passages counts as generation too
            use = self.judge.use

            def timed_use(*a, **k):  # noqa: ANN002, ANN003, ANN202
                t = time.perf_counter()
                use(*a, **k)
                with open(os.path.join(self.root, "gen_seconds.txt"), "a") as f:
                    f.write(f"{time.perf_counter() - t}\n")

            self.judge.use = timed_use

    def generate_table(self, todo):  # noqa: ANN001, ANN202
        t = time.perf_counter()
        out = super().generate_table(todo)
        with open(os.path.join(self.root, "gen_seconds.txt"), "a") as f:
            f.write(f"{time.perf_counter() - t}\n")
        return out


def demo_encoder(model: str):  # noqa: ANN201 - EncoderConfig
    """conf/demo.yaml's encoder settings with ``model``: the round trip's encoder (``--quality``, ``stage-rt``)."""
    from xqg_ray.config import load_config

    return dataclasses.replace(load_config(str(DEMO)).encoder, model=model)


def demo_filters():  # noqa: ANN201 - FilterConfig
    """conf/demo.yaml's generator's filters (every reason, the round trip included): the ``stage-rt`` arm's."""
    from xqg_ray.config import load_config

    return load_config(str(DEMO)).generators["gemma"].filters


def legacy_generate(gen, pid: int, title: str, text: str) -> Tuple[List[Dict[str, str]], int]:  # noqa: ANN001
    """Today's path before batching: ``QueryGenerator.generate`` and ``_sample`` as they were."""
    import torch

    from xqg_ray.ids import seed_for
    from xqg_ray.models.generator import RETRY_ROUNDS
    from xqg_ray.models.prompts import clean_question

    def sample(prompt: str, n: int, seed: int) -> List[str]:
        torch.manual_seed(seed % (2**63))
        enc = gen.tokenizer(prompt, return_tensors="pt", truncation=True, max_length=gen.cfg.max_input_length)
        enc = {k: v.to(gen.device) for k, v in enc.items() if k in ("input_ids", "attention_mask")}
        with torch.inference_mode():
            out = gen.model.generate(**enc, do_sample=True, top_k=gen.cfg.top_k, temperature=gen.cfg.temperature,
                                     max_new_tokens=gen.cfg.max_new_tokens, num_return_sequences=n,
                                     pad_token_id=gen.tokenizer.pad_token_id,
                                     **({"eos_token_id": gen.stop_ids} if gen.cfg.kind == "causal" else {}))
        if gen.cfg.kind == "causal":
            out = out[:, enc["input_ids"].shape[1]:]
        texts = gen.tokenizer.batch_decode(out, skip_special_tokens=True)
        return [clean_question(t) for t in texts] if gen.cfg.kind == "causal" else [" ".join(t.split()) for t in texts]

    queries, failed, n = [], 0, gen.cfg.n_per_language
    for lang in gen.cfg.languages:
        p = gen.prompt(pid, title, text, lang)
        got = [q for q in sample(p, n, seed_for(gen.cfg.seed, gen.name, pid, lang)) if q]
        for r in range(RETRY_ROUNDS):
            if len(got) >= n:
                break
            got += [q for q in sample(p, n - len(got), seed_for(gen.cfg.seed, gen.name, pid, lang, "retry", r)) if q]
        failed += max(0, n - len(got))
        queries += [{"lang": lang, "text": q} for q in got[:n]]
    return queries, failed


def bare_batched(gen, rows: List[Tuple[int, str, str]], batch_size: int) -> Tuple[int, int]:  # noqa: ANN001
    """HF ``generate`` on batches of prompts of one language; returns (slots, empty outputs)."""
    import torch

    from xqg_ray.models.prompts import clean_question

    tok, cfg = gen.tokenizer, gen.cfg
    tok.padding_side = "left"
    slots = empty = 0
    for lang in cfg.languages:
        prompts = sorted((gen.prompt(pid, t, x, lang) for pid, t, x in rows), key=lambda p: len(tok(p)["input_ids"]))
        for i in range(0, len(prompts), batch_size):
            enc = tok(prompts[i:i + batch_size], return_tensors="pt", padding=True, truncation=True, max_length=cfg.max_input_length)
            enc = {k: v.to(gen.device) for k, v in enc.items() if k in ("input_ids", "attention_mask")}
            with torch.inference_mode():
                out = gen.model.generate(**enc, do_sample=True, top_k=cfg.top_k, temperature=cfg.temperature,
                                         max_new_tokens=cfg.max_new_tokens, num_return_sequences=cfg.n_per_language,
                                         pad_token_id=tok.pad_token_id, eos_token_id=gen.stop_ids)
            if cfg.kind == "causal":
                out = out[:, enc["input_ids"].shape[1]:]
            texts = tok.batch_decode(out, skip_special_tokens=True)
            texts = [clean_question(t) for t in texts] if cfg.kind == "causal" else [" ".join(t.split()) for t in texts]
            slots += len(texts)
            empty += sum(1 for t in texts if not t)
    return slots, empty


def load_average() -> str:
    """The 1/5/15-minute load averages (other processes' work slows every arm)."""
    return "/".join(f"{x:.1f}" for x in os.getloadavg())


def interleaved(gen, gcfg, rows, langs: List[str], chunk: int, threads: int) -> None:  # noqa: ANN001
    """``generate_attempts`` on torch float32 (``gen``), bfloat16 and llama.cpp, alternating per chunk of passages:
    a change of the machine's load falls on every runtime alike.  Prints each chunk's rates and the load."""
    import torch

    from xqg_ray.models.generator import QueryGenerator
    from xqg_ray.models.llamacpp import gguf_problem, load_problem

    bf16 = QueryGenerator("g", gcfg, threads)
    bf16.model.to(torch.bfloat16)
    gens = {"float32": gen, "bfloat16": bf16}
    why = gguf_problem(gcfg.model, gcfg.gguf_file) or load_problem()
    if why:
        print(f"interleaved: llama.cpp skipped: {why}")
    else:
        gens["llamacpp"] = QueryGenerator("g", dataclasses.replace(gcfg, runtime="llamacpp"), threads)
    for g in gens.values():
        g.generate_attempts(rows[:1])  # warm-up
    total = {k: 0.0 for k in gens}
    for start in range(0, len(rows), chunk):
        part, seen = rows[start : start + chunk], {}
        for k, g in gens.items():
            t = time.perf_counter()
            g.generate_attempts(part)
            seen[k] = time.perf_counter() - t
            total[k] += seen[k]
        slots = len(part) * len(langs) * gcfg.n_per_language
        print(f"interleaved passages {start}-{start + len(part) - 1}: " + ", ".join(f"{k} {slots / v:.3f}/s" for k, v in seen.items())
              + f"; load average {load_average()}", flush=True)
    slots = len(rows) * len(langs) * gcfg.n_per_language
    print("interleaved, all passages: " + ", ".join(f"{k} {slots / v:.3f} questions/s ({total['float32'] / v:.2f}x float32)"
                                                   for k, v in total.items()), flush=True)


def stage_quality(attempts, rows, langs: List[str], enc, pvecs, pids) -> Dict[str, object]:  # noqa: ANN001
    """Target-language rate and round trip of a stage arm's first draws (ATTEMPTS_SCHEMA rows)."""
    import numpy as np

    from xqg_ray.evaluation.quality import round_trip_ranks, round_trip_summary
    from xqg_ray.evaluation.question_quality import report_of, unit_quality
    from xqg_ray.schemas import UNFILTERED

    rep = report_of([unit_quality(attempts)[UNFILTERED]])
    first = attempts.filter(attempts[UNFILTERED]).to_pylist()
    row_of = {int(p): k for k, p in enumerate(pids)}
    qv = enc.encode([d["text"] for d in first], "query")
    ranks = round_trip_ranks(qv, [row_of[int(d["id"])] for d in first], pvecs, "ip", passage_ids=pids) if first else np.zeros(0)
    out: Dict[str, object] = {}
    for group in [*langs, "all"]:
        g = rep["overall"] if group == "all" else rep["by_language"].get(group, {"n": 0, "rates": {}})
        sel = [k for k, d in enumerate(first) if group == "all" or d["lang"] == group]
        rt = round_trip_summary([int(ranks[k]) for k in sel])
        target = None if not g["n"] else 1 - g["rates"]["wrong_language"] - g["rates"]["language_unknown"]
        out[group] = {"n": g["n"], "target_language": target, "round_trip_top1": rt["rate@1"], "mrr": rt["mrr"],
                      "kept": int(attempts.filter(attempts["kept"]).num_rows) if group == "all" else None}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="bundled:gemma3-270m")
    ap.add_argument("--kind", default="causal", choices=["causal", "seq2seq"])
    ap.add_argument("--source", default=str(Path(__file__).resolve().parents[2] / "shared" / "datasets"))
    ap.add_argument("--passages", type=int, default=24)
    ap.add_argument("--languages", default="de,es,zh")
    ap.add_argument("--n", type=int, default=1)
    ap.add_argument("--few-shot", type=int, default=2)
    ap.add_argument("--max-new-tokens", type=int, default=32)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--dtype", default="auto", help="the generator config dtype of every arm (the demo: bfloat16)")
    ap.add_argument("--threads", type=int, default=2, help="torch threads in every arm (the stage's actor too)")
    ap.add_argument("--arms", default="today,stage,bare,new,no-reuse,bs1",
                    help="of today,stage,stage-bf16,stage-llamacpp,stage-rt,stage-rt-ahead,stage-shared,bare,new,grouped,no-reuse,bs1")
    ap.add_argument("--interleave", type=int, default=0,
                    help="also: torch float32, bfloat16 and llama.cpp in this process, alternating per chunk of this many passages")
    ap.add_argument("--quality", action="store_true", help="target-language rate and round trip of every stage arm")
    ap.add_argument("--shared-few-shot", type=int, default=1, help="few_shot per language of the stage-shared arm")
    ap.add_argument("--split", action="store_true",
                    help="the new arm's seconds split into prefix prefill, suffix (passage) prefill and decode steps")
    ap.add_argument("--encoder", default="bundled:multilingual-e5-small", help="the round trip's encoder (--quality)")
    a = ap.parse_args()
    arms = a.arms.split(",")
    import pyarrow as pa
    import pyarrow.parquet as pq
    import torch

    from xqg_ray.config import BenchmarkConfig, CorpusConfig, EncoderConfig, GeneratorConfig, RayConfig, RunConfig, SystemConfig, stage_pool
    from xqg_ray.models.generator import QueryGenerator
    from xqg_ray.pipeline import prepare
    from xqg_ray.progress import StageTimer
    from xqg_ray.runtime.units import run_units
    from xqg_ray.stages.context import Context
    from xqg_ray.stages.generate import generate_actor_args, generate_units
    from xqg_ray.store.storage import Storage

    torch.set_num_threads(a.threads)
    langs = a.languages.split(",")
    gcfg = GeneratorConfig(kind=a.kind, model=a.model, languages=langs, n_per_language=a.n, few_shot=a.few_shot,
                           max_new_tokens=a.max_new_tokens, batch_size=a.batch_size, dtype=a.dtype)
    rates: Dict[str, float] = {}

    def report(arm: str, slots: int, empty: int, seconds: float, extra: str = "") -> None:
        rates[arm] = slots / seconds
        print(f"{arm:>9}: {slots / seconds:6.3f} questions/s ({slots} slots, {empty} empty, {seconds:.1f} s){extra}", flush=True)

    with tempfile.TemporaryDirectory() as d:
        out = Path(d) / "run"
        ray_cfg = RayConfig(num_cpus=a.threads, actor_num_cpus=a.threads, torch_threads=a.threads, progress=False)
        cfg = RunConfig(output_dir=str(out), benchmark=BenchmarkConfig(source=a.source, languages=langs, max_queries_per_language=4, corpus_limit=a.passages),
                        corpus=CorpusConfig(num_partitions=1), encoder=EncoderConfig(model="tiny:tiny-bert"),
                        generators={"g": gcfg}, systems=[SystemConfig(name="baseline")], ray=ray_cfg)
        m = prepare(cfg)
        snap = json.loads((out / m["snapshot_file"]).read_text())
        corpus = pq.read_table(out / snap["partitions"][0]["file"]).sort_by("id")
        rows = list(zip(corpus["id"].to_pylist(), corpus["title"].to_pylist(), corpus["text"].to_pylist()))
        slots = len(rows) * len(langs) * a.n
        print(f"{len(rows)} passages x {len(langs)} languages x n={a.n}, {a.model}, batch {a.batch_size}, "
              f"max_new_tokens {a.max_new_tokens}, {a.threads} torch threads; load average {load_average()}", flush=True)

        t = time.perf_counter()
        gen = QueryGenerator("g", gcfg, a.threads)
        print(f"model load {time.perf_counter() - t:.1f} s", flush=True)
        gen.generate_many(rows[:1])  # warm-up (and the prefix caches)
        if "today" in arms:
            t = time.perf_counter()
            res = [legacy_generate(gen, *r) for r in rows]
            report("today", slots, sum(f for _, f in res), time.perf_counter() - t)
        attempts = {}
        for arm in [x for x in STAGE_ARMS if x in arms]:
            # Each arm in its own copy of the prepared run: the same passages, seeds and generator
            # name, and no arm reuses another's committed questions.
            root = Path(d) / arm
            shutil.copytree(out, root)
            arm_g = dataclasses.replace(gcfg, runtime="llamacpp") if arm == "stage-llamacpp" else gcfg
            if arm == "stage-shared":
                arm_g = dataclasses.replace(gcfg, prompt_layout="shared_passage", few_shot=a.shared_few_shot)
            arm_enc = cfg.encoder
            if arm.startswith("stage-rt"):  # the demo's filters, without and with its draws ahead
                arm_g = dataclasses.replace(gcfg, filters=dataclasses.replace(demo_filters(), draw_ahead=int(arm == "stage-rt-ahead")))
                arm_enc = demo_encoder(a.encoder)
            if arm == "stage-llamacpp":
                from xqg_ray.models.llamacpp import gguf_problem, load_problem

                why = gguf_problem(arm_g.model, arm_g.gguf_file) or load_problem()
                if why:
                    print(f"{arm:>9}: skipped: {why}", flush=True)
                    continue
            arm_cfg = dataclasses.replace(cfg, output_dir=str(root), generators={"g": arm_g}, encoder=arm_enc)
            ctx = Context(cfg=arm_cfg, storage=Storage(cfg.storage), root=str(root), timer=StageTimer(), threads=a.threads, bench=m, snapshot=snap)
            units = [u.to_json() for u in generate_units(ctx, "g")[2]]
            ctor = {**generate_actor_args(ctx, "g"), "bench_dtype": "bfloat16" if arm == "stage-bf16" else ""}
            t = time.perf_counter()
            summaries = run_units(units, TimedGeneratePartition, ctor, stage_pool(ray_cfg, "generate"))
            wall = time.perf_counter() - t
            gen_s = sum(float(x) for x in (root / "gen_seconds.txt").read_text().split())
            draws = sum(s["filter"]["draws"] for s in summaries)
            ahead = [sum(s["drawn_ahead"][k] for s in summaries if "drawn_ahead" in s) for k in ("made", "unused")]
            report(arm, slots, sum(s["failed_slots"] for s in summaries), gen_s, f"; {draws} draws" + (
                f" ({ahead[0]} sampled ahead, {ahead[1]} of them unused)" if ahead[0] else "") + f"; wall with actor start + model load {wall:.1f} s")
            attempts[arm] = pa.concat_tables([pq.read_table(root / s["attempts"]["file"]) for s in summaries])
        if {"stage-rt", "stage-rt-ahead"} <= set(attempts):  # the same seeds: the same draws up to float rounding
            same = [set(zip(*(attempts[x][c].to_pylist() for c in ("id", "lang", "round", "draw", "text")))) for x in ("stage-rt", "stage-rt-ahead")]
            print(f"stage-rt-ahead: {len(same[0] & same[1])} of its {len(same[1])} draws are stage-rt's ({len(same[0])})", flush=True)
        if "bare" in arms:
            t = time.perf_counter()
            n_slots, empty = bare_batched(gen, rows, a.batch_size)
            report("bare", n_slots, empty, time.perf_counter() - t)
        for arm, reuse, mix, bs in (("new", True, True, a.batch_size), ("grouped", True, False, a.batch_size),
                                    ("no-reuse", False, True, a.batch_size), ("bs1", True, True, 1)):
            if arm in arms:
                gen.prefix_reuse, gen.mix_prefixes, gen.cfg.batch_size = reuse, mix, bs
                from forward_split import ForwardSplit

                split = ForwardSplit(gen.model) if a.split and arm == "new" and a.kind == "causal" and gen.model is not None else None
                t = time.perf_counter()
                res = gen.generate_many(rows)
                report(arm, slots, sum(f for _, f in res), time.perf_counter() - t)
                if split is not None:
                    split.close()
                    print(split.line(time.perf_counter() - t), flush=True)
        gen.prefix_reuse, gen.mix_prefixes, gen.cfg.batch_size = True, True, a.batch_size
        if a.interleave:
            interleaved(gen, gcfg, rows, langs, a.interleave, a.threads)
        if a.quality and attempts:
            from xqg_ray.models.encoder import format_passage
            from xqg_ray.models.factory import make_encoder

            # The demo's encoder settings; passages: the bench's, the round trip ranks among them.
            ecfg = demo_encoder(a.encoder)
            enc = make_encoder(ecfg, a.threads)
            pvecs = enc.encode([format_passage(ecfg.passage_template, t, x) for _, t, x in rows], "passage")
            pids = [r[0] for r in rows]
            print(f"quality of the first draws (round trip among the {len(rows)} passages, {a.encoder}):")
            for arm, table in attempts.items():
                q = stage_quality(table, rows, langs, enc, pvecs, pids)
                pct = lambda x: "-" if x is None else f"{100 * x:.1f}%"  # noqa: E731
                per = ", ".join(f"{lang} {pct(q[lang]['target_language'])}/{pct(q[lang]['round_trip_top1'])}" for lang in langs)
                print(f"{arm:>14}: target language {pct(q['all']['target_language'])}, round-trip top-1 {pct(q['all']['round_trip_top1'])}, "
                      f"MRR {q['all']['mrr'] or 0:.3f} ({q['all']['n']} questions; kept by the filters {q['all']['kept']}); "
                      f"per language target/top-1: {per}", flush=True)
    ratios = [f"{x}/{y} {rates[x] / rates[y]:.2f}x" for x, y in (("stage-bf16", "stage"), ("stage-llamacpp", "stage"), ("stage-rt", "stage"), ("stage-rt-ahead", "stage-rt"), ("stage-shared", "stage"), ("stage-rt", "bare"), ("stage-rt-ahead", "bare"), ("stage", "bare"), ("stage", "today"), ("stage", "new"), ("new", "bare"), ("new", "grouped"), ("new", "no-reuse"), ("new", "bs1"), ("bare", "today"))
              if x in rates and y in rates]
    print("ratios: " + ", ".join(ratios))
    print(f"load average at the end {load_average()}")
    print("prefix reuse contributes new/no-reuse, batching new/bs1 (the same loop in this process); stage/new is Ray's cost")


if __name__ == "__main__":
    main()
