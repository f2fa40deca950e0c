"""Small file builders and data locations shared by the corpus/benchmark tests.

Tests write their own tiny inputs (so every odd case -- broken UTF-8, a bad
JSON line -- is spelled out next to the assertion that checks it) and use the
real XQuAD/SQuAD files only where the real numbers matter.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Dict, Iterable, List, Optional, Union

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

Line = Union[bytes, str, Dict[str, Any]]


def shared_datasets() -> Optional[Path]:
    """``shared/datasets`` beside the repo (``XQG_SHARED_DATASETS`` overrides), or None."""
    env = os.environ.get("XQG_SHARED_DATASETS")
    path = Path(env) if env else Path(__file__).resolve().parents[2] / "shared" / "datasets"
    if (path / "xquad").is_dir() and (path / "squad-v1.1-dev").is_dir():
        return path
    return None


def line_bytes(line: Line) -> bytes:
    """A dict becomes a JSON line, str is UTF-8 encoded, bytes are kept as they are."""
    if isinstance(line, dict):
        return json.dumps(line, ensure_ascii=False).encode("utf-8")
    if isinstance(line, str):
        return line.encode("utf-8")
    return line


def write_lines(path: Path, lines: Iterable[Line], eol: bytes = b"\n") -> Path:
    """Write lines exactly (bytes allowed, so invalid UTF-8 can be planted)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"".join(line_bytes(x) + eol for x in lines))
    return path


def string_array_unchecked(values: List[bytes]) -> pa.Array:
    """A pa.string() array holding arbitrary bytes (Arrow skips UTF-8 validation here),
    the way a foreign writer can put invalid UTF-8 into a Parquet string column."""
    offsets = np.zeros(len(values) + 1, dtype=np.int32)
    offsets[1:] = np.cumsum([len(v) for v in values])
    return pa.Array.from_buffers(
        pa.string(), len(values), [None, pa.py_buffer(offsets.tobytes()), pa.py_buffer(b"".join(values))]
    )


def write_parquet(path: Path, columns: Dict[str, Any]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table(columns), path)
    return path


def squad_json(articles: List[Dict[str, Any]]) -> Dict[str, Any]:
    """SQuAD v1.1 layout from [{"title", "paragraphs": [{"context", "qas": [(id, q, answer)]}]}]."""
    data = []
    for a in articles:
        paras = []
        for p in a["paragraphs"]:
            qas = [
                {"id": qid, "question": q, "answers": [{"answer_start": max(0, p["context"].find(ans)), "text": ans}]}
                for qid, q, ans in p["qas"]
            ]
            paras.append({"context": p["context"], "qas": qas})
        data.append({"title": a["title"], "paragraphs": paras})
    return {"version": "1.1", "data": data}
