"""Single-process corpus reading: passage files (JSONL, TSV, Parquet) into one clean table.

This is the one-process baseline (used by the benchmark code and to check the
distributed ingest of :mod:`xqg_ray.ingest` against); the row rules themselves
live in :mod:`xqg_ray.ingest.readers` so both paths give every row the same
verdict.

A corpus is untrusted input: a dump can carry a line with broken UTF-8, a row
without text, or the same docid twice.  None of that should kill a multi-hour
run, and none of it may vanish silently either.  :func:`read_corpus` therefore
splits every row it reads into exactly one of two tables:

* ``clean`` (:data:`CLEAN_SCHEMA`): ``docid, id, title, text, content_hash`` in
  input order (files in the given/sorted order, then line order);
* ``quarantine`` (:data:`QUARANTINE_SCHEMA`): ``source, line, docid, reason,
  raw`` for every row that was set aside, with a human-readable reason.

``len(clean) + len(quarantine) == rows_read`` always holds.  Only problems that
make the whole input meaningless raise :class:`CorpusError`: a required column
missing, an unreadable header, no files, or two docids whose int64 ids collide
(merging them would silently make two passages one in the index).

Blank (whitespace-only) lines are not rows: they are counted in
``CorpusRead.blank_lines`` so that a trailing newline is not "a bad row".
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, List, Sequence, Tuple, Union

import pyarrow as pa

from ..ids import passage_id
from ..ingest.readers import (
    CLEAN_SCHEMA,
    DOCID_COLUMNS,
    MAX_PASSAGE_CHARS,
    QUARANTINE_SCHEMA,
    RAW_LIMIT,
    Collector,
    check_id_collisions,
    read_jsonl,
    read_parquet,
    read_tsv,
    tsv_header,
)
from ..ingest.sources import FORMATS, CorpusError, decode_line, first_line, format_of, iter_lines, list_corpus_files
from ..store.storage import Storage

__all__ = [
    "CLEAN_SCHEMA",
    "DOCID_COLUMNS",
    "FORMATS",
    "QUARANTINE_SCHEMA",
    "RAW_LIMIT",
    "CorpusError",
    "CorpusRead",
    "collect_passages",
    "decode_line",
    "format_of",
    "iter_lines",
    "list_corpus_files",
    "read_corpus",
]


@dataclass
class CorpusRead:
    """Result of :func:`read_corpus`."""

    clean: pa.Table
    quarantine: pa.Table
    rows_read: int = 0  # data rows seen (header and blank lines excluded)
    blank_lines: int = 0
    files: List[str] = field(default_factory=list)


def _collector(max_passage_chars: int) -> Collector:
    # Looked up at call time so the module-level ``passage_id`` stays patchable (tests force collisions).
    return Collector(id_fn=lambda docid: passage_id(docid), max_passage_chars=max_passage_chars)


def _finish(col: Collector) -> CorpusRead:
    clean = col.clean_table()
    check_id_collisions(clean)
    quarantine = col.quarantine_table()
    assert clean.num_rows + quarantine.num_rows == col.rows_read, "a row went missing"
    return CorpusRead(clean, quarantine, col.rows_read, col.blank_lines, list(col.sources))


def collect_passages(rows: Sequence[Tuple[str, int, Any, Any, Any]],
                     max_passage_chars: int = MAX_PASSAGE_CHARS) -> CorpusRead:
    """Validate in-memory passages ``(source, line, docid, title, text)`` like a file.

    Used by the benchmark for SQuAD paragraphs so the same rules and schemas apply.
    """
    col = _collector(max_passage_chars)
    for source, line, docid, title, text in rows:
        src = col.source(source)
        col.add(src, line, docid, title, text, {"docid": docid, "title": title, "text": text})
    return _finish(col)


def read_corpus(storage: Storage, uris: Union[str, List[str]], fmt: str = "auto",
                max_passage_chars: int = MAX_PASSAGE_CHARS) -> CorpusRead:
    """Read passage file(s) into a clean table and a quarantine table, in one process.

    ``uris``: a file, a directory (every ``.jsonl[.gz]``, ``.tsv[.gz]`` and
    ``.parquet`` file below it, sorted) or a list of those (order kept).
    ``fmt``: ``auto`` (by extension), ``jsonl``, ``tsv`` or ``parquet``.
    ``max_passage_chars``: corpus.max_passage_chars (a longer text is quarantined).
    Raises :class:`CorpusError` for a missing required column, an unreadable
    header, no input files, an int64 id collision or ``max_passage_chars < 1``.
    """
    col = _collector(max_passage_chars)  # first: a bad limit fails before any file is read
    files = list_corpus_files(storage, uris, fmt)
    for uri in files:
        src = col.source(uri)
        kind = format_of(uri, fmt)
        if kind == "jsonl":
            read_jsonl(col, src, uri, iter_lines(storage, uri))
        elif kind == "tsv":
            read_tsv(col, src, iter_lines(storage, uri), tsv_header(uri, first_line(storage, uri)))
        else:
            read_parquet(col, src, storage, uri)
    return _finish(col)
