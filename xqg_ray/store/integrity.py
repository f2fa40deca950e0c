"""Committed files: deterministic names, atomic writes, a sha256 per file checked on every read.

Every artifact a later stage reads (corpus partitions, generated queries,
embeddings, index shards, benchmark tables) is written through
:func:`write_committed`, which returns the record ``{file, sha256, bytes}``
that the writer stores in its commit record or manifest.  Paths in those
records are relative to the run's ``output_dir`` (the *root*), so a moved or
copied output directory keeps working and never reads another directory's data.
Readers go through :func:`read_verified`: a file whose bytes do not match the
recorded sha256 is an :class:`IntegrityError` naming the file, never silently
different data.  Files too large to hold go through the streaming pair:
:class:`VerifiedParquet` (hash by chunks, then read batch by batch) and
:class:`CommittedParquetWriter` (row groups to a temp file, then the same
atomic commit and record).  Manifests and commit records are sealed JSON
(:mod:`.sealed`).
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import tempfile
import uuid
from typing import Any, Dict, Iterator, List, Optional

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from ..errors import UserError
from .storage import Storage, join, translated

# Bytes per read while hashing or copying a streamed file: memory per file, not its size.
CHUNK_BYTES = 8 << 20


class IntegrityError(UserError):
    """A committed file or manifest does not match its record; the message names it and says what to do."""


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def table_bytes(table: pa.Table) -> bytes:
    """A table as Parquet bytes (zstd): what gets hashed is exactly what gets stored."""
    buf = io.BytesIO()
    pq.write_table(table, buf, compression="zstd")
    return buf.getvalue()


def write_committed(storage: Storage, root: str, rel: str, data: bytes) -> Dict[str, Any]:
    """Write ``data`` atomically at ``root/rel``; returns ``{file, sha256, bytes}`` for a commit record."""
    storage.write_bytes(join(root, rel), data)
    return {"file": rel, "sha256": sha256_bytes(data), "bytes": len(data)}


def write_table_committed(storage: Storage, root: str, rel: str, table: pa.Table) -> Dict[str, Any]:
    rec = write_committed(storage, root, rel, table_bytes(table))
    rec["rows"] = table.num_rows
    return rec


def read_verified(storage: Storage, root: str, rec: Dict[str, Any], where: str = "its commit record") -> bytes:
    """The bytes of ``rec["file"]`` under ``root``, checked against ``rec["sha256"]``."""
    uri = join(root, rec["file"])
    if not storage.exists(uri):
        raise IntegrityError(f"{uri} is missing but named by {where}: rerun the same command to recompute it")
    data = storage.read_bytes(uri)
    if sha256_bytes(data) != rec["sha256"]:
        raise _mismatch(uri, where)
    return data


def _mismatch(uri: str, where: str) -> IntegrityError:
    return IntegrityError(
        f"{uri} does not match its sha256 in {where}: the file changed after it was committed; "
        "delete it and rerun the same command to recompute it"
    )


def one_file(rec: Dict[str, Any]) -> None:
    """Refuse a record of a partition kept as several delta segments: its ``file`` is only the newest,
    so reading it alone would miss rows (read it with ``store.segments.live_table`` or ``live_parquet``)."""
    if len(rec.get("segments") or ()) > 1:
        raise ValueError(f"{rec['file']} is one of {len(rec['segments'])} delta segments: read the partition with store.segments.live_table")


def read_table_verified(
    storage: Storage, root: str, rec: Dict[str, Any], columns: Optional[List[str]] = None, where: str = "its commit record"
) -> pa.Table:
    one_file(rec)
    return pq.read_table(pa.BufferReader(read_verified(storage, root, rec, where)), columns=columns)


class VerifiedParquet:
    """A committed Parquet file checked against its record by streaming, then read batch by batch.

    The check reads ``CHUNK_BYTES`` at a time and :meth:`batches` decodes one
    batch at a time from buffered column streams, so neither holds the file:
    memory is bounded by the batch size, not by the file.  (The file is read
    twice, once to hash and once to decode; :func:`read_table_verified` is the
    one-read path for files small enough to hold.)
    """

    def __init__(self, storage: Storage, root: str, rec: Dict[str, Any], where: str = "its commit record"):
        one_file(rec)
        self.storage, self.uri = storage, join(root, rec["file"])
        if not storage.exists(self.uri):
            raise IntegrityError(f"{self.uri} is missing but named by {where}: rerun the same command to recompute it")
        fs, path = storage.resolve(self.uri)
        h = hashlib.sha256()
        with translated(self.uri, "read"), fs.open_input_stream(path, compression=None) as f:
            for chunk in iter(lambda: f.read(CHUNK_BYTES), b""):
                h.update(chunk)
        if h.hexdigest() != rec["sha256"]:
            raise _mismatch(self.uri, where)

    def batches(self, columns: Optional[List[str]] = None, batch_size: int = 65_536,
                row_groups: Optional[List[int]] = None) -> Iterator[pa.RecordBatch]:
        """The file's rows as record batches of at most ``batch_size`` rows, in file order."""
        fs, path = self.storage.resolve(self.uri)
        with translated(self.uri, "read"), fs.open_input_file(path) as f:
            # Buffered column streams: one page at a time, not a whole row group (old files have one).
            pf = pq.ParquetFile(f, pre_buffer=False, buffer_size=CHUNK_BYTES)
            groups = range(pf.metadata.num_row_groups) if row_groups is None else row_groups
            yield from pf.iter_batches(batch_size=max(1, batch_size), columns=columns, row_groups=list(groups))

    def metadata(self) -> pq.FileMetaData:
        fs, path = self.storage.resolve(self.uri)
        with translated(self.uri, "read"), fs.open_input_file(path) as f:
            return pq.ParquetFile(f).metadata


