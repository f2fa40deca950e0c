"""Encode rows/s: the project's encode stage through Ray Data against a bare length-sorted loop, in one run.

    .venv/bin/python bench/encode.py                # all 2,067 SQuAD-dev passages, e5-small, max length 512
    .venv/bin/python bench/encode.py --limit 300    # while developing

Data: the first ``--limit`` (0 = all) SQuAD v1.1 dev paragraphs, ingested
with ``xqg_ray.ingest.ingest_corpus`` into ``--partitions`` committed
partitions; every arm encodes the same passage strings ("passage: " + the
stage's ``{title} {text}`` template), multilingual-e5-small, mean pooling,
L2-normalised, float32 on CPU.  Arms, one after the other (Ray starts, and the
ingest runs, only for the last):

1. peak: the best float32 ``torch.matmul`` rate over the model's own GEMM
   shapes (4096 tokens x 384 -> 1536 and back) with ``--threads`` threads;
2. bare: tokenize everything once for lengths, sort by token length, batches
   of ``--batch-size`` re-tokenized with padding, forward, masked mean + L2
   normalise in torch (no project code but the model path);
3. direct: ``Encoder.encode`` on all passages at once (model load excluded);
4. stage: ``run_units(units, EncodePartition, ctor, pool)`` as ``run_encode``
   builds them (one unit per partition, no generators), on a local Ray
   cluster, ``--actors`` actors of ``--threads`` torch threads each; the time
   includes Ray Data start-up, actor start and model load, reading the
   partitions and writing and committing the embeddings.

FLOPs count non-padding tokens only.  For a text of n tokens (specials
included, after truncation), L layers, hidden H, intermediate I:
``2 * L * (4 H^2 + 2 H I) * n  +  4 * L * H * n^2`` (the linear layers, then
QK^T and AV); embeddings, softmax, layer norms and the pooler are left out.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, List, Tuple

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("RAY_ENABLE_UV_RUN_RUNTIME_ENV", "0")


def matmul_peak(threads: int, hidden: int, inter: int, tokens: int = 4096, reps: int = 5) -> float:
    """Best float32 GFLOP/s of the model's two FFN GEMM shapes."""
    import torch

    torch.set_num_threads(threads)
    best = 0.0
    for k, n in ((hidden, inter), (inter, hidden)):
        a, b = torch.randn(tokens, k), torch.randn(k, n)
        torch.matmul(a, b)  # warm-up
        for _ in range(reps):
            t = time.perf_counter()
            torch.matmul(a, b)
            best = max(best, 2 * tokens * k * n / (time.perf_counter() - t) / 1e9)
    return best


def model_flops(lengths: "Any", cfg: "Any") -> float:
    """The docstring's formula summed over texts of ``lengths`` tokens."""
    import numpy as np

    n = np.asarray(lengths, np.float64)
    L, H, inter = cfg.num_hidden_layers, cfg.hidden_size, cfg.intermediate_size
    return float(2 * L * (4 * H * H + 2 * H * inter) * n.sum() + 4 * L * H * (n * n).sum())


