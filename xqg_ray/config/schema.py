"""One typed configuration for every xqg-ray command.

Dataclasses are turned into an OmegaConf structured config, merged with a YAML
file and dotlist overrides.  Unknown keys are errors (structured configs are
closed), and :func:`validate` checks the cross-field rules before any heavy
work starts, with messages that say what to change.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Sequence

from omegaconf import MISSING, OmegaConf

from ..errors import UserError

# Languages named in generator prompts ("Generate a {language} question ...").
LANGUAGE_NAMES: Dict[str, str] = {
    "ar": "Arabic",
    "bn": "Bengali",
    "de": "German",
    "el": "Greek",
    "en": "English",
    "es": "Spanish",
    "fi": "Finnish",
    "hi": "Hindi",
    "ja": "Japanese",
    "ko": "Korean",
    "ro": "Romanian",
    "ru": "Russian",
    "te": "Telugu",
    "th": "Thai",
    "tr": "Turkish",
    "vi": "Vietnamese",
    "zh": "Chinese",
}

DTYPES = ("auto", "float32", "float16", "bfloat16")

SECRET_KEYS = ("access_key", "secret_key", "session_token")


@dataclass
class StorageConfig:
    """How URIs are opened.  Local paths need nothing; ``s3://`` uses these."""

    s3_endpoint: str = ""  # e.g. http://127.0.0.1:9000 for MinIO/moto; empty = AWS
    s3_region: str = "us-east-1"
    # Empty = the usual AWS credential chain (env vars, instance profile).
    access_key: str = ""
    secret_key: str = ""
    session_token: str = ""


@dataclass
class BenchmarkConfig:
    """Which benchmark to prepare (written under ``{output_dir}/benchmark``)."""

    kind: str = "xquad"  # xquad | xor-tydi | files
    # xquad: a directory holding xquad/ and squad-v1.1-dev/ (or the public URL root).
    source: str = "../shared/datasets"
    # xor-tydi / files: the passage file (TSV/JSONL/Parquet) and the question file.
    corpus: str = ""
    queries: str = ""
    # Query languages to evaluate; empty = every language present.
    languages: List[str] = field(default_factory=list)
    # 0 = all.  Keeps the first N questions per language in id order.
    max_queries_per_language: int = 0
    # 0 = whole corpus.  Otherwise every gold passage plus deterministic distractors.
    corpus_limit: int = 0
    # Fraction of XQuAD base questions held out as "provided" human queries
    # (never evaluated on); 0 disables the held-out table.
    heldout_fraction: float = 0.0
    seed: int = 13


@dataclass
class CorpusConfig:
    """How the corpus is read and stored: the partition is the unit of work, output and rerun."""

    # Passages are stored in `num_partitions` files by id % num_partitions.  Keep it
    # fixed for the life of an output directory: per-partition reuse depends on it.
    num_partitions: int = 32
    # Uncompressed JSONL/TSV files are read in byte ranges of this size (one Ray Data block each).
    read_chunk_mb: int = 64
    format: str = "auto"  # auto (by extension) | jsonl | tsv | parquet
    # A passage whose text is longer is quarantined with its length: a dump's
    # whole-book or broken-markup row would otherwise be truncated unseen by the encoder.
    max_passage_chars: int = 100000


@dataclass
class EncoderConfig:
    """The one shared encoder for passages, generated queries and test queries."""

    model: str = "bundled:multilingual-e5-small"  # bundled:NAME, hub id or local path
    pooling: str = "cls"  # cls | mean
    normalize: bool = False
    query_prefix: str = ""
    passage_prefix: str = ""
    passage_template: str = "{title} {text}"
    max_query_length: int = 64
    max_passage_length: int = 256
    # auto = bfloat16 on CUDA, float32 on CPU (where half-precision matmuls are slow or missing).
    dtype: str = "auto"  # auto | float32 | float16 | bfloat16
    batch_size: int = 32


