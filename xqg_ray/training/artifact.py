"""The trained encoder as an artifact under the run's output directory: keyed, sealed, verified on load.

Layout (paths relative to ``output_dir``)::

    trained/NAME/KEY16/model/*            save_pretrained weights (safetensors), config, tokenizer
    trained/NAME/KEY16/manifest.json      sealed: key, base encoder, pairs, settings, files + sha256, cost
    trained/NAME/current.json             sealed pointer to the manifest of the current key

The key hashes the base encoder (its settings that shape training and the
content of its files), the pairs' content hash and the training settings that
change the weights, so the same key reuses the artifact and any change trains
a new one beside it.  Loading checks every file's sha256 (a flipped byte is a
one-line :class:`~xqg_ray.store.integrity.IntegrityError`) and returns a local
directory ``AutoModel.from_pretrained`` takes: the artifact itself for a local
output directory, a verified copy in the model cache for ``s3://``.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from dataclasses import asdict, replace
from typing import Any, Dict, Optional

from ..config import TRAINED_PREFIX, ConfigError, EncoderConfig, trained_name
from ..store.integrity import IntegrityError, read_verified, write_committed
from ..store.sealed import read_published, read_sealed, write_sealed
from ..store.ledger import fingerprint
from ..store.storage import Storage, is_remote, join
from .settings import TrainSettings, key_fields

# Bump when training or the artifact's layout changes what a key produces.
TRAIN_VERSION = 1
STAGE = "trained"
# A spec an `encoders:` entry can name for the artifact of training NAME (the config's choice).
SPEC_PREFIX = TRAINED_PREFIX
# Encoder settings that shape training (the rest -- dtype, batch_size, normalize -- only shape inference).
TRAINING_ENCODER_FIELDS = ("model", "pooling", "query_prefix", "passage_prefix", "passage_template", "max_query_length", "max_passage_length")


def model_fingerprint(path: str) -> str:
    """sha256 over the files of a local model directory (names, sizes, contents); a hub id as itself."""
    if not os.path.isdir(path):
        return f"spec:{path}"
    h = hashlib.sha256()
    for name in sorted(os.listdir(path)):
        full = os.path.join(path, name)
        if not os.path.isfile(full) or name.startswith("."):
            continue
        fh = hashlib.sha256()
        with open(full, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                fh.update(block)
        h.update(f"{name}\x00{os.path.getsize(full)}\x00{fh.hexdigest()}\n".encode())
    return h.hexdigest()


def artifact_key(encoder: EncoderConfig, base_files: str, pairs_sha256: str, settings: TrainSettings) -> str:
    """The artifact's key: base encoder (settings + ``model_fingerprint``), pairs' content hash, training settings."""
    base = {k: v for k, v in asdict(encoder).items() if k in TRAINING_ENCODER_FIELDS}
    return fingerprint({"v": TRAIN_VERSION, "base": base, "base_files": base_files, "pairs": pairs_sha256, "train": key_fields(settings)})


def artifact_dir(name: str, key: str) -> str:
    return f"{STAGE}/{name}/{key[:16]}"


def pointer(name: str) -> str:
    return f"{STAGE}/{name}/current.json"


def find_artifact(storage: Storage, root: str, name: str, key: str) -> Optional[Dict[str, Any]]:
    """The sealed manifest of artifact ``name`` with ``key``, or None when there is none (train it)."""
    rel = f"{artifact_dir(name, key)}/manifest.json"
    if not storage.exists(join(root, rel)):
        return None
    m = read_sealed(storage, root, rel)
    if m.get("key") != key:  # two keys sharing 16 hex digits: never reuse the other's weights
        raise IntegrityError(f"{join(root, rel)} holds key {m.get('key')!r}, not {key!r}: delete {join(root, artifact_dir(name, key))} and rerun")
    return m


def write_artifact(storage: Storage, root: str, name: str, key: str, model_dir: str, meta: Dict[str, Any]) -> Dict[str, Any]:
    """Commit every file of ``model_dir`` and seal the manifest (then the pointer); returns the manifest."""
    d = artifact_dir(name, key)
    files = []
    for f in sorted(os.listdir(model_dir)):
        full = os.path.join(model_dir, f)
        if os.path.isfile(full):
            with open(full, "rb") as fh:
                files.append(write_committed(storage, root, f"{d}/model/{f}", fh.read()))
    # The manifest is written last: its presence means every file it names is there.
    m = write_sealed(storage, root, f"{d}/manifest.json", {"key": key, "name": name, "files": files, **meta})
    write_sealed(storage, root, pointer(name), {"manifest": f"{d}/manifest.json", "key": key})
    return m


def load_artifact(storage: Storage, root: str, manifest: Dict[str, Any], cache_dir: Optional[str] = None) -> str:
    """A local directory with the artifact's model, every file checked against its sha256.

    ``cache_dir``: where a remote artifact is copied (default: the model cache's ``trained/``).
    """
    where = f"{join(root, artifact_dir(manifest['name'], manifest['key']))}/manifest.json"
    datas = {rec["file"]: read_verified(storage, root, rec, where=where) for rec in manifest["files"]}
    if not is_remote(root):
        return join(root, artifact_dir(manifest["name"], manifest["key"]), "model")
    from ..models.bundled import cache_root

    target = os.path.join(cache_dir or str(cache_root() / STAGE), manifest["key"][:16])
    if os.path.isdir(target) and _same_files(target, datas):
        return target  # another actor on this node copied the same verified bytes
    if os.path.isdir(target):
        shutil.rmtree(target)  # a damaged earlier copy is replaced by the bytes just verified
    os.makedirs(os.path.dirname(target), exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=f".{manifest['key'][:16]}.tmp-", dir=os.path.dirname(target))
    for rel, data in datas.items():
        with open(os.path.join(tmp, os.path.basename(rel)), "wb") as f:
            f.write(data)
    try:
        os.rename(tmp, target)
    except OSError:  # another process renamed its copy first: keep it if it holds the same bytes
        shutil.rmtree(tmp, ignore_errors=True)
        if not _same_files(target, datas):
            raise
    return target


def _same_files(directory: str, datas: Dict[str, bytes]) -> bool:
    """Whether ``directory`` holds exactly the files ``datas`` (path -> bytes) names, byte for byte."""
    for rel, data in datas.items():
        path = os.path.join(directory, os.path.basename(rel))
        if not os.path.isfile(path) or os.path.getsize(path) != len(data):
            return False
        with open(path, "rb") as f:
            if f.read() != data:
                return False
    return True


def pinned_spec(name: str, key: str) -> str:
    """``trained:NAME@KEY``: the model spec of artifact ``name`` with ``key`` (what a run's stages see)."""
    return f"{SPEC_PREFIX}{name}@{key}"


def resolve_encoder(storage: Storage, root: str, cfg: EncoderConfig, cache_dir: Optional[str] = None) -> EncoderConfig:
    """``cfg`` with a pinned ``trained:NAME@KEY`` model replaced by the artifact's verified local directory
    (:func:`load_artifact`); any other encoder unchanged.  Called where the model is loaded (the encode actors)."""
    name = trained_name(cfg.model)
    if name is None:
        return cfg
    key = cfg.model.split("@", 1)[1] if "@" in cfg.model else ""
    manifest = find_artifact(storage, root, name, key) if key else None
    if manifest is None:
        raise ConfigError(f"model {cfg.model!r}: no trained artifact {join(root, artifact_dir(name, key)) if key else name}; "
                          "run the whole job (its train stage writes it)")
    return trained_encoder(cfg, load_artifact(storage, root, manifest, cache_dir))


def current_artifact(storage: Storage, root: str, name: str) -> Optional[Dict[str, Any]]:
    """The manifest ``trained/NAME/current.json`` names (the last key trained or reused), or None."""
    return read_published(storage, root, pointer(name))


def trained_encoder(base: EncoderConfig, model_path: str) -> EncoderConfig:
    """The encoder config for a trained artifact: the base's settings with the artifact's model directory."""
    return replace(base, model=model_path)


__all__ = [
    "SPEC_PREFIX",
    "STAGE",
    "TRAINING_ENCODER_FIELDS",
    "TRAIN_VERSION",
    "artifact_dir",
    "artifact_key",
    "current_artifact",
    "find_artifact",
    "load_artifact",
    "model_fingerprint",
    "pinned_spec",
    "pointer",
    "resolve_encoder",
    "trained_encoder",
    "write_artifact",
]
