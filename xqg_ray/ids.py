"""Stable int64 passage ids and content hashes.

FAISS stores int64 ids and uses -1 for "no result", so ids are the first 8
bytes of BLAKE2b(docid) with the sign bit cleared: stable across runs,
machines and corpus updates (an id never depends on row order), and never -1.
"""

from __future__ import annotations

import hashlib
from typing import Iterable

import numpy as np


def passage_id(docid: str) -> int:
    """The int64 id of a docid (non-negative, stable)."""
    h = hashlib.blake2b(docid.encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(h, "big") & 0x7FFF_FFFF_FFFF_FFFF


def passage_ids(docids: Iterable[str]) -> np.ndarray:
    return np.fromiter((passage_id(d) for d in docids), dtype=np.int64)


def content_hash(title: str, text: str) -> str:
    """sha256 of the passage content; changes iff what gets encoded can change."""
    return hashlib.sha256(title.encode("utf-8") + b"\x00" + text.encode("utf-8")).hexdigest()


def corpus_hash(content_hashes_by_id: Iterable[tuple]) -> str:
    """Order-independent hash of a corpus: sha256 over (id, content hash) sorted by id."""
    h = hashlib.sha256()
    for pid, ch in sorted(content_hashes_by_id):
        h.update(f"{int(pid)}:{ch}\n".encode())
    return h.hexdigest()


def seed_for(*parts: object) -> int:
    """A 63-bit seed from any parts (config seed, generator name, passage id, language)."""
    h = hashlib.blake2b("\x1f".join(str(p) for p in parts).encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(h, "big") & 0x7FFF_FFFF_FFFF_FFFF


def shard_partitions(num_partitions: int, num_shards: int) -> list:
    """Which partitions each shard holds (``p % num_shards``): shard membership never depends on row order."""
    return [[p for p in range(num_partitions) if p % num_shards == s] for s in range(num_shards)]


def shard_of(ids: np.ndarray, num_shards: int) -> np.ndarray:
    """Shard assignment by id: stable under incremental corpus updates."""
    return (np.asarray(ids, dtype=np.int64) % num_shards).astype(np.int64)

