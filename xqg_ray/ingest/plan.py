"""The read plan: which worker reads which bytes (or row groups) of which file, made from metadata only.

The driver never reads passage data.  It looks at file sizes, Parquet footers
and TSV header lines, and cuts:

* an uncompressed JSONL/TSV file into byte ranges of ``chunk_bytes``; a line
  belongs to the range where it *starts*, so no line is read twice or lost;
* a ``.gz`` file into one chunk (gzip cannot be entered in the middle);
* a Parquet file into runs of whole row groups (row numbers from the footer).

A file whose chunks are reused from the parent snapshot (:mod:`.reuse`) is not
opened at all: it gets its recorded number of ``reused`` chunks, so the chunk
numbering (and so which reducer merges which quarantine) is that of a full read.

Exact line numbers (the single-process reader's) come from a parallel pass
that counts the lines starting in each range; prefix sums per file give each
range its first line number.  The same pass reports the keys of the first
JSON object in each range, because a JSONL file's first object fixes its
docid column -- exactly as :func:`xqg_ray.ingest.readers.read_jsonl` does
when it reads a whole file.
"""

from __future__ import annotations

from typing import Any, Dict, List, Optional, Tuple

import pyarrow.parquet as pq

from ..config import StorageConfig
from ..runtime.cluster import current
from ..runtime.remote import remote_function
from ..store.storage import Storage
from .readers import check_columns, docid_column, first_json_keys, tsv_header
from .sources import count_lines, first_line, format_of, is_gzip, iter_range_lines, range_bytes


def count_range(storage_cfg: StorageConfig, uri: str, start: int, end: int, size: int,
                want_keys: bool) -> Tuple[int, Optional[List[str]]]:
    """(lines starting in [start, end), keys of the first JSON object among them or None)."""
    storage = Storage(storage_cfg)
    fs, path = storage.resolve(uri)
    with fs.open_input_file(path) as f:
        data, first = range_bytes(f, start, end, size)
    keys = None
    if want_keys:
        # Line numbers only matter for the BOM on line 1, which only the range at 0 holds.
        keys = first_json_keys(iter_range_lines(data, first, 1 if start == 0 else 2))
    return count_lines(data), keys


def _parquet_chunks(storage: Storage, uri: str, chunk_bytes: int) -> List[Dict[str, Any]]:
    fs, path = storage.resolve(uri)
    with fs.open_input_file(path) as f:
        meta = pq.ParquetFile(f).metadata
        check_columns(uri, meta.schema.to_arrow_schema().names)
    out: List[Dict[str, Any]] = []
    row, size = 1, 0
    for rg in range(meta.num_row_groups):
        info = meta.row_group(rg)
        # Consecutive row groups share a chunk until it holds chunk_bytes (uncompressed).
        if not out or size + info.total_byte_size > chunk_bytes:
            out.append({"kind": "parquet", "row_groups": [], "first_row": row})
            size = 0
        out[-1]["row_groups"].append(rg)
        size += info.total_byte_size
        row += info.num_rows
    return out


def make_plan(storage_cfg: StorageConfig, files: List[str], fmt: str, chunk_bytes: int,
              num_cpus: float, reused: Optional[Dict[int, int]] = None) -> List[Dict[str, Any]]:
    """The chunks of ``files`` in input order, each a JSON-able dict with ``chunk``, ``file_idx`` and ``part``
    (the chunk's index within its file).

    ``reused``: file index -> number of chunks, for the files not to be read (kind ``reused``).

    Raises :class:`~xqg_ray.ingest.sources.CorpusError` for a file whose header
    (TSV), footer (Parquet) or first JSON object (JSONL) lacks a required column.
    """
    if chunk_bytes < 1:
        raise ValueError(f"chunk_bytes must be >= 1, got {chunk_bytes}")
    storage = Storage(storage_cfg)
    chunks: List[Dict[str, Any]] = []
    for fi, uri in enumerate(files):
        kind = format_of(uri, fmt)
        base = {"file_idx": fi, "uri": uri, "fmt": kind}
        if reused and fi in reused:
            parts = [{"kind": "reused"} for _ in range(reused[fi])]
        elif kind == "parquet":
            parts = _parquet_chunks(storage, uri, chunk_bytes)
        else:
            header = tsv_header(uri, first_line(storage, uri)) if kind == "tsv" else None
            base.update(header=header, docid_key=None)
            if is_gzip(uri):
                parts = [{"kind": "whole", "first_line": 1}]
            else:
                fs, path = storage.resolve(uri)
                size = fs.get_file_info(path).size
                parts = [{"kind": "range", "start": s, "end": min(s + chunk_bytes, size), "size": size}
                         for s in range(0, size, chunk_bytes)]
        chunks.extend({**base, **p, "part": j} for j, p in enumerate(parts))
    for i, c in enumerate(chunks):
        c["chunk"] = i

    ranges = [c for c in chunks if c["kind"] == "range"]
    task = remote_function(count_range, num_cpus=num_cpus)
    counted = current().get([task.remote(storage_cfg, c["uri"], c["start"], c["end"], c["size"], c["fmt"] == "jsonl")
                             for c in ranges], "the line counts of the corpus files")
    next_line: Dict[int, int] = {}
    keys_of: Dict[int, List[str]] = {}
    for c, (n, keys) in zip(ranges, counted):  # ranges are in file, then offset order
        fi = c["file_idx"]
        c["first_line"] = next_line.get(fi, 1)
        next_line[fi] = c["first_line"] + n
        if keys is not None and fi not in keys_of:
            keys_of[fi] = keys
    for c in ranges:
        keys = keys_of.get(c["file_idx"])
        if c["fmt"] == "jsonl" and keys is not None:
            check_columns(c["uri"], keys)  # the message the single-process reader gives
            c["docid_key"] = docid_column(keys)
    return chunks