class CommittedParquetWriter:
    """A Parquet file written as it goes, committed atomically with its sha256 (the streaming ``write_table_committed``).

    :meth:`add` buffers tables and writes every ``row_group_rows`` rows as one
    row group to a temp file (beside the target on local disk; in the local temp
    directory for object storage); :meth:`commit` writes the rest, hashes the
    file by chunks and moves it into place (rename, or one upload), returning
    ``{file, sha256, bytes, rows}``.  Fewer than ``row_group_rows`` rows make one
    row group: the same bytes as :func:`table_bytes` of the whole table.  Used
    as a context manager, an exception removes the temp file.
    """

    def __init__(self, storage: Storage, root: str, rel: str, schema: pa.Schema, row_group_rows: int):
        self.storage, self.rel, self.uri, self.schema = storage, rel, join(root, rel), schema
        self.row_group_rows = max(1, row_group_rows)
        fs, path = storage.resolve(self.uri)
        self.local = isinstance(fs, pafs.LocalFileSystem)
        if self.local:
            with translated(self.uri, "write"):
                os.makedirs(os.path.dirname(path), exist_ok=True)
            self.tmp = f"{path}.tmp-{uuid.uuid4().hex[:8]}"  # the name storage.write_bytes uses for its own temp files
        else:
            fd, self.tmp = tempfile.mkstemp(suffix=".parquet")
            os.close(fd)
        self.buffer: List[pa.Table] = []
        self.buffered = self.rows = self.peak_rows = 0
        with translated(self.uri, "write"):
            self.writer: Optional[pq.ParquetWriter] = pq.ParquetWriter(self.tmp, schema, compression="zstd")

    def add(self, table: pa.Table) -> None:
        """Append rows (in file order); each full row group is written at once, so at most ``row_group_rows`` wait."""
        while table.num_rows:
            take = min(table.num_rows, self.row_group_rows - self.buffered)
            self.buffer.append(table.slice(0, take))
            self.buffered += take
            self.peak_rows = max(self.peak_rows, self.buffered)
            table = table.slice(take)
            if self.buffered == self.row_group_rows:
                self._write()

    def _write(self) -> None:
        with translated(self.uri, "write"):
            self.writer.write_table(pa.concat_tables(self.buffer))
        self.buffer, self.buffered, self.rows = [], 0, self.rows + self.buffered

    def commit(self) -> Dict[str, Any]:
        """Write what is buffered, move the file into place; the record for a commit."""
        if self.buffered:
            self._write()
        with translated(self.uri, "write"):
            if not self.rows:  # one empty row group, as write_table writes for an empty table
                self.writer.write_table(self.schema.empty_table())
            self.writer.close()
        self.writer = None
        h, size = hashlib.sha256(), 0
        with open(self.tmp, "rb") as f:
            for chunk in iter(lambda: f.read(CHUNK_BYTES), b""):
                h.update(chunk)
                size += len(chunk)
        fs, path = self.storage.resolve(self.uri)
        with translated(self.uri, "write", size):
            if self.local:
                with open(self.tmp, "rb+") as f:
                    os.fsync(f.fileno())
                os.replace(self.tmp, path)
            else:
                parent = path.rsplit("/", 1)[0] if "/" in path else ""
                if parent:
                    fs.create_dir(parent, recursive=True)
                with open(self.tmp, "rb") as src, fs.open_output_stream(path, compression=None) as dst:  # one object: atomic
                    for chunk in iter(lambda: src.read(CHUNK_BYTES), b""):
                        dst.write(chunk)
                os.remove(self.tmp)
        return {"file": self.rel, "sha256": h.hexdigest(), "bytes": size, "rows": self.rows}

    def close(self) -> None:
        """Drop an uncommitted file (after an error): no temp file stays behind."""
        if self.writer is not None:
            with contextlib.suppress(Exception):
                self.writer.close()
            self.writer = None
        with contextlib.suppress(OSError):
            os.remove(self.tmp)

    def __enter__(self) -> "CommittedParquetWriter":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


