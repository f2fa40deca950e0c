"""Per-row parsing and validation of passage files, shared by every corpus reader.

The single-process reader (:mod:`xqg_ray.benchmark.corpus`) and the distributed ingest
(:mod:`xqg_ray.ingest.partition`) both feed rows through :class:`Collector`
and the format functions below, so a line gets the same verdict -- clean or
quarantined with the same reason, source and line number -- whichever path
read it.  The formats only differ in where their lines come from: a whole
file (:func:`iter_lines`) or one byte range of it (:func:`iter_range_lines`).

Row rules, in the order they are applied (the first that fails decides):
undecodable line / invalid JSON / wrong field count, empty docid, docid with
whitespace or control characters, title or text not a string, empty text,
text longer than ``max_passage_chars`` (corpus.max_passage_chars), lone surrogates (id and hash cannot be computed), and last, a duplicate docid
(only valid rows take part, so the earliest *valid* row of a docid wins).
"""

from __future__ import annotations

import csv
import json
from typing import Any, Callable, Dict, Iterable, Iterator, List, Optional, Sequence, Tuple

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from ..ids import content_hash, passage_id
from ..store.storage import Storage
from .sources import CorpusError, Lines, decoded_lines

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

# Clean rows of one chunk before the cross-file duplicate rule: the position
# decides which duplicate wins, raw is what a losing duplicate is quarantined with.
STAGED_SCHEMA = pa.schema(
    list(CLEAN_SCHEMA) + [("file_idx", pa.int32()), ("line", pa.int64()), ("raw", pa.string())]
)
# Quarantine rows of one chunk plus the file index, to sort them in input order.
STAGED_Q_SCHEMA = pa.schema(list(QUARANTINE_SCHEMA) + [("file_idx", pa.int32())])

# Column names accepted for the document id, in order of preference (a Parquet
# file in the clean schema has both "docid" and the int "id": take "docid").
DOCID_COLUMNS = ("docid", "id", "_id")
RAW_LIMIT = 500
BAD_DOCID = "docid contains whitespace or control characters"
MAX_PASSAGE_CHARS = 100_000  # the default of corpus.max_passage_chars
_FLUSH = 100_000  # rows buffered in Python lists before becoming Arrow arrays


def truncate(obj: Any) -> str:
    return repr(obj)[:RAW_LIMIT]


def check_max_passage_chars(limit: int) -> int:
    """``limit`` if it is a usable corpus.max_passage_chars, else a :class:`CorpusError` saying what to set."""
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
        raise CorpusError(f"corpus.max_passage_chars={limit!r}: must be an integer >= 1 (default {MAX_PASSAGE_CHARS})")
    return limit


def too_long(text: str, limit: int) -> str:
    """The quarantine reason for a passage text over ``limit`` characters, or "" if it fits."""
    if len(text) <= limit:
        return ""
    return f"text too long ({len(text)} characters > corpus.max_passage_chars={limit})"


def bad_docid(docid: str) -> bool:
    """True if the docid holds whitespace or control characters (they break TREC run files)."""
    if docid.isprintable() and " " not in docid:
        return False  # fast path: isprintable() is False for every space/control char but " "
    return any(c.isspace() or ("\x00" <= c < "\x20") or ("\x7f" <= c <= "\x9f") for c in docid)


