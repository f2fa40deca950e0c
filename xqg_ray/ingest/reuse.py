"""Per-input-file reuse across corpus snapshots: which files an update need not read, which partitions it need not reduce.

An input file has a *key*: the sha256 of its URI, its content sha256 (the
benchmark stage's fingerprint: size + mtime or ETag, hashed again only when
those changed) and every setting its parse depends on.  The parse of a keyed
file is kept as chunk files under ``corpus/inputs/<key>/`` and recorded in the
snapshot manifest's ``inputs.files``; an update whose file has the same key as
one of the parent's reuses those chunk files without opening the input file.
A file without a fingerprint (no ``sources`` given, or the XQuAD kind's staged
passages) is always read, into staging.

A partition's *inputs digest* names, in input order, the (key, chunk) pairs
whose rows or quarantine it merges.  The reduce is a function of exactly those
(and of the settings in the keys), so a partition whose digest equals the
parent's is the parent's partition: its file is verified and reused, nothing
is read or reduced.  The corpus limit depends on every partition at once, so
with a limit there is no digest and every partition is reduced (the files are
still not parsed again).
"""

from __future__ import annotations

import hashlib
import json
from typing import Any, Dict, Iterable, List, Optional, Tuple

from ..config.secrets import redact

# Bump when the chunk files' layout or the row rules change: chunk files of an older version are then parsed again.
FORMAT = 1
INPUTS_DIR = "corpus/inputs"


def file_key(uri: str, sha256: str, fmt: str, chunk_bytes: int, max_chars: int, num_partitions: int) -> str:
    """What names one parse of one file: equal keys give byte-identical chunk files."""
    ident = [FORMAT, uri, sha256, fmt, chunk_bytes, max_chars, num_partitions]
    return hashlib.sha256(json.dumps(ident).encode()).hexdigest()[:24]


def file_keys(files: List[str], sources: Optional[List[Dict[str, Any]]], fmt: str, chunk_bytes: int,
              max_chars: int, num_partitions: int) -> List[Optional[str]]:
    """The key of each of ``files`` (None for a file that ``sources`` has no sha256 of)."""
    sha = {s["uri"]: s["sha256"] for s in sources or [] if s.get("sha256")}
    return [file_key(f, sha[f], fmt, chunk_bytes, max_chars, num_partitions) if f in sha else None for f in files]


def chunk_out(key: Optional[str], part: int, staging: str, chunk: int) -> str:
    """Where the parse of one chunk is written (without extension): kept for a keyed file, staging otherwise."""
    return f"{INPUTS_DIR}/{key}/c{part:05d}" if key else f"{staging}/c{chunk:06d}"


def reusable_files(parent: Optional[Dict[str, Any]], keys: List[Optional[str]]) -> Dict[int, Dict[str, Any]]:
    """File index -> the parent's record of the same key (its chunks are reused, the file is not read)."""
    if parent is None:
        return {}
    recorded = {r["key"]: r for r in (parent.get("inputs") or {}).get("files", [])}
    return {i: recorded[k] for i, k in enumerate(keys) if k is not None and k in recorded}


def chunk_stats(chunk: int, file_idx: int, part: int, rec: Dict[str, Any]) -> Dict[str, Any]:
    """One chunk's stats in the form the reduce plan uses (``rec``: a recorded or freshly parsed chunk)."""
    return {"chunk": chunk, "file_idx": file_idx, "part": part, **{k: rec[k] for k in CHUNK_FIELDS}}


CHUNK_FIELDS = ("rows_read", "blank_lines", "quarantined", "counts", "clean", "q")


def reduce_inputs(stats: List[Dict[str, Any]], num_partitions: int) -> Tuple[List[list], List[list]]:
    """Per partition: ``(chunk file, row group, file index)`` of its clean rows and ``(file, file index)`` of its quarantine."""
    P = num_partitions
    clean: List[list] = [[] for _ in range(P)]
    quarantine: List[list] = [[] for _ in range(P)]
    for s in stats:  # in chunk (= input) order
        rg = 0
        for p, n in enumerate(s["counts"]):
            if n:
                clean[p].append((s["clean"]["file"], rg, s["file_idx"]))
                rg += 1
        if s["q"]:
            quarantine[s["chunk"] % P].append((s["q"]["file"], s["file_idx"]))
    return clean, quarantine


def inputs_digests(stats: List[Dict[str, Any]], keys: List[Optional[str]], num_partitions: int,
                   limited: bool) -> List[Optional[str]]:
    """Each partition's inputs digest, or None where an input has no key or a corpus limit applies."""
    P = num_partitions
    if limited:
        return [None] * P
    clean: List[list] = [[] for _ in range(P)]
    quarantine: List[list] = [[] for _ in range(P)]
    for s in stats:
        ident = [keys[s["file_idx"]], s["part"]]
        for p, n in enumerate(s["counts"]):
            if n:
                clean[p].append(ident)
        if s["q"]:
            quarantine[s["chunk"] % P].append(ident)
    out: List[Optional[str]] = []
    for p in range(P):
        if any(k is None for k, _ in clean[p] + quarantine[p]):
            out.append(None)
        else:
            out.append(hashlib.sha256(json.dumps([FORMAT, P, clean[p], quarantine[p]]).encode()).hexdigest())
    return out


def file_records(files: List[str], keys: List[Optional[str]], sources: Optional[List[Dict[str, Any]]],
                 stats: List[Dict[str, Any]]) -> List[Dict[str, Any]]:
    """``inputs.files`` of a manifest: per keyed file its key, URI (credentials masked), sha256 and chunks."""
    sha = {s["uri"]: s["sha256"] for s in sources or [] if s.get("sha256")}
    out = []
    for i, (uri, key) in enumerate(zip(files, keys)):
        if key is None:
            continue
        chunks = [{k: s[k] for k in CHUNK_FIELDS} for s in stats if s["file_idx"] == i]
        out.append({"key": key, "uri": redact(uri), "sha256": sha[uri], "chunks": chunks})
    return out


def appended_partitions(stats: List[Dict[str, Any]], keys: List[Optional[str]], reused_idx: Iterable[int],
                        parent: Optional[Dict[str, Any]], num_partitions: int, limited: bool) -> List[int]:
    """The partitions whose inputs are exactly the parent's followed by new files' chunks: an *append*.

    That holds when the parent's input files are this ingest's first files, reused in the same
    order (so every old chunk keeps its number and every new row comes after every old one in
    input order), and a partition's inputs digest over the old files' chunks alone equals the
    parent's.  Such a partition's old rows are the parent's reduced partition, unchanged: only
    the new chunks need reducing against it (:func:`xqg_ray.ingest.partition.append_partition`).
    A corpus limit depends on every row at once: then nothing is an append.
    """
    reused = sorted(set(reused_idx))
    if parent is None or limited or not reused or reused != list(range(len(reused))):
        return []
    if [keys[i] for i in reused] != [r["key"] for r in (parent.get("inputs") or {}).get("files", [])]:
        return []  # a parent file is gone or changed (or the parent read a file without a fingerprint)
    old = inputs_digests([s for s in stats if s["file_idx"] < len(reused)], keys, num_partitions, limited)
    recorded = {r["partition"]: r.get("inputs") for r in (parent.get("inputs") or {}).get("partitions", [])}
    return [p for p in range(num_partitions) if old[p] is not None and recorded.get(p) == old[p]]
