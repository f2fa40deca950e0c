"""Sealed JSON: manifests and commit records carrying the sha256 of their own content.

A manifest is JSON *sealed* with the sha256 of its canonical form, so a hand
edit of a derived fact (alpha, aggregation, corpus hash) is noticed, as a
flipped bit in a data file is (:mod:`.integrity`).

Every way a manifest read can fail -- missing, truncated, not UTF-8, not JSON,
edited -- is one :class:`IntegrityError` line naming the file and the file to
delete so that a rerun recomputes it.  A stage's published version is read
through :func:`read_published`: a missing pointer, or a pointer naming a
manifest that is gone, means "not published" (the rerun recomputes the stage from
its committed units and publishes it again); a damaged pointer or manifest is an
error whose advice -- delete the pointer -- leads back to that case.
"""

from __future__ import annotations

import json
from typing import Any, Dict, Optional

from .integrity import IntegrityError, sha256_bytes
from .storage import Storage, StorageError, join

SEAL = "seal"


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
