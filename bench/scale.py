"""The whole job at N and 10 N passages: per stage time, rows/s, CPU-seconds; peak RSS per process kind; disk; a 1% update.

    .venv/bin/python bench/scale.py                 # 100k and 1M passages
    .venv/bin/python bench/scale.py --n 20000       # 20k and 200k
    .venv/bin/python bench/scale.py --tiny          # 200 and 2k (tests/test_bench_scripts.py)

Each size runs in its own process (a fresh driver and a fresh local Ray
cluster), one after the other; ``--tiny``, a smoke test of this script whose
figures mean nothing, runs both sizes one after the other in a single such
process (one cluster and model host instead of two: about 15 CPU-s of the
test suite) on a synthetic files-kind corpus (``bench/synth.py``) with the tiny
encoder, the baseline and one xQG system whose queries come from a provided
query table (one query per passage).  It prints, per stage, the seconds and
rows/s of ``metrics.json`` and the CPU-seconds of the driver's whole process
tree (driver, raylet, Ray workers, each sampled every 0.2 s so that a worker
that exits keeps what it used) between the stage's start and end events; the peak
RSS of each process kind -- the driver (its ``VmHWM``), model hosts
(``ray::ModelHost``), index build tasks (``ray::build_shard``), search actors
(``ray::ShardSearcher``): the largest ``VmRSS`` seen, every 0.2 s, while a
worker's title names that kind (a worker's ``VmHWM`` would carry the peak of
whatever task it ran before) --; the output directory's size; then the same command after adding 1%
new passages (a new input file that sorts after the others, as a growing
corpus's next shard does: an append, whose partitions reduce only its rows),
as CPU-seconds against the full build's, and the MB of corpus partitions,
embeddings and generated-query files it wrote (delta segments) against their
size.  The index has shards of about ``--rows-per-shard`` vectors (the shard
count grows with N, up to the partition count): an index build task holds one
shard, which the configuration sizes, and each of at most 4 search actors
(``ray.search.max_actors``, one per logical CPU) every 4th one.  The last line
compares the two sizes with the goals of issue 14 (every stage's time at 10 N
<= 11x, every process's peak <= 1.5x, a 1% update <= 5% of the build).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Dict, List

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "bench"))

# Process kind -> the marker Ray puts in a worker's title while it runs that class or task.
KINDS = {"model host": "ray::ModelHost", "index build": "ray::build_shard", "search actor": "ray::ShardSearcher"}
TICK = os.sysconf("SC_CLK_TCK")


def _children() -> Dict[int, List[int]]:
    out: Dict[int, List[int]] = {}
    for p in Path("/proc").iterdir():
        if p.name.isdigit():
            try:
                ppid = int((p / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            out.setdefault(ppid, []).append(int(p.name))
    return out


def tree(root: int) -> List[int]:
    """``root`` and every process below it."""
    kids, out, todo = _children(), [], [root]
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo += kids.get(pid, [])
    return out


def proc_cpu(pid: int) -> tuple:
    """(start time in ticks, user + system CPU-seconds) of one process, or None once it is gone."""
    try:
        f = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return int(f[19]), (int(f[11]) + int(f[12])) / TICK  # starttime; utime + stime (own threads only)


def status_mb(pid: int, field: str = "VmHWM") -> float:
    """``field`` of ``/proc/PID/status`` in MB (VmHWM: the lifetime peak; VmRSS: now); 0 once it is gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


class Sampler(threading.Thread):
    """Peak RSS per process kind and CPU-seconds of the driver's process tree, sampled every ``interval`` seconds.

    CPU is each process's own user + system time at its last sample, summed over
    every process ever seen (keyed by pid and start time): a Ray worker that
    exits keeps what it used up to its last sample (at most ``interval`` is lost).
    """

    def __init__(self, interval: float = 0.2):
        super().__init__(daemon=True)
        self.interval, self.peak = interval, {k: 0.0 for k in ("driver", *KINDS)}
        self.cpu: Dict[tuple, float] = {}
        self.stop = threading.Event()
        self.lock = threading.Lock()

    def sample(self) -> None:
        with self.lock:
            me = os.getpid()
            self.peak["driver"] = max(self.peak["driver"], status_mb(me))
            for pid in tree(me):
                c = proc_cpu(pid)
                if c is not None:
                    self.cpu[(pid, c[0])] = max(self.cpu.get((pid, c[0]), 0.0), c[1])
                try:
                    cmd = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
                except OSError:
                    continue
                # A Ray worker runs many tasks in turn and its VmHWM keeps the largest: a kind's peak is
                # its RSS while the worker's title names that kind (an actor's, for its whole life).
                kind = next((k for k, mark in KINDS.items() if mark in cmd), None)
                if kind is not None:
                    self.peak[kind] = max(self.peak[kind], status_mb(pid, "VmRSS"))

    def cpu_seconds(self) -> float:
        """CPU-seconds of the process tree so far (sampled now)."""
        self.sample()
        return sum(self.cpu.values())

    def run(self) -> None:
        while not self.stop.wait(self.interval):
            self.sample()


