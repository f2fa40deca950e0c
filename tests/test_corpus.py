"""Tests for xqg_ray.benchmark.corpus: every row ends up clean or quarantined, with a reason.

Inputs are written by the tests themselves so each broken line is visible
right next to the reason string it must produce.
"""

from __future__ import annotations

import gzip
from pathlib import Path
from typing import List

import pyarrow as pa
import pytest

from xqg_ray.benchmark import corpus as corpus_mod
from xqg_ray.benchmark.corpus import CLEAN_SCHEMA, QUARANTINE_SCHEMA, CorpusError, collect_passages, read_corpus
from xqg_ray.ids import content_hash, passage_id
from xqg_ray.store.storage import Storage

try:  # works whether or not tests/ is a package
    from tests.helpers_data import string_array_unchecked, write_lines, write_parquet
except ImportError:  # pragma: no cover
    from helpers_data import string_array_unchecked, write_lines, write_parquet

S = Storage()


def reasons(read: corpus_mod.CorpusRead) -> List[tuple]:
    q = read.quarantine
    return list(zip(q.column("line").to_pylist(), q.column("docid").to_pylist(), q.column("reason").to_pylist()))


def check_accounting(read: corpus_mod.CorpusRead, expected_rows: int) -> None:
    """Nothing disappears unreported."""
    assert read.rows_read == expected_rows
    assert read.clean.num_rows + read.quarantine.num_rows == expected_rows
    assert read.clean.schema.equals(CLEAN_SCHEMA)
    assert read.quarantine.schema.equals(QUARANTINE_SCHEMA)


def check_clean_values(read: corpus_mod.CorpusRead) -> None:
    for row in read.clean.to_pylist():
        assert row["id"] == passage_id(row["docid"])
        assert row["content_hash"] == content_hash(row["title"], row["text"])


# -- JSONL -------------------------------------------------------------------
BAD_UTF8 = b'{"docid": "d3", "title": "T3", "text": "caf\xe9 au lait"}'


def jsonl_lines() -> list:
    return [
        {"docid": "d1", "title": "T1", "text": "first passage"},
        {"docid": "d2", "title": "T2", "text": "second passage"},
        BAD_UTF8,  # line 3
        {"docid": "d4", "title": "T4", "text": "   "},  # line 4: whitespace only
        {"docid": "d1", "title": "T1 again", "text": "dup"},  # line 5
        '{"docid": "d6", "title": "T6", "text": "unterminated',  # line 6
        "",  # line 7: blank, not a row
        "[1, 2, 3]",  # line 8: JSON, not an object
        {"docid": "d9", "text": "no title key"},  # line 9
        {"docid": 10, "title": None, "text": "int docid, null title"},  # line 10
        {"docid": "d11", "title": "T11", "text": ""},  # line 11: empty
        {"docid": "z0", "title": "T", "text": "kept after the bad ones"},  # line 12
    ]


def test_jsonl_quarantine_reasons_and_accounting(tmp_path: Path) -> None:
    lines = jsonl_lines()
    path = write_lines(tmp_path / "c.jsonl", lines)
    read = read_corpus(S, str(path))
    file_offset = sum(len(x) + 1 for x in path.read_bytes().split(b"\n")[:2])
    k = BAD_UTF8.index(b"\xe9")
    src = str(path)
    assert reasons(read) == [
        (3, None, f"invalid UTF-8 at byte {k} of the line (file offset {file_offset + k}): invalid continuation byte"),
        (4, "d4", "empty text"),
        (5, "d1", f"duplicate docid (first at {src}:1)"),
        (6, None, "invalid JSON: Unterminated string starting at (column 40)"),
        (8, None, "not a JSON object (list)"),
        (9, "d9", "missing field 'title'"),
        (11, "d11", "empty text"),
    ]
    assert read.clean.column("docid").to_pylist() == ["d1", "d2", "10", "z0"]  # input order
    assert read.clean.column("title").to_pylist()[2] == ""  # null title -> ""
    assert read.quarantine.column("source").to_pylist() == [src] * 7
    # raw keeps the offending content, bytes shown as bytes, truncated to 500 chars
    assert read.quarantine.column("raw")[0].as_py() == repr(BAD_UTF8)
    assert read.blank_lines == 1
    check_accounting(read, expected_rows=len([x for x in lines if x != ""]))
    check_clean_values(read)


