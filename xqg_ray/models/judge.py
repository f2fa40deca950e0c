"""The round-trip judge: the run's encoder ranking a question's own passage among its partition's passages.

A generator whose ``filters.enabled`` names ``round_trip`` loads this beside
itself (Promptagator's consistency filter: keep a question that retrieves its
own passage).  The reference set is the unit's partition as the snapshot holds
it, not the whole index: at XOR-TyDi's 18M passages in 1,024 partitions that is
~17.6k passages per unit, encoded once per unit (1/36 of the encode stage's
rows at 5 questions x 7 languages) and held as one ``17.6k x 768`` float32
matrix (54 MB); each draw costs one query encoding and a row of inner products.
Ranking against the whole index would mean searching every draw over all shards
(630M+ searches) before the index exists.

The judgement is made when a passage's questions are drawn; an update reuses an
unchanged passage's draws and their verdicts (see docs/configuration.md).  The
generate actor commits :attr:`RoundTripJudge.vecs` with its unit, and the encode
stage takes them for its passage rows (``stages.encode_actor.JudgedPassages``):
the reference set costs no encoding of its own.
"""

from __future__ import annotations

from typing import Dict, List, Sequence

import numpy as np

from ..config import EncoderConfig
from ..evaluation.quality import round_trip_ranks


class RoundTripJudge:
    """Loads the encoder once; :meth:`use` sets a unit's passages, :meth:`ranks` ranks draws against them."""

    def __init__(self, cfg: EncoderConfig, metric: str, threads: int = 0):
        from .factory import make_encoder

        self.cfg, self.metric = cfg, metric
        self.encoder = make_encoder(cfg, threads)
        self.device = str(getattr(self.encoder, "device", "cpu"))  # where :attr:`vecs` were computed (mUSE: cpu)
        self.ids = np.zeros(0, np.int64)
        self.vecs = np.zeros((0, 0), np.float32)
        self.row_of: Dict[int, int] = {}

    def use(self, ids: Sequence[int], titles: Sequence[str], texts: Sequence[str]) -> None:
        """Encode one partition's passages (its reference set) as the encode stage does: the passage template."""
        from .encoder import format_passage

        template = self.cfg.passage_template
        self.ids = np.asarray(ids, np.int64)
        self.vecs = self.encoder.encode([format_passage(template, a, b) for a, b in zip(titles, texts)], "passage")
        self.row_of = {int(pid): k for k, pid in enumerate(self.ids.tolist())}

    def ranks(self, passage_ids: Sequence[int], questions: Sequence[str]) -> List[int]:
        """Rank (1 = first) of each question's own passage (``passage_ids[i]``, one of :meth:`use`'s) among the
        unit's passages, exhaustively, ties by passage id."""
        if not len(questions):
            return []
        q = self.encoder.encode(list(questions), "query")
        rows = [self.row_of[int(p)] for p in passage_ids]
        return [int(r) for r in round_trip_ranks(q, rows, self.vecs, self.metric, passage_ids=self.ids)]
