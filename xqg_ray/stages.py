"""Model stages as callable classes for Ray Data actor pools.

Each class loads its model once in ``__init__`` and maps a pyarrow batch to
a pyarrow batch.  The math they call (pooling, sums) lives in pure functions.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from .arrow_utils import vectors_to_arrow
from .config import EncoderConfig, GeneratorConfig
from .models.encoder import Encoder, encode_sum

QUERY_LIST_TYPE = pa.list_(pa.struct([("lang", pa.string()), ("text", pa.string())]))


ENCODE_INPUT_SCHEMA = pa.schema(
    [("kind", pa.string()), ("id", pa.int64()), ("qid", pa.string()), ("texts", pa.list_(pa.string()))]
)


def encode_rows(kind: str, texts: list, ids=None, qids=None) -> pa.Table:
    """Input rows for :class:`EncodeTexts`: passages and generated queries carry
    an int64 id, test questions a qid (and id -1)."""
    n = len(texts)
    return pa.table(
        {
            "kind": [kind] * n,
            "id": ids if ids is not None else pa.array([-1] * n, pa.int64()),
            "qid": qids if qids is not None else pa.nulls(n, pa.string()),
            "texts": texts,
        },
        schema=ENCODE_INPUT_SCHEMA,
    )


class EncodeTexts:
    """(kind, id, qid, texts) -> (kind, id, qid, vector, count): every encoder job in one pool.

    ``kind`` is "passage" (one formatted passage text), "query" (one test
    question) or "gen:NAME" (all generated queries of one passage).  The
    vector of a row is the sum of its texts' encodings -- for one text, its
    encoding -- so one row per passage holds that passage's sum E(q) and the
    sum never spans batches.  One model load serves all three.
    """

    def __init__(self, cfg: EncoderConfig, threads: int = 0):
        self.encoder = Encoder(cfg, threads)

    def __call__(self, batch: pa.Table) -> pa.Table:
        kinds = batch["kind"].to_pylist()
        texts = batch["texts"].to_pylist()
        vecs = np.zeros((len(kinds), self.encoder.dim), dtype=np.float32)
        counts = np.zeros(len(kinds), dtype=np.int32)
        for mode, rows in (("passage", [i for i, k in enumerate(kinds) if k == "passage"]), ("query", [i for i, k in enumerate(kinds) if k != "passage"])):
            if rows:
                sums, c = encode_sum(self.encoder, [texts[i] for i in rows], mode)
                vecs[rows], counts[rows] = sums, c
        return pa.table(
            {"kind": batch["kind"], "id": batch["id"], "qid": batch["qid"], "vector": vectors_to_arrow(vecs), "count": pa.array(counts, pa.int32())}
        )


class GenerateQueries:
    """(id, docid, title, text) -> (id, docid, queries, failed)."""

    def __init__(self, name: str, cfg: GeneratorConfig, threads: int = 0):
        from .models.generator import QueryGenerator

        self.gen = QueryGenerator(name, cfg, threads)

    def __call__(self, batch: pa.Table) -> pa.Table:
        rows, failed = [], []
        for pid, title, text in zip(batch["id"].to_pylist(), batch["title"].to_pylist(), batch["text"].to_pylist()):
            qs, f = self.gen.generate(pid, title, text)
            rows.append(qs)
            failed.append(f)
        return pa.table(
            {
                "id": batch["id"],
                "docid": batch["docid"],
                "queries": pa.array(rows, type=QUERY_LIST_TYPE),
                "failed": pa.array(failed, pa.int32()),
            }
        )
