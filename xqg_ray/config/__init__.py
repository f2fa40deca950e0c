"""One typed configuration: the schema, loading and validation, experiment expansion, preflight.

Importers use this package's names (``from xqg_ray.config import RunConfig``);
the modules behind it are free to move.
"""

from .schema import (
    DTYPES,
    LANGUAGE_NAMES,
    POOL_STAGES,
    SECRET_KEYS,
    SWEEP_PARAMS,
    BenchmarkConfig,
    ConfigError,
    CorpusConfig,
    EncoderConfig,
    EvalConfig,
    GeneratorConfig,
    IndexConfig,
    PerturbationConfig,
    Pool,
    PoolConfig,
    RayConfig,
    RunConfig,
    SearchConfig,
    StorageConfig,
    SweepConfig,
    SystemConfig,
    load_config,
    section_dict,
    stage_pool,
    to_yaml,
    validate,
)

__all__ = [
    "DTYPES", "LANGUAGE_NAMES", "POOL_STAGES", "SECRET_KEYS", "SWEEP_PARAMS", "BenchmarkConfig", "ConfigError", "CorpusConfig",
    "EncoderConfig", "EvalConfig", "GeneratorConfig", "IndexConfig", "PerturbationConfig", "Pool", "PoolConfig",
    "RayConfig", "RunConfig", "SearchConfig", "StorageConfig", "SweepConfig", "SystemConfig", "load_config",
    "section_dict", "stage_pool", "to_yaml", "validate",
]
