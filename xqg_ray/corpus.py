"""Reading and validating passage files (JSONL, TSV, Parquet) into one clean table.

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

Per-row decoding
    JSONL and TSV files are read as bytes and split on ``\\n`` ourselves, so a
    line with invalid UTF-8 is quarantined with the byte offset of the bad byte
    (within the line and within the -- decompressed -- file) instead of failing
    the whole file.  Parquet does not validate UTF-8 on read, so string columns
    are cast to ``binary`` (zero-copy) batch by batch and each value is decoded
    in Python: an invalid value quarantines only its row.

TSV dialect
    A header row is required.  Fields are tab-separated; a field may be quoted
    CSV-style (``"a ""b"" c"``), which is how the DPR / XOR-TyDi Wikipedia file
    ``id\\ttext\\ttitle`` quotes texts containing quotes.  One record per line:
    a quoted field spanning lines is not supported (the row is quarantined).

Blank (whitespace-only) lines are not rows: they are counted in
``CorpusRead.blank_lines`` so that a trailing newline is not "a bad row".
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass, field
from typing import Any, Dict, Iterable, Iterator, List, Optional, Sequence, Tuple, Union

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from .errors import UserError
from .ids import content_hash, passage_id
from .storage import Storage

CLEAN_SCHEMA = pa.schema(
    [
        ("docid", pa.string()),
        ("id", pa.int64()),
        ("title", pa.string()),
        ("text", pa.string()),
        ("content_hash", pa.string()),
    ]
)

QUARANTINE_SCHEMA = pa.schema(
    [
        ("source", pa.string()),
        ("line", pa.int64()),
        ("docid", pa.string()),
        ("reason", pa.string()),
        ("raw", pa.string()),
    ]
)

# Extension -> format.  Longest suffix first so ".jsonl.gz" wins over ".gz".
FORMATS: Tuple[Tuple[str, str], ...] = (
    (".jsonl.gz", "jsonl"),
    (".tsv.gz", "tsv"),
    (".jsonl", "jsonl"),
    (".tsv", "tsv"),
    (".parquet", "parquet"),
)
# Column names accepted for the document id, in order of preference (a Parquet
# file in the clean schema has both "docid" and the int "id": take "docid").
DOCID_COLUMNS = ("docid", "id", "_id")
RAW_LIMIT = 500
_CHUNK = 1 << 24  # 16 MiB reads: bounded memory on multi-GB dumps
_FLUSH = 100_000  # rows buffered in Python lists before becoming Arrow arrays
_UTF8_BOM = b"\xef\xbb\xbf"


class CorpusError(UserError):
    """The corpus input cannot be used as a whole; the message says why and where."""


@dataclass
class CorpusRead:
    """Result of :func:`read_corpus`."""

    clean: pa.Table
    quarantine: pa.Table
    rows_read: int = 0  # data rows seen (header and blank lines excluded)
    blank_lines: int = 0
    files: List[str] = field(default_factory=list)


def format_of(uri: str, fmt: str = "auto") -> str:
    """The format of one file: ``fmt`` unless "auto", else from the extension."""
    if fmt != "auto":
        if fmt not in ("jsonl", "tsv", "parquet"):
            raise CorpusError(f"unknown corpus format {fmt!r}: use auto, jsonl, tsv or parquet")
        return fmt
    low = uri.lower()
    for suffix, name in FORMATS:
        if low.endswith(suffix):
            return name
    raise CorpusError(
        f"{uri}: cannot tell the format from the extension "
        f"(known: {', '.join(s for s, _ in FORMATS)}); pass fmt='jsonl'|'tsv'|'parquet'"
    )


def list_corpus_files(storage: Storage, uris: Union[str, Sequence[str]], fmt: str = "auto") -> List[str]:
    """Expand URIs to files: a directory means every corpus file below it, sorted."""
    if isinstance(uris, str):
        uris = [uris]
    out: List[str] = []
    for uri in uris:
        if not storage.exists(uri):
            raise CorpusError(f"corpus input not found: {uri}")
        if storage.is_dir(uri):
            found = [f for f in storage.list_files(uri) if _matches(f, fmt)]
            if not found:
                raise CorpusError(f"no corpus files ({', '.join(s for s, _ in FORMATS)}) under {uri}")
            out.extend(found)  # list_files is sorted already
        else:
            format_of(uri, fmt)  # fail early on an unknown extension
            out.append(uri)
    if not out:
        raise CorpusError("no corpus files given")
    return out


def _matches(uri: str, fmt: str) -> bool:
    low = uri.lower()
    return any(low.endswith(s) and (fmt == "auto" or fmt == name) for s, name in FORMATS)


def _truncate(obj: Any) -> str:
    return repr(obj)[:RAW_LIMIT]


class _Collector:
    """Applies the row rules shared by every format and builds both tables.

    Kept separate from the readers so that other producers of passages (the
    SQuAD paragraphs of the XQuAD benchmark) go through the very same checks.
    """

    def __init__(self) -> None:
        self.sources: List[str] = []
        self._src_index: Dict[str, int] = {}
        # docid -> (source index, line) of its first clean occurrence.
        self.first: Dict[str, Tuple[int, int]] = {}
        self._cols: Tuple[List[Any], ...] = ([], [], [], [], [])
        self._batches: List[pa.RecordBatch] = []
        self._q: Tuple[List[Any], ...] = ([], [], [], [], [])
        self.rows_read = 0
        self.blank_lines = 0

    def source(self, uri: str) -> int:
        if uri not in self._src_index:
            self._src_index[uri] = len(self.sources)
            self.sources.append(uri)
        return self._src_index[uri]

    def quarantine(self, src: int, line: int, docid: Optional[str], reason: str, raw: Any) -> None:
        if docid is not None:
            # A docid with a lone surrogate would make the Arrow table unbuildable.
            docid = docid.encode("utf-8", "backslashreplace").decode("utf-8")
        for col, v in zip(self._q, (self.sources[src], line, docid, reason, _truncate(raw))):
            col.append(v)

    def reject(self, src: int, line: int, docid: Optional[str], reason: str, raw: Any) -> None:
        """A row that was read but cannot become a passage (counted, then quarantined)."""
        self.rows_read += 1
        self.quarantine(src, line, docid, reason, raw)

    def add(self, src: int, line: int, docid: Any, title: Any, text: Any, raw: Any) -> None:
        """One data row: either appended to clean or quarantined with a reason."""
        self.rows_read += 1
        if docid is None or (isinstance(docid, str) and not docid.strip()):
            return self.quarantine(src, line, None, "empty docid", raw)
        if not isinstance(docid, str):
            docid = str(docid)  # ints in JSON/Parquet ids: the spec wants strings
        if title is None:
            title = ""  # some corpora have no titles; that is not an error
        if not isinstance(title, str):
            return self.quarantine(src, line, docid, f"title is not a string ({type(title).__name__})", raw)
        if text is not None and not isinstance(text, str):
            return self.quarantine(src, line, docid, f"text is not a string ({type(text).__name__})", raw)
        if text is None or not text.strip():
            return self.quarantine(src, line, docid, "empty text", raw)
        first = self.first.get(docid)
        if first is not None:
            where = f"{self.sources[first[0]]}:{first[1]}"
            return self.quarantine(src, line, docid, f"duplicate docid (first at {where})", raw)
        try:
            # JSON "\ud800" escapes decode to lone surrogates that cannot be
            # encoded to UTF-8; hashing encodes, so this is where they surface.
            pid = passage_id(docid)
            chash = content_hash(title, text)
        except UnicodeEncodeError as e:
            return self.quarantine(src, line, None, f"invalid Unicode (lone surrogate): {e.reason}", raw)
        self.first[docid] = (src, line)
        for col, v in zip(self._cols, (docid, pid, title, text, chash)):
            col.append(v)
        if len(self._cols[0]) >= _FLUSH:
            self._flush()

    def _flush(self) -> None:
        if self._cols[0]:
            arrays = [pa.array(c, type=f.type) for c, f in zip(self._cols, CLEAN_SCHEMA)]
            self._batches.append(pa.RecordBatch.from_arrays(arrays, schema=CLEAN_SCHEMA))
            for c in self._cols:
                c.clear()

    def finish(self) -> CorpusRead:
        self._flush()
        clean = pa.Table.from_batches(self._batches, schema=CLEAN_SCHEMA)  # chunked: no 2x peak copy
        _check_id_collisions(clean)
        quarantine = pa.Table.from_arrays(
            [pa.array(c, type=f.type) for c, f in zip(self._q, QUARANTINE_SCHEMA)], schema=QUARANTINE_SCHEMA
        )
        assert clean.num_rows + quarantine.num_rows == self.rows_read, "a row went missing"
        return CorpusRead(clean, quarantine, self.rows_read, self.blank_lines, list(self.sources))


def _check_id_collisions(clean: pa.Table) -> None:
    """Docids are unique here; equal int64 ids would merge two passages in FAISS."""
    ids = clean.column("id").to_numpy()
    uniq, counts = np.unique(ids, return_counts=True)
    if len(uniq) == len(ids):
        return
    bad = set(uniq[counts > 1].tolist())
    docids = clean.column("docid").to_pylist()
    groups: Dict[int, List[str]] = {}
    for pid, d in zip(ids.tolist(), docids):
        if pid in bad:
            groups.setdefault(pid, []).append(d)
    shown = "; ".join(f"{pid}: {ds}" for pid, ds in list(groups.items())[:5])
    raise CorpusError(
        f"{len(groups)} int64 passage id collision(s) between different docids (never merged): {shown}. "
        "Rename one of the docids."
    )


def collect_passages(rows: Sequence[Tuple[str, int, Any, Any, Any]]) -> CorpusRead:
    """Validate in-memory passages ``(source, line, docid, title, text)`` like a file.

    Used by the benchmark for SQuAD paragraphs so the same rules and schemas apply.
    """
    col = _Collector()
    for source, line, docid, title, text in rows:
        src = col.source(source)
        col.add(src, line, docid, title, text, {"docid": docid, "title": title, "text": text})
    return col.finish()


# -- line-based formats ------------------------------------------------------
def iter_lines(storage: Storage, uri: str) -> Iterator[Tuple[int, int, bytes]]:
    """(1-based line number, byte offset of the line, line bytes without EOL).

    Reads in chunks so a multi-GB TSV never sits in memory as one bytes object.
    Offsets are in the decompressed stream for ``.gz`` files.
    """
    fs, path = storage.resolve(uri)
    compression = "gzip" if uri.lower().endswith(".gz") else None
    line_no, offset, rest = 0, 0, b""
    with fs.open_input_stream(path, compression=compression) as f:
        while True:
            chunk = f.read(_CHUNK)
            if not chunk:
                break
            parts = (rest + chunk).split(b"\n")
            rest = parts.pop()
            for part in parts:
                line_no += 1
                yield line_no, offset, part
                offset += len(part) + 1
    if rest:
        line_no += 1
        yield line_no, offset, rest


def decode_line(line: bytes, offset: int) -> Tuple[Optional[str], str]:
    """(text, "") or (None, reason) for one line of bytes."""
    if line.endswith(b"\r"):
        line = line[:-1]  # CRLF files
    try:
        return line.decode("utf-8"), ""
    except UnicodeDecodeError as e:
        return None, f"invalid UTF-8 at byte {e.start} of the line (file offset {offset + e.start}): {e.reason}"


def _missing(uri: str, cols: Sequence[str]) -> None:
    """Raise if a required column is absent; the message names file, column and columns found."""
    missing = []
    if not any(c in cols for c in DOCID_COLUMNS):
        missing.append("docid (or id)")
    missing += [c for c in ("title", "text") if c not in cols]
    if missing:
        raise CorpusError(f"{uri}: missing required column(s) {', '.join(missing)}; columns found: {list(cols)}")


def _docid_col(cols: Sequence[str]) -> str:
    return next(c for c in DOCID_COLUMNS if c in cols)


def _decoded_lines(storage: Storage, uri: str) -> Iterator[Tuple[int, Optional[str], str, bytes]]:
    """(line number, text or None, why it did not decode, raw bytes) per line; a leading BOM is dropped."""
    for line_no, offset, raw in iter_lines(storage, uri):
        if line_no == 1 and raw.startswith(_UTF8_BOM):
            raw, offset = raw[3:], offset + 3
        s, why = decode_line(raw, offset)
        yield line_no, s, why, raw


def _data_lines(col: _Collector, src: int, lines: Iterable[Tuple[int, Optional[str], str, bytes]]) -> Iterator[Tuple[int, str]]:
    """The lines that decode and are not blank; undecodable ones are quarantined, blank ones counted."""
    for line_no, s, why, raw in lines:
        if s is None:
            col.reject(src, line_no, None, why, raw)
        elif not s.strip():
            col.blank_lines += 1
        else:
            yield line_no, s


def _read_jsonl(col: _Collector, storage: Storage, uri: str) -> None:
    src = col.source(uri)
    docid_key: Optional[str] = None
    for line_no, s in _data_lines(col, src, _decoded_lines(storage, uri)):
        try:
            obj = json.loads(s)
        except json.JSONDecodeError as e:
            col.reject(src, line_no, None, f"invalid JSON: {e.msg} (column {e.colno})", s)
            continue
        if not isinstance(obj, dict):
            col.reject(src, line_no, None, f"not a JSON object ({type(obj).__name__})", s)
            continue
        if docid_key is None:
            # JSONL has no header: the first object stands for the file's columns,
            # so a file in the wrong layout fails loudly instead of quarantining all.
            _missing(uri, list(obj))
            docid_key = _docid_col(list(obj))
        absent = [k for k in (docid_key, "title", "text") if k not in obj]
        if absent:
            docid = obj.get(docid_key)
            col.reject(src, line_no, None if docid is None else str(docid), f"missing field {absent[0]!r}", s)
            continue
        col.add(src, line_no, obj[docid_key], obj["title"], obj["text"], s)


def _split_tsv(s: str) -> List[str]:
    if '"' not in s:
        return s.split("\t")  # fast path: most rows carry no quoting at all
    return next(csv.reader([s], delimiter="\t", quotechar='"', strict=True))


def _read_tsv(col: _Collector, storage: Storage, uri: str) -> None:
    src = col.source(uri)
    lines = _decoded_lines(storage, uri)
    first = next(lines, None)
    if first is None:
        raise CorpusError(f"{uri}: empty TSV file (a header row is required, e.g. id\\ttext\\ttitle)")
    _, s, why, _ = first
    if s is None:
        raise CorpusError(f"{uri}: header line is not UTF-8 ({why})")
    if not s.strip():
        raise CorpusError(f"{uri}: a header row is required (e.g. id\\ttext\\ttitle); line 1 is blank")
    header = [h.strip() for h in _split_tsv(s)]
    _missing(uri, header)
    idx = (header.index(_docid_col(header)), header.index("title"), header.index("text"))
    for line_no, s in _data_lines(col, src, lines):
        try:
            fields = _split_tsv(s)
        except csv.Error as e:
            col.reject(src, line_no, None, f"invalid TSV quoting: {e}", s)
            continue
        if len(fields) != len(header):
            col.reject(src, line_no, None, f"expected {len(header)} tab-separated fields, got {len(fields)}", s)
            continue
        col.add(src, line_no, fields[idx[0]], fields[idx[1]], fields[idx[2]], s)


def _read_parquet(col: _Collector, storage: Storage, uri: str) -> None:
    src = col.source(uri)
    fs, path = storage.resolve(uri)
    with fs.open_input_file(path) as f:
        pf = pq.ParquetFile(f)
        names = pf.schema_arrow.names
        _missing(uri, names)
        keys = [_docid_col(names), "title", "text"]
        row = 0
        for batch in pf.iter_batches(batch_size=65_536, columns=keys):
            cols = []
            for name in keys:
                arr = batch.column(name)
                # Arrow does not validate UTF-8 when reading Parquet; casting to
                # binary is zero-copy and lets us decode (and blame) row by row.
                if pa.types.is_string(arr.type) or pa.types.is_large_string(arr.type):
                    arr = arr.cast(pa.large_binary() if pa.types.is_large_string(arr.type) else pa.binary())
                cols.append(arr.to_pylist())
            for values in zip(*cols):
                row += 1
                decoded: List[Any] = []
                bad = ""
                for name, v in zip(keys, values):
                    if isinstance(v, bytes):
                        try:
                            v = v.decode("utf-8")
                        except UnicodeDecodeError as e:
                            bad = f"invalid UTF-8 in column {name!r} at byte {e.start}: {e.reason}"
                            break
                    decoded.append(v)
                rawrow = dict(zip(keys, values))
                if bad:
                    col.reject(src, row, None, bad, rawrow)
                    continue
                col.add(src, row, decoded[0], decoded[1], decoded[2], rawrow)


_READERS = {"jsonl": _read_jsonl, "tsv": _read_tsv, "parquet": _read_parquet}


def read_corpus(storage: Storage, uris: Union[str, List[str]], fmt: str = "auto") -> CorpusRead:
    """Read passage file(s) into a clean table and a quarantine table.

    ``uris``: a file, a directory (every ``.jsonl[.gz]``, ``.tsv[.gz]`` and
    ``.parquet`` file below it, sorted) or a list of those (order kept).
    ``fmt``: ``auto`` (by extension), ``jsonl``, ``tsv`` or ``parquet``.
    Raises :class:`CorpusError` for a missing required column, an unreadable
    header, no input files or an int64 id collision.
    """
    files = list_corpus_files(storage, uris, fmt)
    col = _Collector()
    for uri in files:
        _READERS[format_of(uri, fmt)](col, storage, uri)
    return col.finish()