@dataclass
class GeneratorConfig:
    """A query source for augmentation."""

    kind: str = "seq2seq"  # seq2seq | causal | provided
    model: str = ""  # bundled:NAME, hub id or local path (seq2seq/causal)
    gguf_file: str = ""  # GGUF weights inside `model` (transformers gguf_file=)
    languages: List[str] = field(default_factory=lambda: ["ar", "bn", "fi", "ja", "ko", "ru", "te"])
    n_per_language: int = 5
    prompt: str = "Generate a {language} question for this passage: {title} {text}"
    top_k: int = 10
    temperature: float = 1.0
    max_new_tokens: int = 32
    max_input_length: int = 512
    # causal: number of few-shot exemplars per language taken from the bundled set.
    few_shot: int = 2
    # provided: a table (Parquet/JSONL) with docid, lang, text.  "benchmark:provided"
    # means the held-out human questions written by the benchmark stage.
    path: str = ""
    batch_size: int = 8
    dtype: str = "auto"  # auto | float32 | float16 | bfloat16 (as encoder.dtype)
    seed: int = 0


@dataclass
class SweepConfig:
    """Values to sweep one at a time, the system's other settings held fixed.

    Every point is built from the stored encodings (E(p) and per-slot query
    sums): no query is generated or encoded again for a sweep.
    """

    alpha: List[float] = field(default_factory=list)
    n: List[int] = field(default_factory=list)  # generated queries per language used: slots 1..n
    aggregation: List[str] = field(default_factory=list)


SWEEP_PARAMS = ("alpha", "n", "aggregation")


@dataclass
class SystemConfig:
    """One retrieval system: E(p) optionally augmented with a generator's queries."""

    name: str = MISSING
    generator: str = ""  # key in `generators`; empty = baseline E(p)
    encoder: str = ""  # key in `encoders`; empty = the `encoder` section
    alpha: float = 0.01
    aggregation: str = "sum"  # sum (the paper) | mean
    # Use only the first n queries per language (0 = all): the "more queries?" question.
    n: int = 0
    # sum with unequal query counts per passage is unfair (see README); refuse by default.
    allow_unequal_counts: bool = False
    # Compared against this system (empty = eval.baseline, or the first baseline of its encoder).
    baseline: str = ""
    sweep: SweepConfig = field(default_factory=SweepConfig)
    # Set on the systems a sweep expands to: the swept system and parameter.
    sweep_of: str = ""
    sweep_param: str = ""


@dataclass
class PerturbationConfig:
    """A seeded perturbation of the test questions: its own query set, encoded once, run on every system."""

    name: str = MISSING
    # swap | drop | insert | keyboard | char (a mix of the four) | word_order | word_drop
    kind: str = "char"
    rate: float = 0.1  # fraction of characters (or words) edited, exact on long inputs
    seed: int = 0


@dataclass
class IndexConfig:
    num_shards: int = 2
    factory: str = "Flat"  # any faiss index_factory string
    metric: str = "ip"  # ip | l2


@dataclass
class SearchConfig:
    top_k: int = 100
    query_batch_size: int = 4096


@dataclass
class EvalConfig:
    kt: List[int] = field(default_factory=lambda: [2, 5])
    recall_k: List[int] = field(default_factory=lambda: [1, 5, 20])
    mrr_k: int = 10
    baseline: str = "baseline"
    bootstrap_samples: int = 1000
    permutation_samples: int = 10000
    seed: int = 0
    # Per-language tables and plots: languages in this order (empty = by the
    # encoder's pretraining resource level, most to least, see languages.py) ...
    language_order: List[str] = field(default_factory=list)
    # ... and, optionally, pooled groups, e.g. {high: [de, es], low: [te, bn]}.
    language_groups: Dict[str, List[str]] = field(default_factory=dict)


@dataclass
class PoolConfig:
    """One stage's actors; an unset (null) value takes the ``ray.actor_*`` default."""

    num_cpus: Optional[float] = None
    num_gpus: Optional[float] = None  # fractional allowed: 0.5 = two actors per GPU
    min_actors: Optional[int] = None
    max_actors: Optional[int] = None
    torch_threads: Optional[int] = None


# The stages that run actors, each with its own `ray.<stage>` section.
POOL_STAGES = ("generate", "encode", "search")


