"""Per-(stage, partition) commits and versioned stage manifests: what makes work resumable.

A stage's unit of work is a partition (a corpus partition, an index shard, the
test questions).  Each unit has a *key*: the fingerprint of everything its
output depends on (the stage's settings and the digests of its inputs).  A unit
writes its data files under deterministic names that carry the key, then its
commit record ``STAGE/commits/LABEL-KEY16.json`` (sealed) -- data first, commit
last, so a record always names complete, checksummed files.  A rerun skips every
unit whose commit record for the same key exists; a run killed halfway redoes
only the rest.

When every unit has committed, the stage publishes a manifest
``STAGE/manifests/FP16.json`` (sealed; it lists the units' records) and then the
pointer ``STAGE/current.json``.  Nothing committed is overwritten: a new version
only adds files, and files that no current manifest names (an older version, an
abandoned attempt) are deleted after the pointer moves, so a kill at any moment
leaves either the old or the new version whole.  All paths are relative to the
run's output_dir.
"""

from __future__ import annotations

import hashlib
import json
import posixpath
import time
from typing import Any, Dict, Iterable, List, Optional

import pyarrow.fs as pafs

from .integrity import IntegrityError

from .sealed import read_published, read_sealed, write_sealed
from .lock import ensure_still_held
from .storage import Storage, join

CURRENT = "current.json"

# The one resume marker of every stage: a unit record taken from an earlier
# attempt's commit (not computed in this run) has ``mode == RESUMED``.
RESUMED = "resumed"


def fingerprint(obj: Any) -> str:
    """sha256 of the canonical JSON of ``obj``."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()


def now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def file_record(rec: Dict[str, Any]) -> Dict[str, Any]:
    """The part of a commit record a reader needs: relative file, sha256, size; and ``segments`` where the
    record is kept as delta segments, so a one-file reader refuses it rather than read the newest alone."""
    out = {k: rec[k] for k in ("file", "sha256", "bytes")}
    if rec.get("segments"):
        out["segments"] = rec["segments"]
    return out


def is_resumed(record: Dict[str, Any]) -> bool:
    """Whether a unit record was resumed from an earlier attempt's commit rather than computed now."""
    return record.get("mode") == RESUMED


def row_counts(records: List[Dict[str, Any]]) -> Dict[str, int]:
    """Rows computed in this run, reused from an earlier version, and resumed from an earlier attempt."""
    computed = sum(r["computed"] for r in records if not is_resumed(r))
    reused = sum(r["reused"] for r in records if not is_resumed(r))
    resumed = sum(r["rows"] for r in records if is_resumed(r))
    return {"total": sum(r["rows"] for r in records), "computed": computed, "reused": reused, "resumed": resumed}


def file_records(obj: Any) -> Iterable[Dict[str, Any]]:
    """Every ``{file, sha256, bytes}`` record inside a manifest or commit record (nested dicts and lists)."""
    if isinstance(obj, dict):
        if isinstance(obj.get("file"), str) and "bytes" in obj:
            yield obj
        for v in obj.values():
            yield from file_records(v)
    elif isinstance(obj, list):
        for v in obj:
            yield from file_records(v)


def file_sizes(storage: Storage, root: str, rel_dirs: Iterable[str], recursive: bool = False) -> Dict[str, int]:
    """Relative path -> size of the files under ``root/d`` for each ``d`` of ``rel_dirs``: one listing each."""
    sizes: Dict[str, int] = {}
    for d in sorted(set(rel_dirs)):
        fs, path = storage.resolve(join(root, d))
        try:
            infos = fs.get_file_info(pafs.FileSelector(path, allow_not_found=True, recursive=recursive))
        except (FileNotFoundError, NotADirectoryError):
            infos = []
        base = path.rstrip("/") + "/"
        for info in infos:
            if info.type == pafs.FileType.File and info.path.startswith(base):
                sizes[posixpath.join(d, info.path[len(base):])] = info.size
    return sizes


def missing_files(storage: Storage, root: str, obj: Any, sizes: Optional[Dict[str, int]] = None) -> List[str]:
    """Relative paths of the files ``obj`` records that are absent or not of their recorded size.

    Cheap on purpose: storage metadata only (one listing per directory, or the
    ``sizes`` a caller listed once), no reads; the sha256 is still checked when
    a file is read.  What is missing here is recomputed by its stage instead of
    failing every rerun the same way.
    """
    recs = list(file_records(obj))
    if sizes is None:
        sizes = file_sizes(storage, root, (posixpath.dirname(r["file"]) for r in recs))
    return [r["file"] for r in recs if sizes.get(r["file"]) != r["bytes"]]