def test_raw_is_truncated_to_500_chars(tmp_path: Path) -> None:
    path = write_lines(tmp_path / "c.jsonl", [{"docid": "a", "title": "t", "text": " " * 2000}])
    read = read_corpus(S, str(path))
    assert len(read.quarantine.column("raw")[0].as_py()) == 500


def test_jsonl_gz_and_lone_surrogate(tmp_path: Path) -> None:
    body = b'{"docid": "a", "title": "t", "text": "ok"}\n{"docid": "b", "title": "t", "text": "bad \\ud800"}\n'
    path = tmp_path / "c.jsonl.gz"
    path.write_bytes(gzip.compress(body))
    read = read_corpus(S, str(path))
    assert read.clean.column("docid").to_pylist() == ["a"]
    assert reasons(read)[0][2].startswith("invalid Unicode (lone surrogate)")
    check_accounting(read, 2)


def test_jsonl_missing_column_raises_with_names(tmp_path: Path) -> None:
    path = write_lines(tmp_path / "c.jsonl", [{"id": "a", "title": "t", "body": "x"}])
    with pytest.raises(CorpusError) as e:
        read_corpus(S, str(path))
    msg = str(e.value)
    assert "text" in msg and str(path) in msg and "'body'" in msg


# -- TSV ---------------------------------------------------------------------
def test_tsv_dpr_format(tmp_path: Path) -> None:
    lines = [
        b"id\ttext\ttitle",
        b'1\t"Aaron ( or ; ""Aharon"") is a prophet"\tAaron',  # DPR's CSV-style quoting
        b"2\tplain text\tTitle Two",
        b"3\tonly two fields",
        b"4\tbroken \xff byte\tT",
        b"5\t\tEmpty",
        b'6\t"unterminated\tT',
        b"",
        b"2\tagain\tTitle Two",
        b"7\tlast one\tT7",
    ]
    path = write_lines(tmp_path / "psgs.tsv", lines, eol=b"\r\n")  # CRLF must not leak into titles
    read = read_corpus(S, str(path))
    src = str(path)
    assert reasons(read) == [
        (4, None, "expected 3 tab-separated fields, got 2"),
        (5, None, "invalid UTF-8 at byte 9 of the line (file offset %d): invalid start byte"
         % (sum(len(x) + 2 for x in lines[:4]) + 9)),
        (6, "5", "empty text"),
        (7, None, "invalid TSV quoting: unexpected end of data"),
        (9, "2", f"duplicate docid (first at {src}:3)"),
    ]
    clean = read.clean.to_pylist()
    assert [r["docid"] for r in clean] == ["1", "2", "7"]
    assert clean[0]["text"] == 'Aaron ( or ; "Aharon") is a prophet'
    assert clean[0]["title"] == "Aaron" and clean[2]["title"] == "T7"
    check_accounting(read, expected_rows=8)
    check_clean_values(read)


def test_tsv_gz_with_docid_header(tmp_path: Path) -> None:
    path = tmp_path / "c.tsv.gz"
    # the header names the columns (docid first, an extra column ignored); a
    # reader that fell back to DPR's id/text/title order would swap them
    path.write_bytes(gzip.compress(b"docid\ttitle\ttext\textra\nx\tT\tsome text\t1\ny2\tSecond\tmore text\t2\n"))
    read = read_corpus(S, str(path))
    assert read.clean.to_pylist() == [
        {"docid": "x", "id": 5395104992458594383, "title": "T", "text": "some text",
         "content_hash": "afb3689a5a36998182634184a42ed73da07af43bd2910778ae7ff1cdd46162c0"},
        {"docid": "y2", "id": 4910758430089296282, "title": "Second", "text": "more text",
         "content_hash": "097f45fd173f0ba569559cfcaaca0fae80d7e4976a85d883b7233d6c84e690dd"},
    ]
    assert reasons(read) == []
    check_accounting(read, expected_rows=2)


