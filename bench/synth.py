"""A synthetic files-kind benchmark of any size: JSONL passages, a query table with gold passages.

Deterministic (seeded), so a benchmark's two arms and two sizes read the same
kind of data.  ``add`` writes an extra file of new passages: an incremental update.
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import List

import pyarrow as pa
import pyarrow.parquet as pq

WORDS = ("river city king war science music football university church empire language island bridge "
         "museum railway emperor treaty planet ocean mountain desert festival harbour castle garden").split()


def _text(rng: random.Random, n: int = 60) -> str:
    return " ".join(rng.choice(WORDS) + str(rng.randrange(500)) for _ in range(n))


def write_corpus(root: Path, n: int, files: int = 4, seed: int = 0, start: int = 0, prefix: str = "part") -> List[Path]:
    """``n`` passages (docids ``s{start}``..) in ``files`` JSONL files under ``root``."""
    rng = random.Random(seed)
    root.mkdir(parents=True, exist_ok=True)
    out, per = [], -(-n // files)
    for f in range(files):
        path = root / f"{prefix}-{f:03d}.jsonl"
        with path.open("w") as fh:
            for i in range(start + f * per, min(start + n, start + (f + 1) * per)):
                fh.write(json.dumps({"docid": f"s{i}", "title": f"Title {i}", "text": _text(rng)}) + "\n")
        out.append(path)
    return out


def write_queries(path: Path, corpus_files: List[Path], n: int = 40, seed: int = 1) -> Path:
    """``n`` questions (de) whose gold passage and answer come from the first corpus file."""
    rng = random.Random(seed)
    lines = corpus_files[0].read_text().splitlines()
    rows = []
    for i in range(n):
        p = json.loads(lines[rng.randrange(len(lines))])
        words = p["text"].split()
        rows.append({"qid": f"q{i}", "lang": "de", "text": " ".join(words[3:9]), "answers": [words[5]], "gold_docid": p["docid"]})
    pq.write_table(pa.Table.from_pylist(rows), path)
    return path
