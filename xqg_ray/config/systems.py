"""The experiment's systems: sweep expansion, the encoders, baselines and comparisons.

A system may name a sweep over ``alpha``, ``n`` (queries per language used) and
``aggregation``; :func:`expand_sweeps` turns it into one system per point, each
varying one parameter with the others held at the system's own values.  The
points are ordinary systems (an index each, a row in metrics.json) that carry
``sweep_of`` and ``sweep_param`` so the report can draw the sweep.  Expansion is
idempotent, so the saved ``config.yaml`` loads back to the same systems.
"""

from __future__ import annotations

import copy
from typing import Any, Dict, List

from ..schemas import UNFILTERED
from .schema import GENERATING_KINDS, SWEEP_PARAMS, EncoderConfig, RunConfig, SweepConfig, SystemConfig

# The name of the `encoder` section among the encoders (it names no directory);
# a system's `encoder: ""` means it.
DEFAULT_ENCODER = ""


def point_name(system: str, param: str, value: Any) -> str:
    """``xqg@alpha=0.02``: the name (and file name) of one sweep point."""
    v = f"{value:g}" if isinstance(value, float) else str(value)
    return f"{system}@{param}={v}"


def expand_sweeps(cfg: RunConfig) -> RunConfig:
    """``cfg`` with every sweep point appended after its system as a system of its own."""
    out: List[SystemConfig] = []
    names = {s.name for s in cfg.systems}
    for s in cfg.systems:
        out.append(s)
        for param in SWEEP_PARAMS:
            for value in getattr(s.sweep, param):
                if value == getattr(s, param) or (param == "n" and s.n == 0 and queries_per_language(cfg, s) == value):
                    continue  # the system itself is this point
                name = point_name(s.name, param, value)
                if name in names:
                    continue  # already expanded (a saved config.yaml read back)
                p = copy.deepcopy(s)
                p.name, p.sweep, p.sweep_of, p.sweep_param = name, SweepConfig(), s.name, param
                setattr(p, param, value)
                out.append(p)
                names.add(name)
    cfg.systems = out
    return cfg


def queries_per_language(cfg: RunConfig, s: SystemConfig) -> int:
    """The slots per language ``s``'s generator writes (its n_per_language); 0 for none or provided queries."""
    g = cfg.generators.get(s.generator)
    return g.n_per_language if g is not None and g.kind in GENERATING_KINDS else 0


def query_source(s: SystemConfig) -> str:
    """The queries ``s`` augments with, named as the embeddings name them: its generator's name for
    the unfiltered selection (the name before filters, so those outputs keep their keys),
    ``GENERATOR@kept`` (or ``@passed``) for the filtered questions, with ``@kK`` and ``@rR`` where the
    system replays them at its own round-trip top k or rounds; "" for a baseline."""
    if not s.generator or s.questions == UNFILTERED:
        return s.generator
    return f"{s.generator}@{selection_name(s)}"


def selection_name(s: SystemConfig) -> str:
    """Which of its generator's questions ``s`` reads, as the report names it: ``unfiltered``, ``kept``
    or ``passed``, with ``@kK`` / ``@rR`` for its own round-trip top k / rounds (e.g. ``passed@k10``)."""
    return s.questions + (f"@k{s.round_trip_top_k}" if s.round_trip_top_k else "") + (f"@r{s.max_attempts}" if s.max_attempts else "")


def tune_candidates(cfg: RunConfig, members: List[str]) -> List[str]:
    """The systems an ``eval.tune_groups`` entry chooses among: each member, then its sweep points in
    config order (where :func:`expand_sweeps` put them), each once."""
    return list(dict.fromkeys(n for m in members for n in [m] + [s.name for s in cfg.systems if s.sweep_of == m]))


def all_encoders(cfg: RunConfig) -> Dict[str, EncoderConfig]:
    """Every encoder by the name a system gives it: the `encoder` section (``DEFAULT_ENCODER``) first, then `encoders`.

    Each entry gets the same checks (validate.py, preflight.py): the YAML's two
    sections are one list to everything but the file layout.
    """
    return {DEFAULT_ENCODER: cfg.encoder, **cfg.encoders}


def encoder_cfg(cfg: RunConfig, name: str) -> EncoderConfig:
    """The encoder a system names (``DEFAULT_ENCODER`` for the `encoder` section)."""
    return all_encoders(cfg)[name]


def encoder_key(name: str) -> str:
    """Where an encoder is in the config file: ``encoder`` or ``encoders.NAME`` (for messages)."""
    return "encoder" if name == DEFAULT_ENCODER else f"encoders.{name}"


def encoder_label(name: str) -> str:
    """How reports name an encoder ("default" for the `encoder` section)."""
    return name or "default"


def encoders_used(cfg: RunConfig) -> List[str]:
    """The encoders some system uses, the default first."""
    return list(dict.fromkeys(sorted((s.encoder for s in cfg.systems), key=lambda e: (e != DEFAULT_ENCODER, e))))


def baseline_of(cfg: RunConfig, s: SystemConfig) -> str:
    """The system ``s`` is compared against: its own ``baseline``, else eval.baseline when it
    uses the same encoder, else the first system of its encoder without a generator."""
    if s.baseline:
        return s.baseline
    by_name = {x.name: x for x in cfg.systems}
    base = by_name.get(cfg.eval.baseline)
    if base is not None and base.encoder == s.encoder:
        return base.name
    for x in cfg.systems:
        if x.encoder == s.encoder and not x.generator and not x.sweep_of:
            return x.name
    return cfg.eval.baseline


def comparisons(cfg: RunConfig) -> List[Dict[str, str]]:
    """(system, baseline, scope) pairs to test: within each encoder, and every other
    encoder's baseline against eval.baseline (across encoders)."""
    out: List[Dict[str, str]] = []
    for s in cfg.systems:
        b = baseline_of(cfg, s)
        if b != s.name:
            out.append({"system": s.name, "baseline": b, "scope": "within-encoder"})
        elif s.encoder != _encoder_of(cfg, cfg.eval.baseline):
            out.append({"system": s.name, "baseline": cfg.eval.baseline, "scope": "across-encoders"})
    return out


def _encoder_of(cfg: RunConfig, system: str) -> str:
    return next((s.encoder for s in cfg.systems if s.name == system), DEFAULT_ENCODER)
