"""Committed files: deterministic names, atomic writes, a sha256 per file checked on every read.

Every artifact a later stage reads (corpus partitions, generated queries,
embeddings, index shards, benchmark tables) is written through
:func:`write_committed`, which returns the record ``{file, sha256, bytes}``
that the writer stores in its commit record or manifest.  Paths in those
records are relative to the run's ``output_dir`` (the *root*), so a moved or
copied output directory keeps working and never reads another directory's data.
Readers go through :func:`read_verified`: a file whose bytes do not match the
recorded sha256 is an :class:`IntegrityError` naming the file, never silently
different data.  Manifests are JSON *sealed* with the sha256 of their own
content, so a hand edit of a derived fact (alpha, aggregation, corpus hash) is
noticed too.

Every way a manifest read can fail -- missing, truncated, not UTF-8, not JSON,
edited -- is one :class:`IntegrityError` line naming the file and the file to
delete so that a rerun recomputes it.  A stage's published version is read
through :func:`read_published`: a missing pointer, or a pointer naming a
manifest that is gone, means "not published" (the rerun recomputes the stage from
its committed units and publishes it again); a damaged pointer or manifest is an
error whose advice -- delete the pointer -- leads back to that case.
"""

from __future__ import annotations

import hashlib
import io
import json
from typing import Any, Dict, List, Optional

import pyarrow as pa
import pyarrow.parquet as pq

from ..errors import UserError
from .storage import Storage, StorageError, join

SEAL = "seal"


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
        raise IntegrityError(
            f"{uri} does not match its sha256 in {where}: the file changed after it was committed; "
            "delete it and rerun the same command to recompute it"
        )
    return data


def read_table_verified(
    storage: Storage, root: str, rec: Dict[str, Any], columns: Optional[List[str]] = None, where: str = "its commit record"
) -> pa.Table:
    return pq.read_table(pa.BufferReader(read_verified(storage, root, rec, where)), columns=columns)


def _canonical(obj: Dict[str, Any]) -> bytes:
    return json.dumps({k: v for k, v in obj.items() if k != SEAL}, sort_keys=True, ensure_ascii=False, default=str).encode("utf-8")


def seal(manifest: Dict[str, Any]) -> Dict[str, Any]:
    """``manifest`` with ``seal`` = sha256 of its canonical JSON (everything but the seal)."""
    out = {k: v for k, v in manifest.items() if k != SEAL}
    out[SEAL] = sha256_bytes(_canonical(out))
    return out


def write_sealed(storage: Storage, root: str, rel: str, manifest: Dict[str, Any]) -> Dict[str, Any]:
    m = seal(manifest)
    storage.write_json(join(root, rel), m)
    return m


def read_sealed(storage: Storage, root: str, rel: str, reset: str = "") -> Dict[str, Any]:
    """A sealed JSON manifest, verified; any failure to read it is one :class:`IntegrityError` line.

    ``reset``: the relative path whose deletion makes a rerun write ``rel``
    again (the stage's ``current.json`` for a manifest); default ``rel`` itself
    (a commit record: deleting it makes the rerun recompute that unit).
    """
    uri = join(root, rel)
    other = bool(reset) and reset != rel
    fix = f"delete {join(root, reset)} and rerun the same command to recompute it" if other else (
        "delete it and rerun the same command to recompute it")
    try:
        text = storage.read_bytes(uri).decode("utf-8")
    except StorageError:
        if storage.exists(uri):  # there but unreadable (permissions, the server): the storage error says what to fix
            raise
        again = f"delete {join(root, reset)} and rerun the same command" if other else "rerun the same command"
        raise IntegrityError(f"{uri} is missing: {again} to recompute it") from None
    except UnicodeDecodeError as e:
        raise IntegrityError(f"{uri} is not UTF-8 text (byte {e.start}): the file is damaged; {fix}") from None
    try:
        m = json.loads(text)
    except json.JSONDecodeError as e:
        what = "is truncated" if not text.strip() or e.pos >= len(text.rstrip()) else "is not valid JSON"
        raise IntegrityError(f"{uri} {what} ({e.msg} at line {e.lineno} column {e.colno}): {fix}") from None
    if not isinstance(m, dict) or m.get(SEAL) != sha256_bytes(_canonical(m)):
        raise IntegrityError(
            f"{uri} was edited after it was written (its seal does not match): "
            f"{fix}; change settings in the config, not in manifests"
        )
    return m


def read_published(storage: Storage, root: str, pointer: str) -> Optional[Dict[str, Any]]:
    """The manifest a stage's pointer (``STAGE/current.json``) names, verified; None when not published.

    Not published: the pointer is missing, or the manifest it names is missing
    (deleted by hand, or by the advice of an earlier error) -- the rerun
    recomputes the stage, reusing every unit it committed.
    A pointer or manifest that exists but is damaged or edited is an
    :class:`IntegrityError` telling the user to delete the pointer.
    """
    if not storage.exists(join(root, pointer)):
        return None
    p = read_sealed(storage, root, pointer)
    rel = p.get("manifest")
    if not isinstance(rel, str):
        raise IntegrityError(f"{join(root, pointer)} names no manifest: delete it and rerun the same command to recompute it")
    if not storage.exists(join(root, rel)):
        return None
    return read_sealed(storage, root, rel, reset=pointer)


__all__ = [
    "IntegrityError",
    "read_published",
    "read_sealed",
    "read_table_verified",
    "read_verified",
    "seal",
    "sha256_bytes",
    "table_bytes",
    "write_committed",
    "write_sealed",
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
