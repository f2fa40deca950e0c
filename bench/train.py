"""Training pairs/s: the Ray Train trainer against a bare single-process torch loop on the same pairs, in one run.

    .venv/bin/python bench/train.py            # SQuAD v1.1 dev (question, paragraph) pairs, bundled e5-small
    .venv/bin/python bench/train.py --tiny     # 256 synthetic pairs on the tiny random BERT: seconds
    .venv/bin/python bench/train.py --tiny --pairs 64 --threads 1    # tests/test_bench_scripts.py: 4 steps

Both arms train the same steps on the same pairs in the same order
(``schedule.step_rows``) with the same :class:`ContrastiveStep` (tokenize,
forward questions and passages, mean pooling, InfoNCE, AdamW), one worker /
one process with ``--threads`` torch threads each, float32 on CPU:

1. bare: a Python loop over the steps in this process (model load excluded);
2. trainer: ``train_encoder`` -- ``TorchTrainer`` with one worker, the
   worker's pairs streamed from Ray Data, one checkpoint at the last step.

What is compared: pairs/s over the training loop (rank 0's loop time in the
trainer: reading its batches from Ray Data and the steps, up to the final
checkpoint; the bare loop's steps).  The trainer's whole call (Ray Train
start-up, worker and model start, the final checkpoint, copying the model out)
is printed too, and is a fixed cost that the loop rate leaves out; so are the
loop's time waiting for batches, and the CPU seconds per pair of each arm's
process (less distorted than wall time when the machine is shared).  Both arms
run at the driver's priority: the trainer's workers are started at the
driver's niceness (``trainer.run_config``), not Ray's default +15.  Goal:
trainer >= 0.8x bare.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from xqg_ray.config import EncoderConfig  # noqa: E402
from xqg_ray.models.loading import resolve_model  # noqa: E402
from xqg_ray.training.pairs import PAIRS_SCHEMA, canonical_order, training_texts  # noqa: E402
from xqg_ray.training.schedule import step_rows  # noqa: E402
from xqg_ray.training.settings import TrainSettings  # noqa: E402

WORDS = ("the quick brown fox jumps over lazy dog capital france founded spiel gewonnen football "
         "university river city century war king science question passage").split()


def synthetic_pairs(n: int) -> pa.Table:
    rng = np.random.default_rng(0)
    rows = []
    for i in range(n):
        w = rng.choice(WORDS, 40)
        rows.append({"id": i, "content_hash": f"h{i}", "title": "", "text": " ".join(w), "lang": "en", "query": " ".join(w[3:9]),
                     "qid": None, "source": "synthetic"})
    return pa.Table.from_pylist(rows, schema=PAIRS_SCHEMA)


def squad_pairs(root: Path, limit: int) -> pa.Table:
    """The first ``limit`` SQuAD dev questions with their paragraph (one question per paragraph: no duplicate positives)."""
    rows = []
    for part in ("part1.json", "part2.json"):
        for art in json.loads((root / "squad-v1.1-dev" / part).read_text())["data"]:
            for k, para in enumerate(art["paragraphs"]):
                qa = para["qas"][0]
                rows.append({"id": len(rows), "content_hash": f"{art['title']}-{k}", "title": art["title"].replace("_", " "),
                             "text": para["context"], "lang": "en", "query": qa["question"], "qid": qa["id"], "source": "squad"})
                if len(rows) == limit:
                    return pa.Table.from_pylist(rows, schema=PAIRS_SCHEMA)
    return pa.Table.from_pylist(rows, schema=PAIRS_SCHEMA)


def bare(pairs: pa.Table, enc: EncoderConfig, s: TrainSettings) -> tuple:
    """(seconds, CPU seconds of this process) of a plain loop over the same steps (model load excluded)."""
    import torch

    from xqg_ray.training.step import ContrastiveStep

    torch.set_num_threads(s.torch_threads)
    texts = training_texts(canonical_order(pairs), enc.query_prefix, enc.passage_prefix, enc.passage_template)
    rows = step_rows(texts.num_rows, s.global_batch, s.epochs, s.seed)
    model = ContrastiveStep(resolve_model(enc.model).path, enc, s, len(rows))
    cols = {k: np.asarray(texts[k].to_pylist(), dtype=object) for k in ("query", "passage")}
    ids = texts["id"].to_numpy()
    t0, c0 = time.perf_counter(), time.process_time()
    for i, r in enumerate(rows):
        model.step({"query": cols["query"][r], "passage": cols["passage"][r], "id": ids[r]}, i)
    return time.perf_counter() - t0, time.process_time() - c0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--tiny", action="store_true", help="tiny random BERT, synthetic pairs (seconds)")
    ap.add_argument("--pairs", type=int, default=256, help="pairs (SQuAD dev questions, one per paragraph; with --tiny synthetic ones)")
    ap.add_argument("--batch", type=int, default=16, help="global batch")
    ap.add_argument("--threads", type=int, default=2, help="torch threads of each arm")
    ap.add_argument("--datasets", default=str(REPO.parent / "shared" / "datasets"))
    a = ap.parse_args()
    from xqg_ray.config import RayConfig
    from xqg_ray.runtime.cluster import init_ray
    from xqg_ray.training.trainer import train_encoder

    if a.tiny:
        enc = EncoderConfig(model="tiny:tiny-bert", pooling="mean", query_prefix="query: ", passage_prefix="passage: ")
        pairs = synthetic_pairs(a.pairs)
    else:
        enc = EncoderConfig(model="bundled:multilingual-e5-small", pooling="mean", query_prefix="query: ", passage_prefix="passage: ",
                            max_passage_length=256)
        pairs = squad_pairs(Path(a.datasets), a.pairs)
    total = (pairs.num_rows // a.batch)
    s = TrainSettings(epochs=1, global_batch=a.batch, lr=2e-5, checkpoint_every=total, torch_threads=a.threads, cpus_per_worker=1)
    trained = total * a.batch
    t_bare, cpu_bare = bare(pairs, enc, s)
    # The pipeline's local cluster, started after the bare arm (stopped at exit); a no-op where this process
    # runs one already (tests/test_bench_scripts.py runs this script after others in one process).
    init_ray(RayConfig(num_cpus=max(2, a.threads), progress=False))
    with tempfile.TemporaryDirectory() as tmp:
        out = train_encoder(pairs, enc, s, os.path.join(tmp, "ck"), "bench", os.path.join(tmp, "model"))
    r_bare, r_ray = trained / t_bare, out.pairs_per_s
    print(f"model {enc.model}, {trained} pairs, {total} steps of {a.batch}, {a.threads} torch threads")
    print(f"bare loop:     {t_bare:8.2f} s  {r_bare:8.1f} pairs/s")
    print(f"trainer loop:  {out.loop_seconds:8.2f} s  {r_ray:8.1f} pairs/s   (whole call {out.wall_seconds:.1f} s: "
          f"{trained / out.wall_seconds:.1f} pairs/s with start-up)")
    print(f"trainer loop:  {out.read_seconds:8.2f} s waiting for batches, {out.step_seconds:.2f} s in steps")
    print(f"CPU seconds per pair: bare {cpu_bare / trained:.3f}, trainer worker {out.cpu_seconds / trained:.3f}")
    print("load average (1, 5, 15 min): {:.2f} {:.2f} {:.2f}".format(*os.getloadavg()))  # the machine is shared
    print(f"ratio trainer/bare: {r_ray / r_bare:.2f}x")


if __name__ == "__main__":
    main()
