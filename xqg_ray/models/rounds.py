"""Which draws a generator's sampling rounds make, and which they read from an earlier round's prefill.

Round 0 draws ``n_per_language`` questions per (passage, language); each later round, up to
``filters.max_attempts``, draws what the kept ones still lack.  Every draw is seeded per (config
seed, generator name, passage id, language, round, draw), so its tokens do not depend on the
batch, the round that sampled it, or a rerun.

``filters.draw_ahead = a``: a prompt sampled in round ``r`` also samples the draws rounds
``r+1 .. r+a`` would make, as many as round ``r`` needs (a later round needs no more), as extra
rows of the same prefill.  A later round reads them instead of prefilling the passage again; the
draws no round asks for are thrown away and counted (:attr:`RoundPlan.made`,
:attr:`RoundPlan.used`).  Why: prefilling the passage is most of a draw's cost (Gemma 270M on a
CPU: 61% of the stage, docs/benchmarks.md), and on the demo more than half of the slots need a
second round.  The cost: decode rows for slots that pass early.
"""

from __future__ import annotations

from typing import Dict, List, Optional, Sequence, Tuple

from ..ids import seed_for

Key = Tuple[int, str]  # (row index, language)


def round_tag(r: int) -> Tuple[object, ...]:
    """The seed tag of round ``r``'s draws: round 0 and the retries keep the seeds they had before filters."""
    return ("sample",) if r == 0 else ("retry", r - 1)


class RoundPlan:
    """The seeds each round samples and the draws sampled ahead for later rounds (one generate call)."""

    def __init__(self, seed: int, name: str, rounds: int, ahead: int) -> None:
        self.seed, self.name, self.rounds, self.ahead = seed, name, max(1, rounds), max(0, ahead)
        self.covers: Dict[Key, int] = {}  # rounds the prompt's last sampling covered
        self.stored: Dict[Tuple[Key, int], List[str]] = {}  # (key, round) -> texts sampled ahead
        self.made = 0  # draws sampled ahead
        self.used = 0  # of them, read by their round

    def seeds(self, key: Key, pid: int, r: int, need: int) -> List[int]:
        """Seeds of ``need`` draws of round ``r`` and of each round sampled ahead with it, round-major."""
        covered = list(range(r, min(self.rounds, r + 1 + self.ahead)))
        self.covers[key] = len(covered)
        return [seed_for(self.seed, self.name, pid, key[1], *round_tag(q), j) for q in covered for j in range(need)]

    def split(self, key: Key, r: int, texts: Sequence[str]) -> List[str]:
        """Round ``r``'s texts of a prompt sampled with :meth:`seeds`; the later rounds' are stored."""
        per = len(texts) // self.covers[key]
        for q in range(1, self.covers[key]):
            self.stored[(key, r + q)] = list(texts[q * per : (q + 1) * per])
            self.made += per
        return list(texts[:per])

    def take(self, key: Key, r: int, need: int) -> Optional[List[str]]:
        """Round ``r``'s ``need`` texts sampled ahead (the first ``need`` of them), or None: sample them now."""
        texts = self.stored.pop((key, r), None)
        if texts is None:
            return None
        self.used += need
        return texts[:need]

    @property
    def unused(self) -> int:
        """Draws sampled ahead that no round read (their slots were filled earlier)."""
        return self.made - self.used
