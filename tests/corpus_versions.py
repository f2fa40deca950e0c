"""Two versions of a small files-kind benchmark (XQuAD paragraphs, de/zh questions), and output readers.

Version 2 of the corpus adds a file with 3 passages, edits 2 passages and
removes 2 (none of them gold passages): the incremental-update tests compare
an update from version 1 with a from-scratch build of version 2.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Dict, List, Tuple

import pyarrow as pa
import pyarrow.parquet as pq

N_PASSAGES = 60
ADDED = ["x60", "x61", "x62"]
CHANGED = ["x40", "x41"]
REMOVED = ["x50", "x51"]


def _paragraphs(shared: Path) -> Tuple[list, Dict[str, Dict[str, str]]]:
    en = json.loads((shared / "xquad" / "xquad.en.json").read_text())["data"]
    paras = [(a["title"], p["context"], p["qas"]) for a in en for p in a["paragraphs"]]
    tr = {}
    for lang in ("de", "zh"):
        data = json.loads((shared / "xquad" / f"xquad.{lang}.json").read_text())["data"]
        tr[lang] = {qa["id"]: qa["question"] for a in data for p in a["paragraphs"] for qa in p["qas"]}
    return paras, tr


def write_version(shared: Path, corpus_dir: Path, version: int) -> None:
    """Replace ``corpus_dir``'s files with version 1 or 2 of the corpus."""
    paras, _ = _paragraphs(shared)
    if corpus_dir.exists():
        shutil.rmtree(corpus_dir)
    corpus_dir.mkdir(parents=True)
    rows = [{"docid": f"x{i}", "title": t, "text": c} for i, (t, c, _) in enumerate(paras[:N_PASSAGES])]
    if version == 2:
        rows = [r for r in rows if r["docid"] not in REMOVED]
        for r in rows:
            if r["docid"] in CHANGED:
                r["text"] += " (revised)"
        added = [{"docid": d, "title": paras[int(d[1:])][0], "text": paras[int(d[1:])][1]} for d in ADDED]
        (corpus_dir / "b.jsonl").write_text("".join(json.dumps(r) + "\n" for r in added))
    (corpus_dir / "a.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))


def write_queries(shared: Path, path: Path) -> Path:
    """Two questions in de and zh for each of the first 12 passages (gold = that passage)."""
    paras, tr = _paragraphs(shared)
    rows = []
    for i, (_, _, qas) in enumerate(paras[:12]):
        for qa in qas[:2]:
            for lang in ("de", "zh"):
                rows.append({"qid": f"{qa['id']}-{lang}", "lang": lang, "text": tr[lang][qa["id"]],
                             "answers": [a["text"] for a in qa["answers"]], "gold_docid": f"x{i}"})
    pq.write_table(pa.Table.from_pylist(rows), path)
    return path


def files_overrides(corpus_dir, queries, out) -> List[str]:
    return [f"output_dir={out}", "benchmark.kind=files", f"benchmark.corpus={corpus_dir}", f"benchmark.queries={queries}",
            "benchmark.corpus_limit=0", "benchmark.max_queries_per_language=0", "ray.progress=false"]


def current(out: Path, stage: str) -> dict:
    """The published manifest of ``stage`` under a local output directory."""
    ptr = json.loads((out / stage / "current.json").read_text())
    return json.loads((out / ptr["manifest"]).read_text())


def read_trec(path: Path) -> Dict[str, List[Tuple[str, float]]]:
    runs: Dict[str, list] = {}
    for line in path.read_text().splitlines():
        qid, _, docid, rank, score, _ = line.split()
        runs.setdefault(qid, []).append((int(rank), docid, float(score)))
    return {q: [(d, s) for _, d, s in sorted(v)] for q, v in runs.items()}


def assert_same_runs(a: Path, b: Path, tol: float = 1e-4) -> None:
    """Same docid at every rank except where two scores tie within ``tol`` (also across the k-th
    rank, where float noise of a differently composed shard can swap which one is kept); scores within ``tol``."""
    ra, rb = read_trec(a), read_trec(b)
    assert ra.keys() == rb.keys()
    for qid in ra:
        assert len(ra[qid]) == len(rb[qid]), qid
        for r, ((da, sa), (db, sb)) in enumerate(zip(ra[qid], rb[qid])):
            assert abs(sa - sb) <= tol, (qid, r, sa, sb)
            if da != db:
                near = [s for d, s in ra[qid] if d == db]
                if near:
                    assert abs(near[0] - sa) <= tol, (qid, r, da, db)
                else:  # cut at the k-th rank: only a near-tie with the last kept score may fall off
                    assert abs(sb - ra[qid][-1][1]) <= tol, (qid, r, da, db, sb, ra[qid][-1])
