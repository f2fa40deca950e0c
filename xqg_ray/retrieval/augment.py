"""xQG passage-vector augmentation (Zhuang, Shou, Zuccon, SIGIR 2023).

    e' = (1 - alpha) * E(p) + alpha * sum_{l,i} E(q_{l,i})        (aggregation="sum")
    e' = (1 - alpha) * E(p) + alpha * mean_{l,i} E(q_{l,i})       (aggregation="mean")

The reference uses the plain sum with no renormalisation.  A passage with no
queries keeps ``(1 - alpha) * E(p)`` under ``sum`` (the empty sum is zero, as
the formula says) but keeps ``E(p)`` itself under ``mean``: the mean of no
queries is undefined, and scaling such passages by ``1 - alpha`` would push
exactly the passages without queries down every ranking.  Because the sum
grows with the number of queries, it is only fair when every passage has the
same count; :func:`check_counts` says when it does not.  Storing E(p), the sum
and the count lets any alpha (or a sweep) be applied without re-encoding.
"""

from __future__ import annotations

from typing import Dict, List, Sequence, Tuple

import numpy as np

# Part of the index fingerprint: bump when the formula's semantics change.
AUGMENT_VERSION = 2

def augment(
    p_vecs: np.ndarray,
    q_sums: np.ndarray,
    q_counts: np.ndarray,
    alpha: float,
    aggregation: str = "sum",
) -> np.ndarray:
    """Augmented passage vectors, float32, shape of ``p_vecs``.

    ``q_sums[i]`` is the sum of the encoded generated queries of passage i and
    ``q_counts[i]`` their number.  With ``mean``, a passage without queries
    is left as ``E(p)`` (see the module docstring).
    """
    p = np.asarray(p_vecs, dtype=np.float64)
    s = np.asarray(q_sums, dtype=np.float64)
    c = np.asarray(q_counts, dtype=np.float64).reshape(-1, 1)
    if p.shape != s.shape or c.shape[0] != p.shape[0]:
        raise ValueError(f"shape mismatch: E(p) {p.shape}, sum E(q) {s.shape}, counts {c.shape}")
    if aggregation == "sum":
        q = s
    elif aggregation == "mean":
        q = np.divide(s, c, out=np.zeros_like(s), where=c > 0)
    else:
        raise ValueError(f"aggregation={aggregation!r}: use sum or mean")
    # float64 accumulation, float32 result: the same bits whatever the batch split.
    out = (1.0 - alpha) * p + alpha * q
    if aggregation == "mean":
        out = np.where(c > 0, out, p)
    return out.astype(np.float32)


def check_counts(q_counts: np.ndarray) -> Dict[str, int]:
    """Summary of queries per passage: min, max, passages with zero queries."""
    c = np.asarray(q_counts)
    if c.size == 0:
        return {"min": 0, "max": 0, "zero": 0, "passages": 0}
    return {"min": int(c.min()), "max": int(c.max()), "zero": int((c == 0).sum()), "passages": int(c.size)}



def slot_positions(langs: Sequence[Sequence[str]]) -> Tuple[np.ndarray, np.ndarray]:
    """(group, slot) of every query in the flattened groups: a query's slot is its
    position among the queries of its language in that group (0-based)."""
    group: List[int] = []
    slot: List[int] = []
    for g, ls in enumerate(langs):
        seen: Dict[str, int] = {}
        for lang in ls:
            group.append(g)
            slot.append(seen.get(lang, 0))
            seen[lang] = seen.get(lang, 0) + 1
    return np.asarray(group, np.int64), np.asarray(slot, np.int64)


def slot_sums(vecs: np.ndarray, group: np.ndarray, slot: np.ndarray, n_groups: int) -> Tuple[np.ndarray, np.ndarray]:
    """Per (group, slot) sums of ``vecs`` in float64 and counts: shapes [G, S, H] and [G, S]."""
    n_slots = int(slot.max()) + 1 if len(slot) else 0
    sums = np.zeros((n_groups, n_slots, vecs.shape[1] if vecs.ndim == 2 else 0), np.float64)
    counts = np.zeros((n_groups, n_slots), np.int64)
    if len(slot):
        np.add.at(sums, (group, slot), vecs.astype(np.float64))
        np.add.at(counts, (group, slot), 1)
    return sums, counts


def first_slots(slots: np.ndarray, counts: np.ndarray, n: int) -> Tuple[np.ndarray, np.ndarray]:
    """The sum and count over slots ``0..n-1`` (``n`` queries per language; 0 = all)."""
    k = slots.shape[1] if n <= 0 else min(n, slots.shape[1])
    return slots[:, :k].sum(axis=1), counts[:, :k].sum(axis=1)