def stage_cpu_recorder(sampler: Sampler) -> Dict[str, float]:
    """CPU-seconds of the process tree per stage, from the driver's stage start and done events."""
    from xqg_ray.progress import StageTimer

    spent: Dict[str, float] = {}
    started: Dict[str, float] = {}
    real = StageTimer.event

    def event(self, stage: str, event: str, **fields) -> None:
        if event == "start":
            started[stage] = sampler.cpu_seconds()
        elif event == "done" and stage in started:
            spent[stage] = sampler.cpu_seconds() - started.pop(stage)
        real(self, stage, event, **fields)

    StageTimer.event = event
    return spent


def du_mb(path: Path) -> float:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) / 2**20


def written_mb(d: Path, before: set) -> float:
    """MB of the files under ``d`` that are not in ``before``: what an update wrote there."""
    return sum(p.stat().st_size for p in d.iterdir() if p not in before) / 2**20


def shards_for(n: int, rows_per_shard: int, partitions: int) -> int:
    """The shard count that keeps a shard at most ``rows_per_shard`` vectors: what an index build task and a
    search actor hold grows with a shard, which the configuration sizes (as conf/xor-tydi.yaml's 16
    shards of ~1.1M vectors), not with the corpus.  One shard where the corpus fits in one: with at
    least two, 100k passages made shards of 50k against 1M's 125k, and the peak-memory ratio then
    measured the shard size (2.5x), not the scale."""
    return max(1, min(partitions, -(-n // rows_per_shard)))


def one(n: int, work: Path, partitions: int, shards: int) -> dict:
    import pyarrow as pa
    import pyarrow.parquet as pq
    from synth import write_corpus, write_queries

    from xqg_ray.config import SystemConfig, load_config
    from xqg_ray.pipeline import run

    files = write_corpus(work / "corpus", n, files=8)
    queries = write_queries(work / "queries.parquet", files)
    provided = work / "provided.parquet"  # one German query per passage: its title's words
    pq.write_table(pa.table({"docid": [f"s{i}" for i in range(n)], "lang": ["de"] * n, "text": [f"wo ist title {i}" for i in range(n)]}), provided)
    out = work / "out"
    cfg = load_config(str(REPO / "conf" / "smoke.yaml"), [
        f"output_dir={out}", "benchmark.kind=files", f"benchmark.corpus={work / 'corpus'}", f"benchmark.queries={queries}",
        "benchmark.corpus_limit=0", "benchmark.max_queries_per_language=0", "benchmark.languages=[]",
        f"corpus.num_partitions={partitions}", f"index.num_shards={shards}", "index.factory=Flat", "ray.progress=false",
        # one search actor per logical CPU of the smoke config's 4 (ray.num_cpus), each holding every 4th
        # shard: an actor's start (~1.2 CPU-s) was most of a small search and of an update's
        "ray.search.num_cpus=1", "ray.search.max_actors=4",
        "generators.human.kind=provided", f"generators.human.path={provided}",
    ])
    cfg.generators = {"human": cfg.generators["human"]}
    cfg.systems = [s for s in cfg.systems if s.name == "baseline"] + [SystemConfig(name="human-mean", generator="human", alpha=0.3, aggregation="mean")]
    sampler = Sampler()
    spent = stage_cpu_recorder(sampler)
    sampler.start()
    c0, t0 = sampler.cpu_seconds(), time.perf_counter()
    m = run(cfg)
    full_cpu, full_s = sampler.cpu_seconds() - c0, time.perf_counter() - t0
    stages = {name: {"seconds": st["seconds"], "rows_per_s": st["rows_per_s"], "rows": st["rows"], "cpu_s": round(spent.get(name, 0.0), 2)}
              for name, st in m["stages"].items()}
    peak = dict(sampler.peak)  # the full build's peaks (the update below only adds to the CPU count)
    disk = du_mb(out)
    k = max(1, n // 100)
    emb_before = set((out / "embeddings" / "data").iterdir())
    gen_dir = out / "generated" / "human" / "data"
    gen_before = set(gen_dir.iterdir())
    parts_dir = out / "corpus" / "parts"
    parts_before = set(parts_dir.iterdir())
    write_corpus(work / "corpus", k, files=1, seed=7, start=n, prefix="update")  # sorts after the part-* files: an append
    spent.clear()
    c1 = sampler.cpu_seconds()
    um = run(cfg)
    update_cpu = sampler.cpu_seconds() - c1
    emb_written = written_mb(out / "embeddings" / "data", emb_before)
    gen_written = written_mb(gen_dir, gen_before)
    parts_written = written_mb(parts_dir, parts_before)
    update_stages = {name: {"cpu_s": round(spent.get(name, 0.0), 2), "reused": st["reused"]} for name, st in um["stages"].items()}
    sampler.stop.set()
    return {"passages": n, "seconds": round(full_s, 1), "cpu_s": round(full_cpu, 2), "stages": stages,
            "peak_rss_mb": {kind: round(v, 1) for kind, v in peak.items()}, "disk_mb": round(disk, 1),
            "update": {"added": k, "cpu_s": round(update_cpu, 2), "ratio": round(update_cpu / full_cpu, 4) if full_cpu else None,
                       "stages": update_stages, "embeddings_written_mb": round(emb_written, 2),
                       "embeddings_mb": round(du_mb(out / "embeddings" / "data"), 2),
                       "generated_written_mb": round(gen_written, 3), "generated_mb": round(du_mb(gen_dir), 2),
                       "corpus_written_mb": round(parts_written, 3), "corpus_mb": round(du_mb(parts_dir), 2)}}


def print_size(r: dict) -> None:
    n = r["passages"]
    for name, st in r["stages"].items():
        rate = f"{st['rows_per_s']:.0f} rows/s" if st["rows_per_s"] else "reused"
        print(f"N={n} {name}: {st['seconds']:.2f} s, {rate}, {st['cpu_s']:.2f} CPU-s")
    print(f"N={n} peak RSS MB: " + ", ".join(f"{k} {v:.0f}" for k, v in r["peak_rss_mb"].items()))
    print(f"N={n} total: {r['seconds']:.1f} s, {r['cpu_s']:.1f} CPU-s; disk {r['disk_mb']:.1f} MB")
    u = r["update"]
    print(f"N={n} update +1% ({u['added']} passages): {u['cpu_s']:.2f} CPU-s = {u['ratio']:.3f} of the full build's {r['cpu_s']:.2f} CPU-s; "
          "by stage: " + ", ".join(f"{s} {st['cpu_s']:.2f}" + (" (reused)" if st["reused"] else "") for s, st in u["stages"].items())
          + f"; embeddings written {u['embeddings_written_mb']:.2f} MB of {u['embeddings_mb']:.2f} MB"
          + f"; generated queries written {u['generated_written_mb']:.3f} MB of {u['generated_mb']:.2f} MB"
          + f"; corpus partitions written {u['corpus_written_mb']:.3f} MB of {u['corpus_mb']:.2f} MB")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=100_000)
    ap.add_argument("--factor", type=int, default=10)
    ap.add_argument("--partitions", type=int, default=16)
    ap.add_argument("--shards", type=int, default=0, help="index.num_shards (0: about --rows-per-shard vectors each)")
    ap.add_argument("--rows-per-shard", type=int, default=125_000,
                    help="with --shards 0: index.num_shards = passages / this, at least 2, at most --partitions")
    ap.add_argument("--tiny", action="store_true", help="200 and 2,000 passages, 2 partitions (the test's mode)")
    ap.add_argument("--one", help=argparse.SUPPRESS)  # the sizes this process builds, comma-separated
    ap.add_argument("--work", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.tiny:
        a.n, a.partitions = 200, 2
    if a.one:
        for n in map(int, a.one.split(",")):
            work = Path(a.work) / str(n)
            work.mkdir()
            shards = a.shards or shards_for(n, a.rows_per_shard, a.partitions)
            print("RESULT " + json.dumps(one(n, work, a.partitions, shards)), flush=True)
        return
    sizes = [a.n, a.n * a.factor]
    rows = []
    with tempfile.TemporaryDirectory() as d:
        env = {**os.environ, "RAY_AUTH_MODE": "disabled", "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
        # A process per size, one after the other; --tiny: one process for both.
        for group in ([sizes] if a.tiny else [[n] for n in sizes]):
            work = Path(d) / "-".join(map(str, group))
            work.mkdir()
            args = [sys.executable, __file__, "--one", ",".join(map(str, group)), "--work", str(work), "--partitions", str(a.partitions)]
            if a.shards:
                args += ["--shards", str(a.shards)]
            args += ["--rows-per-shard", str(a.rows_per_shard)]
            # Output to files, not pipes: the child never blocks on a full pipe.
            with (work / "stdout").open("w") as out, (work / "stderr").open("w") as err:
                if subprocess.run(args, env=env, stdout=out, stderr=err, text=True, cwd=REPO).returncode:
                    sys.exit((work / "stderr").read_text()[-3000:])
            for line in (work / "stdout").read_text().splitlines():
                if line.startswith("RESULT "):
                    rows.append(json.loads(line[7:]))
                    print_size(rows[-1])
                    sys.stdout.flush()
    small, big = rows
    timed = [s for s, st in big["stages"].items() if s in small["stages"] and small["stages"][s]["seconds"] > 0]
    t_ratio = max(big["stages"][s]["seconds"] / small["stages"][s]["seconds"] for s in timed)
    worst = max(timed, key=lambda s: big["stages"][s]["seconds"] / small["stages"][s]["seconds"])
    kinds = [k for k, v in small["peak_rss_mb"].items() if v > 0 and big["peak_rss_mb"].get(k, 0) > 0]
    m_ratio = max(big["peak_rss_mb"][k] / small["peak_rss_mb"][k] for k in kinds)
    print(f"scale {small['passages']} -> {big['passages']}: max stage time ratio {t_ratio:.2f}x ({worst}; goal <= 11), "
          f"max peak RSS ratio {m_ratio:.2f}x (goal <= 1.5), 1% update at {big['passages']}: "
          f"{big['update']['ratio']:.3f} of the full build's CPU-s (goal <= 0.05)")


if __name__ == "__main__":
    main()
