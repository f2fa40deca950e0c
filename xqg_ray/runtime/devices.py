"""What ``dtype: auto`` means for the run's generators, decided once by the driver before any unit.

A generator's questions depend on its dtype (bfloat16 and float32 sample different tokens), so the
dtype is in the generation's key and every unit of one generation must compute in the same one.
``auto`` means bfloat16 where the generate pool computes it fast (CUDA, or a CPU with AMX or
AVX512-BF16: :func:`~xqg_ray.models.loading.generator_dtype`) and float32 on any other CPU.  The
CPU is the generate pool's: the driver's own on the local cluster, one probe task with the pool's
resources on a joined one (a cluster's workers are often another machine than its driver).

Where ``auto`` resolves as it always did (float32 on CPU; bfloat16 on CUDA, where the actor's
``torch_dtype`` gives it) the config keeps ``auto``, so stored generations keep their keys.  On a
CPU with bfloat16 units it becomes ``bfloat16``: the key, and the questions, of a config that names
it.  A rerun on a CPU without them resolves to float32, a different key: the two never mix in one
generation.
"""

from __future__ import annotations

import copy
from typing import FrozenSet, List, Optional

from ..config import GENERATING_KINDS, RunConfig, stage_pool
from ..config.schema import TORCH_RUNTIME
from ..models.loading import cpu_flags, generator_dtype
from .cluster import current
from .tasks import run_tasks


def auto_generators(cfg: RunConfig) -> List[str]:
    """The generators whose ``dtype: auto`` the pool's hardware decides (torch runtime; llama.cpp has no dtype)."""
    return [name for name, g in cfg.generators.items() if g.dtype == "auto" and g.kind in GENERATING_KINDS and g.runtime == TORCH_RUNTIME]


def pool_cpu_flags(cfg: RunConfig) -> FrozenSet[str]:
    """The CPU flags of a machine the generate pool runs on (see the module's docstring)."""
    if current().local:
        return cpu_flags()
    return run_tasks(cpu_flags, [()], stage_pool(cfg.ray, "generate").num_cpus)[0]


def resolve_generator_dtypes(cfg: RunConfig, flags: Optional[FrozenSet[str]] = None) -> RunConfig:
    """``cfg`` with ``dtype: auto`` made ``bfloat16`` on its CPU generators where the pool's CPU has bfloat16
    units; otherwise ``cfg`` itself.  ``flags``: the pool's CPU flags (default: :func:`pool_cpu_flags`)."""
    names = auto_generators(cfg)
    if not names or stage_pool(cfg.ray, "generate").num_gpus > 0:  # CUDA: auto is bfloat16 already, key unchanged
        return cfg
    if generator_dtype("auto", "cpu", pool_cpu_flags(cfg) if flags is None else flags) == "float32":
        return cfg
    out = copy.deepcopy(cfg)
    for name in names:
        out.generators[name].dtype = "bfloat16"
    return out


__all__ = ["auto_generators", "pool_cpu_flags", "resolve_generator_dtypes"]
