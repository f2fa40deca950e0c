"""Corpus files and their lines: formats, directory listing, whole-file and byte-range line readers.

A line is ``(1-based line number, byte offset in the -- decompressed -- file,
bytes without the newline)``.  :func:`iter_lines` streams a whole file (also
``.gz``); :func:`range_bytes` + :func:`iter_range_lines` give the lines that
*start* in one byte range of an uncompressed file, which is how the
distributed ingest splits a big file without any two workers reading the
same line.  Decoding (BOM, CRLF, invalid UTF-8 with byte offsets) happens in
:func:`decoded_lines`, the same for both.
"""

from __future__ import annotations

from typing import Any, Iterable, Iterator, List, Optional, Sequence, Tuple, Union

from ..errors import UserError
from ..store.storage import Storage

_CHUNK = 1 << 24  # 16 MiB reads: bounded memory on multi-GB dumps
_UTF8_BOM = b"\xef\xbb\xbf"

Lines = Iterable[Tuple[int, int, bytes]]  # (1-based line number, file offset, bytes without the newline)


class CorpusError(UserError):
    """The corpus input cannot be used as a whole; the message says why and where."""


# Extension -> format.  Longest suffix first so ".jsonl.gz" wins over ".gz".
FORMATS: Tuple[Tuple[str, str], ...] = (
    (".jsonl.gz", "jsonl"),
    (".tsv.gz", "tsv"),
    (".jsonl", "jsonl"),
    (".tsv", "tsv"),
    (".parquet", "parquet"),
)


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


def is_gzip(uri: str) -> bool:
    return uri.lower().endswith(".gz")


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


# -- where lines come from ---------------------------------------------------
def read_block(f: Any, size: int, uri: str) -> bytes:
    """``f.read(size)``; for a ``.gz`` file a decompression error is a :class:`CorpusError` naming it.

    Arrow raises a bare ``OSError("Truncated compressed stream")`` that names no
    file; in a Ray Data worker it became a wrapped traceback.  The original
    message is kept: it also tells a corrupt stream from an I/O failure.
    """
    try:
        return f.read(size)
    except OSError as e:
        if not is_gzip(uri):
            raise
        # No line number: Arrow fails a whole read() and drops the lines decoded in it.
        raise CorpusError(
            f"{uri}: the .gz file is truncated or corrupt ({e}); download or compress it again "
            "(gzip -t FILE checks a copy)"
        ) from None
def iter_lines(storage: Storage, uri: str) -> Iterator[Tuple[int, int, bytes]]:
    """(1-based line number, byte offset of the line, line bytes without EOL).

    Reads in chunks so a multi-GB TSV never sits in memory as one bytes object.
    Offsets are in the decompressed stream for ``.gz`` files.
    """
    fs, path = storage.resolve(uri)
    line_no, offset, rest = 0, 0, b""
    with fs.open_input_stream(path, compression="gzip" if is_gzip(uri) else None) as f:
        while True:
            chunk = read_block(f, _CHUNK, uri)
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


def first_line(storage: Storage, uri: str) -> Optional[bytes]:
    """Line 1 of a (possibly gzipped) file without reading further than needed; None if empty."""
    fs, path = storage.resolve(uri)
    buf = b""
    with fs.open_input_stream(path, compression="gzip" if is_gzip(uri) else None) as f:
        while b"\n" not in buf:
            block = read_block(f, 1 << 16, uri)
            if not block:
                break
            buf += block
    if not buf:
        return None
    return buf.split(b"\n", 1)[0]


def range_bytes(f: Any, start: int, end: int, size: int) -> Tuple[bytes, int]:
    """(bytes of the lines that *start* in [start, end), offset of the first) from a random-access file.

    A line belongs to the range where it starts, so the bytes run from the
    first line start >= start to the end of the last line starting < end
    (possibly beyond ``end``).  Every line but an unterminated last one keeps its ``\\n``.
    """
    lo = max(start - 1, 0)  # the byte before start says whether a line starts at start
    data = f.read_at(end - lo, lo)
    first = 0
    if start > 0:
        nl = data.find(b"\n")
        if nl < 0:
            return b"", end
        data, first = data[nl + 1:], lo + nl + 1
    if data and not data.endswith(b"\n") and end < size:
        tail, pos = [data], end
        while pos < size:  # the last line runs past the range: read on to its end
            block = f.read_at(min(1 << 20, size - pos), pos)
            nl = block.find(b"\n")
            if nl >= 0:
                tail.append(block[: nl + 1])
                break
            tail.append(block)
            pos += len(block)
        data = b"".join(tail)
    return data, first


def count_lines(data: bytes) -> int:
    """Lines in :func:`range_bytes` output (an unterminated last line counts)."""
    return data.count(b"\n") + (1 if data and not data.endswith(b"\n") else 0)


def iter_range_lines(data: bytes, first_offset: int, first_line_no: int) -> Iterator[Tuple[int, int, bytes]]:
    """The (line number, offset, bytes) triples of :func:`range_bytes` output."""
    if not data:
        return  # no line starts in this range
    parts = data.split(b"\n")
    if data.endswith(b"\n"):
        parts.pop()
    offset = first_offset
    for i, part in enumerate(parts):
        yield first_line_no + i, offset, part
        offset += len(part) + 1


def decode_line(line: bytes, offset: int) -> Tuple[Optional[str], str]:
    """(text, "") or (None, reason) for one line of bytes."""
    if line.endswith(b"\r"):
        line = line[:-1]  # CRLF files
    try:
        return line.decode("utf-8"), ""
    except UnicodeDecodeError as e:
        return None, f"invalid UTF-8 at byte {e.start} of the line (file offset {offset + e.start}): {e.reason}"


def decoded_lines(lines: Lines) -> Iterator[Tuple[int, Optional[str], str, bytes]]:
    """(line number, text or None, why it did not decode, raw bytes) per line; a leading BOM is dropped."""
    for line_no, offset, raw in lines:
        if line_no == 1 and raw.startswith(_UTF8_BOM):
            raw, offset = raw[3:], offset + 3
        s, why = decode_line(raw, offset)
        yield line_no, s, why, raw