class Ledger:
    """Commit records and manifests of one stage (``generated/t5``, ``embeddings``, ``index/xqg`` ...)."""

    def __init__(self, storage: Storage, root: str, stage: str):
        self.storage, self.root, self.stage = storage, root, stage

    # -- names ---------------------------------------------------------------
    def data_rel(self, label: str, key: str, suffix: str = ".parquet") -> str:
        return f"{self.stage}/data/{label}-{key[:16]}{suffix}"

    def commit_rel(self, label: str, key: str) -> str:
        return f"{self.stage}/commits/{label}-{key[:16]}.json"

    # -- units -----------------------------------------------------------------
    def committed(self, label: str, key: str) -> Optional[Dict[str, Any]]:
        """The commit record of unit ``label`` for ``key``, verified, or None if it never committed."""
        rel = self.commit_rel(label, key)
        if not self.storage.exists(join(self.root, rel)):
            return None
        rec = read_sealed(self.storage, self.root, rel)
        if rec.get("key") != key:
            raise IntegrityError(f"{join(self.root, rel)} names key {rec.get('key')!r}, not {key!r}: delete it and rerun")
        return rec

    def commit(self, label: str, key: str, record: Dict[str, Any]) -> Dict[str, Any]:
        """Write the unit's commit record (after its data files)."""
        return write_sealed(self.storage, self.root, self.commit_rel(label, key), {"stage": self.stage, "unit": label, "key": key, "created": now(), **record})

    # -- versions ----------------------------------------------------------------
    def current(self) -> Optional[Dict[str, Any]]:
        """The published manifest named by ``current.json`` (verified), or None."""
        return read_published(self.storage, self.root, f"{self.stage}/{CURRENT}")

    def published(self, fp: str) -> Optional[Dict[str, Any]]:
        """The current manifest if it was made from inputs with fingerprint ``fp`` and every file it names is there."""
        m = self.current()
        if m is None or m.get("fingerprint") != fp:
            return None
        return None if missing_files(self.storage, self.root, m) else m

    def file_sizes(self) -> Dict[str, int]:
        """Relative path -> size of every file under this stage (one recursive listing)."""
        return file_sizes(self.storage, self.root, [self.stage], recursive=True)

    def intact(self, record: Dict[str, Any], sizes: Optional[Dict[str, int]] = None) -> bool:
        """Whether every file a commit record or manifest entry names exists with its recorded size.

        ``sizes``: :meth:`file_sizes`, listed once for many records.
        """
        return not missing_files(self.storage, self.root, record, sizes)

    def publish(self, fp: str, manifest: Dict[str, Any], keep: Iterable[str] = ()) -> Dict[str, Any]:
        """Write the stage manifest, move the pointer to it, then delete what it does not name.

        ``keep``: relative paths under this stage that stay even though the
        manifest does not list them (none by default).
        """
        ensure_still_held(self.root)  # a driver that lost its lock neither publishes nor deletes
        rel = f"{self.stage}/manifests/{fp[:16]}.json"
        m = write_sealed(self.storage, self.root, rel, {"stage": self.stage, "fingerprint": fp, "created": now(), **manifest})
        write_sealed(self.storage, self.root, f"{self.stage}/{CURRENT}", {"manifest": rel, "fingerprint": fp})
        self.gc(m, [rel, *keep])
        return m

    def gc(self, manifest: Dict[str, Any], keep: Iterable[str] = ()) -> List[str]:
        """Delete files under this stage that neither ``manifest`` nor ``keep`` names."""
        named = set(_files_named(manifest)) | set(keep) | {f"{self.stage}/{CURRENT}"}
        removed = []
        for sub in self.storage.list_relative(join(self.root, self.stage)):
            rel = f"{self.stage}/{sub}"
            if rel not in named:
                self.storage.delete(join(self.root, rel))
                removed.append(rel)
        return removed


def _files_named(obj: Any) -> Iterable[str]:
    """Every ``file`` and ``commit`` path inside a manifest (nested dicts and lists)."""
    if isinstance(obj, dict):
        for k, v in obj.items():
            if k in ("file", "commit") and isinstance(v, str):
                yield v
            else:
                yield from _files_named(v)
    elif isinstance(obj, list):
        for v in obj:
            yield from _files_named(v)