@dataclass
class RayConfig:
    address: str = "local"  # "local" = in-process cluster; "auto" or ray://... to join one
    num_cpus: Optional[int] = None  # logical CPUs of a local cluster (None = detect)
    # Defaults for every stage's actors.  Fractional CPUs keep read tasks
    # schedulable next to the actor pools on a small machine; a GPU cluster sets
    # actor_num_gpus: 1 (one GPU per generation/encoding actor, conf/xor-tydi.yaml).
    actor_num_cpus: float = 1.0
    actor_num_gpus: float = 0.0
    min_actors: int = 1
    max_actors: int = 1
    torch_threads: int = 0  # 0 = max(1, int(num_cpus of the stage))
    # Per-stage overrides, e.g. ray.search.num_gpus=0 while generation uses GPUs.
    generate: PoolConfig = field(default_factory=PoolConfig)
    encode: PoolConfig = field(default_factory=PoolConfig)
    search: PoolConfig = field(default_factory=PoolConfig)
    progress: bool = True


@dataclass(frozen=True)
class Pool:
    """A stage's resolved actor resources (see :func:`stage_pool`)."""

    num_cpus: float
    num_gpus: float
    min_actors: int
    max_actors: int
    torch_threads: int


def stage_pool(rc: "RayConfig", stage: str) -> Pool:
    """``ray.<stage>`` with unset values taken from the ``ray.actor_*`` defaults."""
    o: PoolConfig = getattr(rc, stage)

    def pick(v: Any, default: Any) -> Any:
        return default if v is None else v

    cpus = float(pick(o.num_cpus, rc.actor_num_cpus))
    threads = int(pick(o.torch_threads, rc.torch_threads))
    # faiss-cpu searches on CPU: the search actors take a GPU only when told to.
    gpus = float(pick(o.num_gpus, 0.0 if stage == "search" else rc.actor_num_gpus))
    return Pool(num_cpus=cpus, num_gpus=gpus, min_actors=int(pick(o.min_actors, rc.min_actors)),
                max_actors=int(pick(o.max_actors, rc.max_actors)), torch_threads=threads if threads > 0 else max(1, int(cpus)))


