"""One typed configuration: its schema and choice lists, loading, validation, secrets, systems.

Importers use this package's names (``from xqg_ray.config import RunConfig``);
the modules behind it are free to move.  By concern:

* ``schema``: the dataclasses and every choice list (``POOLINGS``, ``DTYPES``...);
* ``load``: YAML + dotlist -> a validated :class:`RunConfig`, and back to YAML;
* ``validate``: every static check, one line per problem;
* ``secrets``: :func:`redact` for any text leaving the process, :func:`mask_secrets` for a config;
* ``validate`` also holds the training checks (``trainings``, ``trained:NAME`` encoders);
* ``systems``: sweeps, the encoders (:func:`all_encoders`), baselines and comparisons;
* ``preflight``: checks that need a model's files, FAISS or the corpus (imported
  as ``xqg_ray.config.preflight``: it reaches into the retrieval and stage
  modules, which import this package).
"""

from .load import load_config, section_dict, to_yaml
from .schema import (
    AGGREGATIONS,
    BENCHMARK_KINDS,
    CHAR_KINDS,
    CLEAN_QUERY_SET,
    CORPUS_FORMATS,
    DTYPES,
    FILE_BENCHMARK_KINDS,
    GENERATING_KINDS,
    GENERATOR_KINDS,
    HUMAN_PAIRS,
    INDEX_METRICS,
    LANGUAGE_NAMES,
    PAIR_KINDS,
    PERTURBATION_KINDS,
    POOL_STAGES,
    POOLINGS,
    PROVIDED_KIND,
    QUESTION_SELECTIONS,
    SECRET_KEYS,
    SWEEP_PARAMS,
    TRAIN_TARGET_FIELDS,
    TRAINED_PREFIX,
    WORD_KINDS,
    BenchmarkConfig,
    ConfigError,
    CorpusConfig,
    EncoderConfig,
    EvalConfig,
    GeneratorConfig,
    IndexConfig,
    PerturbationConfig,
    PoolConfig,
    RayConfig,
    RunConfig,
    SearchConfig,
    StorageConfig,
    SweepConfig,
    SystemConfig,
    TrainConfig,
    trained_name,
)
from .pools import Pool, stage_pool
from .secrets import mask_secrets, redact
from .systems import (
    DEFAULT_ENCODER,
    all_encoders,
    baseline_of,
    comparisons,
    encoder_cfg,
    encoder_key,
    encoder_label,
    encoders_used,
    expand_sweeps,
    point_name,
    queries_per_language,
)
from .validate import perturbation_problems, problems, validate
from .validate_training import train_settings_problems

__all__ = [
    "AGGREGATIONS", "BENCHMARK_KINDS", "CHAR_KINDS", "CLEAN_QUERY_SET", "CORPUS_FORMATS", "DTYPES", "FILE_BENCHMARK_KINDS",
    "GENERATING_KINDS", "GENERATOR_KINDS", "INDEX_METRICS", "LANGUAGE_NAMES", "PAIR_KINDS", "PERTURBATION_KINDS",
    "POOL_STAGES", "POOLINGS", "PROVIDED_KIND", "SECRET_KEYS", "SWEEP_PARAMS", "WORD_KINDS",
    "HUMAN_PAIRS", "QUESTION_SELECTIONS", "TRAIN_TARGET_FIELDS", "TRAINED_PREFIX",
    "BenchmarkConfig", "ConfigError", "CorpusConfig", "EncoderConfig", "EvalConfig", "GeneratorConfig", "IndexConfig",
    "PerturbationConfig", "Pool", "PoolConfig", "RayConfig", "RunConfig", "SearchConfig", "StorageConfig", "SweepConfig",
    "SystemConfig", "TrainConfig", "stage_pool",
    "load_config", "section_dict", "to_yaml", "validate", "problems", "perturbation_problems", "train_settings_problems", "trained_name", "redact", "mask_secrets",
    "DEFAULT_ENCODER", "all_encoders", "baseline_of", "comparisons", "encoder_cfg", "encoder_key", "encoder_label",
    "encoders_used", "expand_sweeps", "point_name", "queries_per_language",
]
