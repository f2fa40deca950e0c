"""The experiment's systems: sweep expansion, encoder choice, baselines and their validation.

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

from .schema import SWEEP_PARAMS, EncoderConfig, RunConfig, SweepConfig, SystemConfig

# The name of the `encoder` section among `encoders` (it names no directory).
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
                if value == getattr(s, param) or (param == "n" and s.n == 0 and _n_max(cfg, s) == value):
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


def _n_max(cfg: RunConfig, s: SystemConfig) -> int:
    g = cfg.generators.get(s.generator)
    return g.n_per_language if g is not None and g.kind != "provided" else 0


def encoder_cfg(cfg: RunConfig, name: str) -> EncoderConfig:
    return cfg.encoder if name == DEFAULT_ENCODER else cfg.encoders[name]


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


def _name_ok(name: str) -> bool:
    return bool(name) and name.replace("-", "").replace("_", "").replace(".", "").isalnum()


def validate_experiments(cfg: RunConfig) -> List[str]:
    """Problems with systems, encoders, sweeps and perturbations (one line each, saying what to change)."""
    errs: List[str] = []
    if not cfg.systems:
        errs.append("systems is empty: add at least the baseline, e.g. {name: baseline}")
    names = [s.name for s in cfg.systems]
    if len(set(names)) != len(names):
        errs.append(f"system names must be unique, got {names}")
    for name, e in cfg.encoders.items():
        if not _name_ok(name):
            errs.append(f"encoders.{name}: use letters, digits, '-', '_' and '.' (it names directories)")
        if e.pooling not in ("cls", "mean"):
            errs.append(f"encoders.{name}.pooling={e.pooling!r}: use cls or mean")
    for s in cfg.systems:
        where = f"system {s.name!r}"
        if s.generator and s.generator not in cfg.generators:
            errs.append(f"{where} uses generator {s.generator!r}, not in generators {sorted(cfg.generators)}")
        if s.encoder and s.encoder not in cfg.encoders:
            errs.append(f"{where} uses encoder {s.encoder!r}, not in encoders {sorted(cfg.encoders)}")
        if s.aggregation not in ("sum", "mean"):
            errs.append(f"{where}: aggregation must be sum or mean")
        if s.generator and not 0.0 <= s.alpha <= 1.0:
            errs.append(f"{where}: alpha must be in [0, 1]")
        if not s.sweep_of and not _name_ok(s.name):
            errs.append(f"system name {s.name!r}: use letters, digits, '-', '_' and '.' (it names files)")
        if s.baseline and s.baseline not in names:
            errs.append(f"{where}: baseline {s.baseline!r} is not a system name")
        n_max = _n_max(cfg, s) if s.generator in cfg.generators else 0
        if s.n < 0 or (s.n and n_max and s.n > n_max):
            errs.append(f"{where}: n={s.n} must be in 0..{n_max} (the generator's n_per_language; 0 = all)")
        swept = [p for p in SWEEP_PARAMS if getattr(s.sweep, p)]
        if swept and not s.generator:
            errs.append(f"{where}: a sweep over {swept} needs a generator")
        if any(not 0.0 <= a <= 1.0 for a in s.sweep.alpha):
            errs.append(f"{where}: sweep.alpha values must be in [0, 1]")
        if any(n < 1 or (n_max and n > n_max) for n in s.sweep.n):
            errs.append(f"{where}: sweep.n values must be in 1..{n_max or 'n_per_language'}")
        if s.sweep.n and s.generator in cfg.generators and cfg.generators[s.generator].kind == "provided":
            errs.append(f"{where}: sweep.n needs a generating generator (provided queries have no slots)")
        if any(a not in ("sum", "mean") for a in s.sweep.aggregation):
            errs.append(f"{where}: sweep.aggregation values must be sum or mean")
    if cfg.eval.baseline not in names:
        errs.append(f"eval.baseline={cfg.eval.baseline!r} is not a system name ({names})")
    pnames = [p.name for p in cfg.perturbations]
    if len(set(pnames)) != len(pnames) or "clean" in pnames:
        errs.append(f"perturbation names must be unique and not 'clean', got {pnames}")
    if cfg.perturbations:
        from ..evaluation.perturb import validate_spec

        for i, p in enumerate(cfg.perturbations):
            errs += validate_spec(p, where=f"perturbations[{i}]")
    return errs
