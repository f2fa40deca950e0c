"""Which pair each worker trains on at each step, and the learning rate at a step: pure functions.

Every epoch is a seeded permutation of the pairs (in canonical order), cut
into global batches; the last incomplete batch of an epoch is dropped so every
step has exactly ``global_batch`` pairs (the average over workers then equals
one worker's gradient).  Worker ``r`` of ``W`` takes columns
``[r * b, (r + 1) * b)`` of each step (``b = global_batch / W``): the same
rows in the same steps for any ``W``, which is what makes one worker and two
comparable, and a resumed run's batches the uninterrupted run's.
"""

from __future__ import annotations

import numpy as np


def steps_per_epoch(num_pairs: int, global_batch: int) -> int:
    return num_pairs // global_batch


def step_rows(num_pairs: int, global_batch: int, epochs: int, seed: int) -> np.ndarray:
    """int64 ``[steps, global_batch]``: the pair (row of the canonical table) at each slot of each step."""
    per = steps_per_epoch(num_pairs, global_batch)
    out = np.zeros((per * epochs, global_batch), np.int64)
    for e in range(epochs):
        # Seeded per (seed, epoch): an epoch's order does not depend on how many came before it.
        perm = np.random.default_rng([seed, e]).permutation(num_pairs)
        out[e * per : (e + 1) * per] = perm[: per * global_batch].reshape(per, global_batch)
    return out


def worker_rows(rows: np.ndarray, rank: int, num_workers: int) -> np.ndarray:
    """Worker ``rank``'s share of every step: ``[steps, global_batch / num_workers]``."""
    b = rows.shape[1] // num_workers
    return rows[:, rank * b : (rank + 1) * b]


def lr_at(step: int, total: int, base: float, warmup: int) -> float:
    """The learning rate of optimiser step ``step`` (0-based): linear warm-up, then linear decay to 0 at ``total``.

    A function of the step alone, so a resumed run needs no scheduler state.
    """
    if warmup > 0 and step < warmup:
        return base * (step + 1) / warmup
    rest = max(1, total - warmup)
    return base * max(0.0, (total - step) / rest)


__all__ = ["lr_at", "step_rows", "steps_per_epoch", "worker_rows"]