def bare_loop(path: str, texts: List[str], max_len: int, batch_size: int, threads: int) -> Tuple["Any", float, float]:
    """(vectors in input order, seconds, CPU seconds): the plain length-sorted loop; model load excluded."""
    import numpy as np
    import torch
    from transformers import AutoModel, AutoTokenizer

    torch.set_num_threads(threads)
    tok = AutoTokenizer.from_pretrained(path)
    model = AutoModel.from_pretrained(path, dtype=torch.float32).eval()
    out = np.zeros((len(texts), model.config.hidden_size), np.float32)
    t, c = time.perf_counter(), time.process_time()
    lengths = [len(x) for x in tok(texts, truncation=True, max_length=max_len)["input_ids"]]
    order = sorted(range(len(texts)), key=lambda i: (lengths[i], i))
    with torch.inference_mode():
        for s in range(0, len(order), batch_size):
            idx = order[s : s + batch_size]
            enc = tok([texts[i] for i in idx], padding=True, truncation=True, max_length=max_len, return_tensors="pt")
            h = model(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"]).last_hidden_state
            m = enc["attention_mask"].unsqueeze(-1).float()
            v = torch.nn.functional.normalize((h * m).sum(1) / m.sum(1), dim=1)
            out[idx] = v.numpy()
    return out, time.perf_counter() - t, time.process_time() - c


def read_passages(source: str, limit: int) -> List[Dict[str, str]]:
    from xqg_ray.benchmark.xquad import read_xquad_source

    paras = read_xquad_source(source, languages=["en"]).paragraphs
    return [{"docid": d, "title": title, "text": text} for _, _, d, title, text in (paras[:limit] if limit else paras)]


def stage_units(root: str, snap: Dict[str, Any], cfg: Any) -> List[Dict[str, Any]]:
    """The embeddings units ``run_encode`` plans for a snapshot with no generators and no prior output."""
    from xqg_ray.stages.encode import EMB, encoder_key, passage_units
    from xqg_ray.store.ledger import Ledger
    from xqg_ray.store.storage import Storage

    return [u.to_json() for u in passage_units(Ledger(Storage(), root, EMB), snap, encoder_key(cfg), {}).values()]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--limit", type=int, default=0, help="first N SQuAD-dev passages (0 = all 2,067)")
    ap.add_argument("--source", default=str(REPO.parent / "shared" / "datasets"))
    ap.add_argument("--model", default="bundled:multilingual-e5-small")
    ap.add_argument("--max-len", type=int, default=512)
    ap.add_argument("--batch-size", type=int, default=16,
                    help="bare loop rows per batch; encoder.batch_size (padded tokens per forward: this x max length, CPU-capped)")
    ap.add_argument("--threads", type=int, default=2, help="torch threads of the bare loop, the direct call and each actor")
    ap.add_argument("--actors", type=int, default=1)
    ap.add_argument("--partitions", type=int, default=8)
    ap.add_argument("--num-cpus", type=int, default=4, help="logical CPUs of the local Ray cluster")
    a = ap.parse_args()
    import logging

    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq
    import ray

    from xqg_ray.arrow_utils import arrow_to_vectors
    from xqg_ray.config import EncoderConfig, Pool, RayConfig, StorageConfig
    from xqg_ray.ids import passage_ids
    from xqg_ray.ingest import ingest_corpus
    from xqg_ray.models.encoder import Encoder, format_passage, length_order, plan_batches
    from xqg_ray.models.loading import resolve_model
    from xqg_ray.runtime.cluster import init_ray
    from xqg_ray.runtime.units import run_units
    from xqg_ray.stages.encode_actor import EncodePartition

    logging.getLogger("ray.data").setLevel(logging.WARNING)  # no per-10 s progress lines
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    cfg = EncoderConfig(model=a.model, pooling="mean", normalize=True, query_prefix="query: ", passage_prefix="passage: ",
                        max_passage_length=a.max_len, batch_size=a.batch_size, dtype="float32")
    with tempfile.TemporaryDirectory() as d:
        passages = read_passages(a.source, a.limit)
        ids = passage_ids(p["docid"] for p in passages)  # the ids the ingest gives them
        texts = [format_passage(cfg.passage_template, p["title"], p["text"]) for p in passages]
        n = len(texts)

        t = time.perf_counter()
        enc = Encoder(cfg, a.threads)
        t_load = time.perf_counter() - t
        mcfg = enc.model.config
        peak = matmul_peak(a.threads, mcfg.hidden_size, mcfg.intermediate_size)
        lengths = enc.tokenize([cfg.passage_prefix + x for x in texts], a.max_len)[2]
        flops = model_flops(lengths, mcfg)
        srt = np.sort(lengths)
        bare_pad = sum(int(srt[min(s + a.batch_size, n) - 1]) * (min(s + a.batch_size, n) - s) for s in range(0, n, a.batch_size))
        x = lengths[length_order(lengths)]
        plan = plan_batches(x, enc.budget(a.max_len), enc.overhead, enc.quad)
        plan_pad = sum(int(x[s]) * (e - s) for s, e in plan)
        print(f"{n} passages, {int(lengths.sum()):,} tokens (mean {lengths.mean():.0f}, max {lengths.max()}), "
              f"{flops / 1e12:.2f} TFLOP; matmul peak {peak:.0f} GFLOP/s ({a.threads} threads); model load {t_load:.1f} s", flush=True)

        def line(name: str, secs: float, extra: str = "") -> None:
            print(f"{name:7s} {n / secs:7.2f} rows/s  {secs:7.1f} s  {flops / secs / 1e9:6.1f} GFLOP/s = {flops / secs / 1e9 / peak:4.0%} of peak{extra}",
                  flush=True)

        v_bare, t_bare, c_bare = bare_loop(resolve_model(a.model).path, [cfg.passage_prefix + x for x in texts], a.max_len, a.batch_size, a.threads)
        line("bare", t_bare, f"  ({-(-n // a.batch_size)} batches of {a.batch_size}, padding +{bare_pad / lengths.sum() - 1:.1%}; {c_bare:.0f} CPU s)")
        t, c = time.perf_counter(), time.process_time()
        v_direct = enc.encode(texts, "passage")
        t_direct, c_direct = time.perf_counter() - t, time.process_time() - c
        line("direct", t_direct, f"  Encoder.encode ({len(plan)} forwards, padding +{plan_pad / lengths.sum() - 1:.1%}; {c_direct:.0f} CPU s); "
                                 f"max |diff| vs bare {np.abs(v_direct - v_bare).max():.1e}")
        del enc

        # Ray starts after the in-process arms, which run with no Ray processes beside them.  Where this
        # process already runs Ray (tests/test_bench_scripts.py runs the tiny mode beside other scripts),
        # init_ray does nothing, and the cluster is left running.
        started = not ray.is_initialized()
        init_ray(RayConfig(address="local", num_cpus=a.num_cpus, progress=False))
        jsonl = Path(d) / "passages.jsonl"
        jsonl.write_text("".join(json.dumps(p) + "\n" for p in passages))
        root = str(Path(d) / "out")
        snap = ingest_corpus(StorageConfig(), root, [str(jsonl)], num_partitions=a.partitions)
        units = stage_units(root, snap, cfg)
        pool = Pool(num_cpus=1.0, num_gpus=0.0, min_actors=a.actors, max_actors=a.actors, torch_threads=a.threads)
        ctor = {"root": root, "storage_cfg": StorageConfig(), "cfg": cfg, "threads": a.threads}
        t = time.perf_counter()
        run_units(units, EncodePartition, ctor, pool)
        t_stage = time.perf_counter() - t
        emb = pa.concat_tables([pq.read_table(Path(root) / u["out"], columns=["id", "vector"]) for u in units])
        got = dict(zip(emb["id"].to_pylist(), arrow_to_vectors(emb["vector"])))
        v_stage = np.stack([got[i] for i in ids.tolist()])
        line("stage", t_stage, f"  run_units EncodePartition, {len(units)} partitions, {a.actors} actor(s) x {a.threads} threads; "
                               f"max |diff| vs direct {np.abs(v_stage - v_direct).max():.1e}")
        if started:
            ray.shutdown()
    print(f"ratio stage/bare {t_bare / t_stage:.2f}x, direct/bare {t_bare / t_direct:.2f}x "
          f"(stage time includes Ray start-up and one model load of {t_load:.1f} s per actor)")


if __name__ == "__main__":
    main()
