"""The stage protocol's planning step, written once: what of a stage is already done, and what is left.

Every stage follows the same protocol over its :class:`~xqg_ray.store.ledger.Ledger`:
*key* (the stage's fingerprint and a key per unit), *plan* (this module),
*run* the units left, *publish* the manifest.  :func:`plan_stage` answers, from
the ledger alone:

- ``published``: the current manifest, when it was made from the same inputs
  (fingerprint) and every file it names is still there -- the stage is done;
- ``prior``: the previous version's unit entries by label, when its settings
  match, for per-passage reuse (entries whose files are gone are left out, so
  a unit never reads a missing prior file);
- ``resumed``: the commit records of units an earlier attempt finished (each
  marked ``mode = "resumed"``), whose files are all there;
- ``todo``: the labels still to compute, in the order they were asked for.

A committed unit or a published manifest whose files were deleted (or
truncated) is recomputed, not trusted: "delete it and rerun" always leads out.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Mapping, Optional

from ..store.ledger import RESUMED, Ledger

Manifest = Dict[str, Any]


@dataclass
class Plan:
    """What one stage still has to do for one fingerprint."""

    published: Optional[Manifest] = None
    current: Optional[Manifest] = None
    prior: Dict[str, Dict[str, Any]] = field(default_factory=dict)
    resumed: Dict[str, Dict[str, Any]] = field(default_factory=dict)
    todo: List[str] = field(default_factory=list)


def plan_stage(
    ledger: Ledger,
    fp: str,
    units: Mapping[str, str],
    resume: bool,
    prior_entries: Optional[Callable[[Manifest], Dict[str, Dict[str, Any]]]] = None,
    usable: Optional[Callable[[Manifest], bool]] = None,
) -> Plan:
    """The :class:`Plan` of a stage with fingerprint ``fp`` and units ``label -> key``.

    ``prior_entries(manifest)``: the previous version's unit entries by label,
    or None when it cannot be reused (other settings).  ``usable(manifest)``:
    an extra check of a published manifest beyond its own files (the benchmark
    checks its corpus snapshot).  Without ``resume`` nothing committed is
    taken as done, but a prior version is still reused per passage.
    """
    if resume:
        m = ledger.published(fp)
        if m is not None and (usable is None or usable(m)):
            return Plan(published=m, current=m)
    current = ledger.current()
    sizes = ledger.file_sizes()  # one listing for every record checked below
    prior: Dict[str, Dict[str, Any]] = {}
    if current is not None and prior_entries is not None:
        prior = {label: e for label, e in (prior_entries(current) or {}).items() if ledger.intact(e, sizes)}
    plan = Plan(current=current, prior=prior)
    for label, key in units.items():
        rec = ledger.committed(label, key) if resume else None
        if rec is not None and ledger.intact(rec, sizes):
            plan.resumed[label] = {**rec, "mode": RESUMED}
        else:
            plan.todo.append(label)
    return plan


__all__ = ["Plan", "plan_stage"]
