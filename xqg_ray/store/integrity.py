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
"""

from __future__ import annotations

import hashlib
import io
import json
from typing import Any, Dict, List, Optional

import pyarrow as pa
import pyarrow.parquet as pq

from ..errors import UserError
from .storage import Storage, join

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


def read_sealed(storage: Storage, root: str, rel: str) -> Dict[str, Any]:
    """A sealed JSON manifest, verified; an edited or truncated one is an :class:`IntegrityError`."""
    uri = join(root, rel)
    try:
        m = json.loads(storage.read_bytes(uri))
    except json.JSONDecodeError as e:
        raise IntegrityError(f"{uri} is not valid JSON ({e.msg}): delete it and rerun to recompute the stage") from e
    if not isinstance(m, dict) or m.get(SEAL) != sha256_bytes(_canonical(m)):
        raise IntegrityError(
            f"{uri} was edited after it was written (its seal does not match): "
            "delete it and rerun to recompute the stage; change settings in the config, not in manifests"
        )
    return m


__all__ = [
    "IntegrityError",
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
