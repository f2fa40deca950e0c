"""Static checks of the ``trainings`` section and of the encoders it trains (``model: trained:NAME``).

Part of the one validation path: :func:`xqg_ray.config.validate.problems` runs
them with every other check when the config loads; ``training/settings.py``
runs :func:`train_settings_problems` on a training's own settings.  One line per
problem, naming the key and what to change.
"""

from __future__ import annotations

from typing import List

from .choices import choice_problem, name_ok
from .schema import (
    HF_ENCODER, HUMAN_PAIRS, PROVIDED_KIND, QUESTION_SELECTIONS, TRAINED_PREFIX, UNFILTERED, RunConfig, TrainConfig, trained_name,
)
from .systems import DEFAULT_ENCODER, all_encoders, encoder_key


def train_settings_problems(s: TrainConfig, where: str = "train") -> List[str]:
    """Problems of how a training runs (its epochs, batch, optimiser, placement), one line each."""
    checks = [
        (s.epochs >= 1, "epochs", "must be >= 1"),
        # One pair alone has no in-batch negative: its loss is 0 and nothing is learned.
        (s.global_batch >= 2, "global_batch", "must be >= 2 (in-batch negatives need another pair)"),
        (s.num_workers >= 1, "num_workers", "must be >= 1"),
        # Every worker takes the same share of a step, so the gradient average equals one worker's.
        (s.num_workers >= 1 and s.global_batch % max(1, s.num_workers) == 0, "global_batch",
         f"must be a multiple of num_workers ({s.num_workers})"),
        (s.lr > 0, "lr", "must be > 0"),
        (s.weight_decay >= 0, "weight_decay", "must be >= 0"),
        (s.warmup_steps >= 0, "warmup_steps", "must be >= 0"),
        (s.temperature > 0, "temperature", "must be > 0"),
        (s.hard_negatives >= 0, "hard_negatives", "must be >= 0"),
        (s.max_grad_norm >= 0, "max_grad_norm", "must be >= 0 (0 disables clipping)"),
        (s.cpus_per_worker > 0, "cpus_per_worker", "must be > 0"),
        (not s.use_gpu or s.gpus_per_worker > 0, "gpus_per_worker", "must be > 0 with use_gpu"),
        (s.checkpoint_every >= 1, "checkpoint_every", "must be >= 1"),
        (s.keep_checkpoints >= 1, "keep_checkpoints", "must be >= 1 (resume needs the last one)"),
        (s.torch_threads >= 0, "torch_threads", "must be >= 0"),
        (s.max_pairs >= 0, "max_pairs", "must be >= 0 (0 = all pairs)"),
    ]
    return [f"{where}.{name}={getattr(s, name)!r} {why}" for ok, name, why in checks if not ok]


def training_problems(cfg: RunConfig) -> List[str]:
    """Each ``trainings`` entry: its name, base encoder (an hf model, not itself trained), pairs and settings."""
    errs: List[str] = []
    for name, t in cfg.trainings.items():
        where = f"trainings.{name}"
        if not name_ok(name):
            errs.append(f"{where}: use letters, digits, '-', '_' and '.' (it names directories)")
        if t.encoder and t.encoder not in cfg.encoders:
            errs.append(f"{where}.encoder={t.encoder!r} is not in encoders {sorted(cfg.encoders)}")
        else:
            base = all_encoders(cfg)[t.encoder]
            if base.kind != HF_ENCODER:
                errs.append(f"{where}.encoder: {encoder_key(t.encoder)} has kind {base.kind}; training fine-tunes an {HF_ENCODER} model")
            elif trained_name(base.model) is not None:
                errs.append(f"{where}.encoder: {encoder_key(t.encoder)} is itself trained ({base.model}); train from its base instead")
        if t.pairs == HUMAN_PAIRS:
            if not cfg.benchmark.heldout_fraction > 0:
                errs.append(f"{where}.pairs={HUMAN_PAIRS} needs held-out human questions: set benchmark.heldout_fraction > 0")
        elif t.pairs not in cfg.generators:
            errs.append(f"{where}.pairs={t.pairs!r}: name a generator {sorted(cfg.generators)} or {HUMAN_PAIRS}")
        elif cfg.generators[t.pairs].kind == PROVIDED_KIND and t.questions != UNFILTERED:
            errs.append(f"{where}.questions={t.questions}: provided generator {t.pairs!r} is not filtered; set questions: unfiltered")
        errs += [e for e in [choice_problem(f"{where}.questions", t.questions, QUESTION_SELECTIONS)] if e]
        errs += train_settings_problems(t, where)
        if t.hard_negatives:
            # The library trains on a pairs table's `negatives` column; the stage's pairs have none
            # (mining them needs the baseline index, which is built after training): refuse now, not mid-training.
            errs.append(f"{where}.hard_negatives={t.hard_negatives}: the train stage trains on in-batch negatives only "
                        "(no hard negatives are mined from the baseline index yet); set 0")
    return errs


# What a trained encoder must share with its base: the weights were trained with them.
TRAINED_SHARED_FIELDS = ("pooling", "query_prefix", "passage_prefix", "passage_template")


def trained_encoder_problems(cfg: RunConfig) -> List[str]:
    """Encoders whose ``model`` is ``trained:NAME``: NAME a training, kind hf, pooling/prefixes/template as its base's."""
    errs: List[str] = []
    for enc, e in all_encoders(cfg).items():
        name = trained_name(e.model)
        if name is None:
            continue
        where = encoder_key(enc)
        if enc == DEFAULT_ENCODER:
            errs.append(f"encoder.model={e.model!r}: the encoder section is the run's base; name the trained encoder in an encoders entry")
            continue
        if e.model != TRAINED_PREFIX + name or name not in cfg.trainings:
            errs.append(f"{where}.model={e.model!r}: name a training, {TRAINED_PREFIX}NAME with NAME in trainings {sorted(cfg.trainings)}")
            continue
        if e.kind != HF_ENCODER:
            errs.append(f"{where}.kind={e.kind!r}: a trained encoder is an {HF_ENCODER} model")
            continue
        base_name = cfg.trainings[name].encoder
        base = all_encoders(cfg).get(base_name)
        if base is None:
            continue  # the training's own check names the missing base
        for k in TRAINED_SHARED_FIELDS:
            if getattr(e, k) != getattr(base, k):
                errs.append(f"{where}.{k}={getattr(e, k)!r} differs from {encoder_key(base_name)}.{k}={getattr(base, k)!r}, "
                            f"which trainings.{name} trained with; set {k}: {getattr(base, k)!r}")
    return errs