class Collector:
    """Applies the row rules shared by every format and builds the clean and quarantine tables.

    ``staged=True`` is the distributed map side: no duplicate rule (a chunk does
    not see the other chunks; the per-partition reduce applies it) and clean
    rows keep their file index, line and raw text (:data:`STAGED_SCHEMA`).
    ``id_fn`` is a parameter so the single-process wrapper can keep its own
    (patchable) ``passage_id``.  ``max_passage_chars`` is corpus.max_passage_chars.
    """

    def __init__(self, staged: bool = False, id_fn: Callable[[str], int] = passage_id,
                 max_passage_chars: int = MAX_PASSAGE_CHARS) -> None:
        self.staged = staged
        self.max_chars = check_max_passage_chars(max_passage_chars)
        self.id_fn = id_fn
        self.sources: List[str] = []
        self._src_index: Dict[str, int] = {}
        self._file_idx: List[int] = []  # per source: the index in the whole corpus' file list
        # docid -> (source index, line) of its first clean occurrence (single-process only).
        self.first: Dict[str, Tuple[int, int]] = {}
        schema = STAGED_SCHEMA if staged else CLEAN_SCHEMA
        self._schema = schema
        self._cols: Tuple[List[Any], ...] = tuple([] for _ in schema)
        self._batches: List[pa.RecordBatch] = []
        self._q: Tuple[List[Any], ...] = tuple([] for _ in STAGED_Q_SCHEMA)
        self.rows_read = 0
        self.blank_lines = 0

    def source(self, uri: str, file_idx: Optional[int] = None) -> int:
        if uri not in self._src_index:
            self._src_index[uri] = len(self.sources)
            self.sources.append(uri)
            self._file_idx.append(len(self._file_idx) if file_idx is None else file_idx)
        return self._src_index[uri]

    def quarantine(self, src: int, line: int, docid: Optional[str], reason: str, raw: Any) -> None:
        if docid is not None:
            # A docid with a lone surrogate would make the Arrow table unbuildable.
            docid = docid.encode("utf-8", "backslashreplace").decode("utf-8")
        row = (self.sources[src], line, docid, reason, truncate(raw), self._file_idx[src])
        for col, v in zip(self._q, row):
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
        if bad_docid(docid):
            return self.quarantine(src, line, docid, BAD_DOCID, raw)
        if title is None:
            title = ""  # some corpora have no titles; that is not an error
        if not isinstance(title, str):
            return self.quarantine(src, line, docid, f"title is not a string ({type(title).__name__})", raw)
        if text is not None and not isinstance(text, str):
            return self.quarantine(src, line, docid, f"text is not a string ({type(text).__name__})", raw)
        if text is None or not text.strip():
            return self.quarantine(src, line, docid, "empty text", raw)
        why = too_long(text, self.max_chars)
        if why:
            return self.quarantine(src, line, docid, why, raw)
        try:
            # JSON "\ud800" escapes decode to lone surrogates that cannot be
            # encoded to UTF-8; hashing encodes, so this is where they surface.
            # Checked before duplicates so that both readers agree: only valid
            # rows compete for a docid.
            pid = self.id_fn(docid)
            chash = content_hash(title, text)
        except UnicodeEncodeError as e:
            return self.quarantine(src, line, None, f"invalid Unicode (lone surrogate): {e.reason}", raw)
        if self.staged:
            values: Tuple[Any, ...] = (docid, pid, title, text, chash, self._file_idx[src], line, truncate(raw))
        else:
            first = self.first.get(docid)
            if first is not None:
                where = f"{self.sources[first[0]]}:{first[1]}"
                return self.quarantine(src, line, docid, f"duplicate docid (first at {where})", raw)
            self.first[docid] = (src, line)
            values = (docid, pid, title, text, chash)
        for col, v in zip(self._cols, values):
            col.append(v)
        if len(self._cols[0]) >= _FLUSH:
            self._flush()

    def _flush(self) -> None:
        if self._cols[0]:
            arrays = [pa.array(c, type=f.type) for c, f in zip(self._cols, self._schema)]
            self._batches.append(pa.RecordBatch.from_arrays(arrays, schema=self._schema))
            for c in self._cols:
                c.clear()

    def clean_table(self) -> pa.Table:
        self._flush()
        return pa.Table.from_batches(self._batches, schema=self._schema)  # chunked: no 2x peak copy

    def quarantine_table(self, with_file_idx: bool = False) -> pa.Table:
        t = pa.Table.from_arrays(
            [pa.array(c, type=f.type) for c, f in zip(self._q, STAGED_Q_SCHEMA)], schema=STAGED_Q_SCHEMA
        )
        return t if with_file_idx else t.drop_columns(["file_idx"])


def check_id_collisions(clean: pa.Table) -> None:
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


def _data_lines(col: Collector, src: int, lines: Iterable[Tuple[int, Optional[str], str, bytes]]) -> Iterator[Tuple[int, str]]:
    """The lines that decode and are not blank; undecodable ones are quarantined, blank ones counted."""
    for line_no, s, why, raw in lines:
        if s is None:
            col.reject(src, line_no, None, why, raw)
        elif not s.strip():
            col.blank_lines += 1
        else:
            yield line_no, s