@dataclass
class RunConfig:
    output_dir: str = MISSING
    benchmark: BenchmarkConfig = field(default_factory=BenchmarkConfig)
    corpus: CorpusConfig = field(default_factory=CorpusConfig)
    encoder: EncoderConfig = field(default_factory=EncoderConfig)
    # More encoders to compare (e.g. a contrastive mE5 vs an xDR-style mBERT); a
    # system picks one with `encoder: NAME`.  Each gets its own embeddings.
    encoders: Dict[str, EncoderConfig] = field(default_factory=dict)
    generators: Dict[str, GeneratorConfig] = field(default_factory=dict)
    systems: List[SystemConfig] = field(default_factory=list)
    perturbations: List[PerturbationConfig] = field(default_factory=list)
    index: IndexConfig = field(default_factory=IndexConfig)
    search: SearchConfig = field(default_factory=SearchConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    ray: RayConfig = field(default_factory=RayConfig)
    storage: StorageConfig = field(default_factory=StorageConfig)
    # Reuse a stage's outputs when its manifest fingerprint matches.
    resume: bool = True


class ConfigError(UserError):
    """A configuration that cannot run; the message says what to change."""


def load_config(path: Optional[str] = None, overrides: Sequence[str] = ()) -> RunConfig:
    """Schema <- YAML file <- dotlist overrides, validated.  Returns a typed RunConfig."""
    cfg = OmegaConf.structured(RunConfig)
    try:
        if path:
            cfg = OmegaConf.merge(cfg, OmegaConf.load(path))
        if overrides:
            cfg = OmegaConf.merge(cfg, OmegaConf.from_dotlist(list(overrides)))
    except Exception as e:  # omegaconf raises several types; one message for the user
        raise ConfigError(f"invalid configuration ({path or 'defaults'}): {e}") from e
    obj: RunConfig = OmegaConf.to_object(cfg)  # type: ignore[assignment]
    validate(obj)
    from .systems import expand_sweeps

    return expand_sweeps(obj)


def validate(cfg: RunConfig) -> None:
    """Cross-field checks that the schema cannot express."""
    errs: List[str] = []
    if cfg.benchmark.kind not in ("xquad", "xor-tydi", "files"):
        errs.append(f"benchmark.kind={cfg.benchmark.kind!r}: use xquad, xor-tydi or files")
    if cfg.benchmark.kind in ("xor-tydi", "files") and not (cfg.benchmark.corpus and cfg.benchmark.queries):
        errs.append(f"benchmark.kind={cfg.benchmark.kind} needs benchmark.corpus and benchmark.queries")
    if not 0.0 <= cfg.benchmark.heldout_fraction < 1.0:
        errs.append("benchmark.heldout_fraction must be in [0, 1)")
    if cfg.encoder.pooling not in ("cls", "mean"):
        errs.append(f"encoder.pooling={cfg.encoder.pooling!r}: use cls or mean")
    for where, dt in (("encoder", cfg.encoder.dtype), *((f"generators.{n}", g.dtype) for n, g in cfg.generators.items())):
        if dt not in DTYPES:
            errs.append(f"{where}.dtype={dt!r}: use one of {', '.join(DTYPES)}")
    for name, g in cfg.generators.items():
        where = f"generators.{name}"
        if g.kind not in ("seq2seq", "causal", "provided"):
            errs.append(f"{where}.kind={g.kind!r}: use seq2seq, causal or provided")
        if g.kind in ("seq2seq", "causal") and not g.model:
            errs.append(f"{where}.model is empty: give bundled:NAME, a hub id or a local path")
        if g.kind == "provided" and not g.path:
            errs.append(f"{where}.path is empty: give a table with docid, lang, text")
        if g.kind != "provided":
            if g.n_per_language < 1:
                errs.append(f"{where}.n_per_language must be >= 1")
            if not g.languages:
                errs.append(f"{where}.languages is empty")
            bad = [lang for lang in g.languages if lang not in LANGUAGE_NAMES]
            if bad:
                errs.append(f"{where}.languages has unknown codes {bad}; known: {sorted(LANGUAGE_NAMES)}")
            if g.top_k < 1 or g.max_new_tokens < 1:
                errs.append(f"{where}: top_k and max_new_tokens must be >= 1")
    from .systems import validate_experiments

    errs += validate_experiments(cfg)
    for key, v in (("encoder.batch_size", cfg.encoder.batch_size), ("search.query_batch_size", cfg.search.query_batch_size),
                   ("corpus.num_partitions", cfg.corpus.num_partitions), ("corpus.read_chunk_mb", cfg.corpus.read_chunk_mb),
                   *((f"generators.{n}.batch_size", g.batch_size) for n, g in cfg.generators.items())):
        if v < 1:
            errs.append(f"{key}={v}: must be >= 1")
    if cfg.corpus.format not in ("auto", "jsonl", "tsv", "parquet"):
        errs.append(f"corpus.format={cfg.corpus.format!r}: use auto, jsonl, tsv or parquet")
    if cfg.index.num_shards < 1:
        errs.append("index.num_shards must be >= 1")
    if cfg.index.metric not in ("ip", "l2"):
        errs.append("index.metric must be ip or l2")
    if cfg.search.top_k < max([20, cfg.eval.mrr_k] + list(cfg.eval.recall_k)):
        errs.append("search.top_k must cover eval.recall_k and eval.mrr_k (and 20 for Recall@20)")
    for stage in POOL_STAGES:
        pl = stage_pool(cfg.ray, stage)
        if pl.num_cpus <= 0 or pl.num_gpus < 0 or pl.min_actors < 1 or pl.max_actors < pl.min_actors:
            errs.append(f"ray.{stage} (or ray.actor_*): num_cpus > 0, num_gpus >= 0 and 1 <= min_actors <= max_actors")
        if pl.num_gpus > 1 and pl.num_gpus != int(pl.num_gpus):
            errs.append(f"ray.{stage}.num_gpus={pl.num_gpus}: fractions are for sharing one GPU; use a whole number above 1")
    if errs:
        raise ConfigError("invalid configuration:\n  - " + "\n  - ".join(errs))


def to_yaml(cfg: RunConfig, redact: bool = True) -> str:
    """The resolved config as YAML, with secrets replaced by '***'."""
    c = copy.deepcopy(cfg)
    if redact:
        for k in SECRET_KEYS:
            if getattr(c.storage, k):
                setattr(c.storage, k, "***")
    return OmegaConf.to_yaml(OmegaConf.structured(c))


def section_dict(obj: Any) -> Any:
    """A plain dict/list copy of a config section (for fingerprints and manifests)."""
    return OmegaConf.to_container(OmegaConf.structured(obj), resolve=True)