def test_tsv_missing_column_and_header(tmp_path: Path) -> None:
    path = write_lines(tmp_path / "c.tsv", [b"id\ttext", b"1\thello"])
    with pytest.raises(CorpusError, match=r"missing required column\(s\) title.*columns found: \['id', 'text'\]"):
        read_corpus(S, str(path))
    empty = tmp_path / "e.tsv"
    empty.write_bytes(b"")
    with pytest.raises(CorpusError, match="header row is required"):
        read_corpus(S, str(empty))


# -- Parquet -----------------------------------------------------------------
def test_parquet_invalid_utf8_per_row(tmp_path: Path) -> None:
    path = write_parquet(
        tmp_path / "c.parquet",
        {
            "id": pa.array([1, 2, 3, 1], pa.int64()),  # int ids -> strings
            "title": ["a", "b", "c", "d"],
            "text": string_array_unchecked([b"fine", b"bad \xff", b"  ", b"dup"]),
        },
    )
    read = read_corpus(S, str(path))
    src = str(path)
    assert reasons(read) == [
        (2, None, "invalid UTF-8 in column 'text' at byte 4: invalid start byte"),
        (3, "3", "empty text"),
        (4, "1", f"duplicate docid (first at {src}:1)"),
    ]
    assert read.clean.column("docid").to_pylist() == ["1"]
    check_accounting(read, 4)
    check_clean_values(read)


def test_parquet_missing_column(tmp_path: Path) -> None:
    path = write_parquet(tmp_path / "c.parquet", {"docid": ["a"], "text": ["x"]})
    with pytest.raises(CorpusError) as e:
        read_corpus(S, str(path))
    assert "title" in str(e.value) and "['docid', 'text']" in str(e.value)


def test_clean_table_reads_back_as_corpus(tmp_path: Path) -> None:
    """A clean table written to Parquet (docid + int id) is itself a valid corpus."""
    first = collect_passages([("mem", 1, "a", "T", "x"), ("mem", 2, "b", "T", "y")])
    path = tmp_path / "clean.parquet"
    S.write_table(str(path), first.clean)
    again = read_corpus(S, str(path))
    assert again.clean.equals(first.clean)
    assert again.quarantine.num_rows == 0 and again.quarantine.schema.equals(QUARANTINE_SCHEMA)


# -- directories, ordering, errors -------------------------------------------
def test_directory_is_sorted_and_duplicates_name_first_file(tmp_path: Path) -> None:
    d = tmp_path / "corpus"
    write_lines(d / "b.jsonl", [{"docid": "x", "title": "t", "text": "from b"}])
    write_lines(d / "a.jsonl", [{"docid": "y", "title": "t", "text": "from a"}, {"docid": "x", "title": "t", "text": "a"}])
    write_lines(d / "sub" / "c.tsv", [b"id\ttext\ttitle", b"z\tfrom c\tt"])
    (d / "notes.txt").write_text("ignored: not a corpus extension")
    read = read_corpus(S, str(d))
    assert read.files == [str(d / "a.jsonl"), str(d / "b.jsonl"), str(d / "sub" / "c.tsv")]
    assert read.clean.column("docid").to_pylist() == ["y", "x", "z"]
    assert reasons(read) == [(1, "x", f"duplicate docid (first at {d / 'a.jsonl'}:2)")]
    # same input twice -> identical table (ordering is stable)
    assert read_corpus(S, str(d)).clean.equals(read.clean)
    # an explicit list keeps the given order
    listed = read_corpus(S, [str(d / "b.jsonl"), str(d / "a.jsonl")])
    assert listed.clean.column("docid").to_pylist() == ["x", "y"]