# -- formats -----------------------------------------------------------------
def check_columns(uri: str, cols: Sequence[str]) -> None:
    """Raise if a required column is absent; the message names file, column and columns found."""
    missing = []
    if not any(c in cols for c in DOCID_COLUMNS):
        missing.append("docid (or id)")
    missing += [c for c in ("title", "text") if c not in cols]
    if missing:
        raise CorpusError(f"{uri}: missing required column(s) {', '.join(missing)}; columns found: {list(cols)}")


def docid_column(cols: Sequence[str]) -> str:
    return next(c for c in DOCID_COLUMNS if c in cols)


def first_json_keys(lines: Lines) -> Optional[List[str]]:
    """The keys of the first JSON object among ``lines`` (what fixes a JSONL file's columns), or None."""
    for _, s, _, _ in decoded_lines(lines):
        if s is None or not s.strip():
            continue
        try:
            obj = json.loads(s)
        except json.JSONDecodeError:
            continue
        if isinstance(obj, dict):
            return list(obj)
    return None


def read_jsonl(col: Collector, src: int, uri: str, lines: Lines, docid_key: Optional[str] = None) -> None:
    """JSONL rows of ``lines``; ``docid_key`` is known when ``lines`` is not the whole file."""
    for line_no, s in _data_lines(col, src, decoded_lines(lines)):
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
            check_columns(uri, list(obj))
            docid_key = docid_column(list(obj))
        absent = [k for k in (docid_key, "title", "text") if k not in obj]
        if absent:
            docid = obj.get(docid_key)
            col.reject(src, line_no, None if docid is None else str(docid), f"missing field {absent[0]!r}", s)
            continue
        col.add(src, line_no, obj[docid_key], obj["title"], obj["text"], s)


def split_tsv(s: str) -> List[str]:
    if '"' not in s:
        return s.split("\t")  # fast path: most rows carry no quoting at all
    return next(csv.reader([s], delimiter="\t", quotechar='"', strict=True))


def tsv_header(uri: str, line1: Optional[bytes]) -> List[str]:
    """The header of a TSV file from its first line (BOM dropped); raises if it is missing or unusable."""
    if line1 is None:
        raise CorpusError(f"{uri}: empty TSV file (a header row is required, e.g. id\\ttext\\ttitle)")
    _, s, why, _ = next(decoded_lines([(1, 0, line1)]))
    if s is None:
        raise CorpusError(f"{uri}: header line is not UTF-8 ({why})")
    if not s.strip():
        raise CorpusError(f"{uri}: a header row is required (e.g. id\\ttext\\ttitle); line 1 is blank")
    header = [h.strip() for h in split_tsv(s)]
    check_columns(uri, header)
    return header


def read_tsv(col: Collector, src: int, lines: Lines, header: List[str]) -> None:
    """TSV data rows of ``lines`` (line 1, the header, is skipped wherever it appears)."""
    idx = (header.index(docid_column(header)), header.index("title"), header.index("text"))
    data = ((n, o, b) for n, o, b in lines if n != 1)
    for line_no, s in _data_lines(col, src, decoded_lines(data)):
        try:
            fields = split_tsv(s)
        except csv.Error as e:
            col.reject(src, line_no, None, f"invalid TSV quoting: {e}", s)
            continue
        if len(fields) != len(header):
            col.reject(src, line_no, None, f"expected {len(header)} tab-separated fields, got {len(fields)}", s)
            continue
        col.add(src, line_no, fields[idx[0]], fields[idx[1]], fields[idx[2]], s)


def read_parquet(col: Collector, src: int, storage: Storage, uri: str,
                 row_groups: Optional[List[int]] = None, first_row: int = 1) -> None:
    """Parquet rows (all, or the given row groups, whose first row is number ``first_row``)."""
    fs, path = storage.resolve(uri)
    with fs.open_input_file(path) as f:
        pf = pq.ParquetFile(f)
        names = pf.schema_arrow.names
        check_columns(uri, names)
        keys = [docid_column(names), "title", "text"]
        row = first_row - 1
        for batch in pf.iter_batches(batch_size=65_536, columns=keys, row_groups=row_groups):
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
