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