def test_id_collision_raises(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write_lines(tmp_path / "c.jsonl", [{"docid": d, "title": "t", "text": "x"} for d in ("a", "b")])
    monkeypatch.setattr(corpus_mod, "passage_id", lambda docid: 42)
    with pytest.raises(CorpusError, match=r"collision.*42: \['a', 'b'\]"):
        read_corpus(S, str(path))


def test_format_errors(tmp_path: Path) -> None:
    path = write_lines(tmp_path / "c.txt", [{"docid": "a", "title": "t", "text": "x"}])
    with pytest.raises(CorpusError, match="cannot tell the format"):
        read_corpus(S, str(path))
    assert read_corpus(S, str(path), fmt="jsonl").clean.num_rows == 1
    with pytest.raises(CorpusError, match="not found"):
        read_corpus(S, str(tmp_path / "nope.jsonl"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(CorpusError, match="no corpus files"):
        read_corpus(S, str(tmp_path / "empty"))


def test_nothing_quarantined_gives_empty_table_with_schema(tmp_path: Path) -> None:
    path = write_lines(tmp_path / "c.jsonl", [{"docid": "a", "title": "t", "text": "x"}])
    read = read_corpus(S, str(path))
    assert read.quarantine.num_rows == 0
    assert read.quarantine.schema.equals(QUARANTINE_SCHEMA)


# -- passage length and broken .gz --------------------------------------------
def test_passage_over_max_chars_is_quarantined_with_its_length(tmp_path: Path) -> None:
    lines = [{"docid": "fits", "title": "t", "text": "x" * 100_000}, {"docid": "long", "title": "t", "text": "y" * 100_001},
             {"docid": "z", "title": "t", "text": "short"}]
    path = write_lines(tmp_path / "c.jsonl", lines)
    read = read_corpus(S, str(path))
    assert read.clean.column("docid").to_pylist() == ["fits", "z"]
    assert reasons(read) == [(2, "long", "text too long (100001 characters > corpus.max_passage_chars=100000)")]
    check_accounting(read, 3)
    tight = read_corpus(S, str(path), max_passage_chars=5)
    assert reasons(tight) == [(1, "fits", "text too long (100000 characters > corpus.max_passage_chars=5)"),
                              (2, "long", "text too long (100001 characters > corpus.max_passage_chars=5)")]
    assert tight.clean.column("docid").to_pylist() == ["z"]
    check_accounting(tight, 3)
    # the same rule for in-memory passages (the XQuAD paragraphs)
    mem = collect_passages([("mem", 1, "m", "t", "abcdef"), ("mem", 2, "n", "t", "abc")], max_passage_chars=3)
    assert reasons(mem) == [(1, "m", "text too long (6 characters > corpus.max_passage_chars=3)")]


@pytest.mark.parametrize("limit", [0, -1])
def test_max_passage_chars_below_one_is_refused(tmp_path: Path, limit: int) -> None:
    path = write_lines(tmp_path / "c.jsonl", [{"docid": "a", "title": "t", "text": "x"}])
    with pytest.raises(CorpusError, match=rf"^corpus.max_passage_chars={limit}: must be an integer >= 1 \(default 100000\)$"):
        read_corpus(S, str(path), max_passage_chars=limit)


def truncated_gz(path: Path, body: bytes) -> Path:
    """``body`` gzipped, cut in the middle of its compressed stream."""
    data = gzip.compress(body)
    path.write_bytes(data[: len(data) // 2])
    return path


TRUNCATED = ": the .gz file is truncated or corrupt (Truncated compressed stream); download or compress it again (gzip -t FILE checks a copy)"


def test_truncated_gz_is_one_line_naming_the_file(tmp_path: Path) -> None:
    rows = b"".join(b'{"docid": "d%d", "title": "t", "text": "passage number %d"}\n' % (i, i) for i in range(500))
    jl = truncated_gz(tmp_path / "c.jsonl.gz", rows)
    with pytest.raises(CorpusError) as e:
        read_corpus(S, str(jl))
    assert str(e.value) == f"{jl}{TRUNCATED}"
    # a TSV's header is read first, on its own: the same error there
    tsv = truncated_gz(tmp_path / "d.tsv.gz", b"id\ttitle\ttext\n" + b"".join(b"d%d\tt\ttext %d\n" % (i, i) for i in range(500)))
    with pytest.raises(CorpusError) as e:
        read_corpus(S, str(tsv))
    assert str(e.value) == f"{tsv}{TRUNCATED}"