__all__ = [
    "CHUNK_BYTES",
    "CommittedParquetWriter",
    "IntegrityError",
    "VerifiedParquet",
    "read_table_verified",
    "read_verified",
    "sha256_bytes",
    "table_bytes",
    "write_committed",
    "write_table_committed",
]


# -- Committed files written and read as local files (index shards) -----------------
# An index shard is as large as its share of the corpus (GBs): it is written by FAISS
# straight to a file and hashed while streaming, never held as bytes.

CHUNK = 1 << 20  # bytes per read while hashing or copying: bounded memory whatever the file size


def sha256_file(path: str) -> str:
    """sha256 of a local file, read in :data:`CHUNK` pieces."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(CHUNK), b""):
            h.update(block)
    return h.hexdigest()


def staging_path(storage: Storage, root: str, rel: str) -> str:
    """A fresh local path to write ``root/rel``'s content to before :func:`write_file_committed`:
    beside the destination for a local root (so committing is a rename), in the temp dir otherwise."""
    import os
    import tempfile
    import uuid

    from .storage import is_remote, translated

    dest = join(root, rel)
    if not is_remote(dest):
        fs, path = storage.resolve(dest)
        with translated(dest, "write"):
            os.makedirs(os.path.dirname(path), exist_ok=True)
        return f"{path}.tmp-{uuid.uuid4().hex[:8]}"
    return os.path.join(tempfile.gettempdir(), f"xqg-{uuid.uuid4().hex}-{os.path.basename(rel)}")


def write_file_committed(storage: Storage, root: str, rel: str, local: str) -> Dict[str, Any]:
    """Commit the local file ``local`` (from :func:`staging_path`) as ``root/rel``; returns ``{file, sha256, bytes}``.

    Hashed by streaming; a local root gets it by an atomic rename (after fsync), an
    ``s3://`` root by a streamed upload (one object PUT, atomic).  ``local`` is gone afterwards.
    """
    import os

    from .storage import is_remote, translated

    dest = join(root, rel)
    try:
        size = os.path.getsize(local)
        digest = sha256_file(local)
        fs, path = storage.resolve(dest)
        with translated(dest, "write", size):
            if not is_remote(dest):
                with open(local, "rb") as f:
                    os.fsync(f.fileno())
                os.replace(local, path)
            else:
                parent = path.rsplit("/", 1)[0]
                if parent:
                    fs.create_dir(parent, recursive=True)
                with open(local, "rb") as src, fs.open_output_stream(path, compression=None) as out:
                    for block in iter(lambda: src.read(CHUNK), b""):
                        out.write(block)
    finally:
        if os.path.exists(local):
            os.remove(local)
    return {"file": rel, "sha256": digest, "bytes": size}


def verified_local_file(storage: Storage, root: str, rec: Dict[str, Any], cache_dir: str, where: str = "its commit record") -> str:
    """A local path holding ``rec["file"]`` checked against ``rec["sha256"]`` by streaming (never all in memory).

    A local root gives the committed file itself; an ``s3://`` root is downloaded once
    into ``cache_dir`` (named by its sha256, hashed while it streams in, renamed when
    complete) and that copy is checked again when reused.
    """
    import os
    import uuid

    from .storage import is_remote, translated

    uri = join(root, rec["file"])
    if not storage.exists(uri):
        raise IntegrityError(f"{uri} is missing but named by {where}: rerun the same command to recompute it")
    mismatch = IntegrityError(f"{uri} does not match its sha256 in {where}: the file changed after it was committed; "
                              "delete it and rerun the same command to recompute it")
    if not is_remote(uri):
        path = storage.resolve(uri)[1]
        with translated(uri, "read"):
            if sha256_file(path) != rec["sha256"]:
                raise mismatch
        return path
    os.makedirs(cache_dir, exist_ok=True)
    path = os.path.join(cache_dir, f"{rec['sha256']}{os.path.splitext(rec['file'])[1]}")
    if os.path.exists(path) and sha256_file(path) == rec["sha256"]:
        return path
    tmp, h = f"{path}.tmp-{uuid.uuid4().hex[:8]}", hashlib.sha256()
    fs, key = storage.resolve(uri)
    try:
        with translated(uri, "read"), fs.open_input_stream(key, compression=None) as src, open(tmp, "wb") as out:
            for block in iter(lambda: src.read(CHUNK), b""):
                h.update(block)
                out.write(block)
        if h.hexdigest() != rec["sha256"]:
            raise mismatch
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return path


__all__ += ["sha256_file", "staging_path", "verified_local_file", "write_file_committed"]
