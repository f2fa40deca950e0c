"""Model stages as callable classes for Ray Data actor pools.

Each class loads its model once in ``__init__`` and maps a pyarrow batch to
a pyarrow batch.  The math they call (pooling, sums) lives in pure functions.
"""

from __future__ import annotations

import pyarrow as pa

from .arrow_utils import vectors_to_arrow
from .config import EncoderConfig, GeneratorConfig
from .models.encoder import Encoder, encode_sum, format_passage

QUERY_LIST_TYPE = pa.list_(pa.struct([("lang", pa.string()), ("text", pa.string())]))


def _set_threads(n: int) -> None:
    # Torch and FAISS default to every core of the node; an actor owns only its share.
    if n > 0:
        import faiss
        import torch

        torch.set_num_threads(n)
        faiss.omp_set_num_threads(n)


class EncodePassages:
    """(id, title, text) -> (id, vector)."""

    def __init__(self, cfg: EncoderConfig, threads: int = 0):
        _set_threads(threads)
        self.cfg = cfg
        self.encoder = Encoder(cfg, threads)

    def __call__(self, batch: pa.Table) -> pa.Table:
        texts = [format_passage(self.cfg.passage_template, t, x) for t, x in zip(batch["title"].to_pylist(), batch["text"].to_pylist())]
        vecs = self.encoder.encode(texts, "passage")
        return pa.table({"id": batch["id"], "vector": vectors_to_arrow(vecs)})


class EncodeQueries:
    """(qid, lang, text) -> (qid, lang, vector): the evaluation questions."""

    def __init__(self, cfg: EncoderConfig, threads: int = 0):
        _set_threads(threads)
        self.encoder = Encoder(cfg, threads)

    def __call__(self, batch: pa.Table) -> pa.Table:
        vecs = self.encoder.encode(batch["text"].to_pylist(), "query")
        return pa.table({"qid": batch["qid"], "lang": batch["lang"], "vector": vectors_to_arrow(vecs)})


class EncodeQuerySums:
    """(id, queries) -> (id, q_sum, q_count): sum E(q) over a passage's queries.

    One row holds all queries of its passage, so the sum never spans batches.
    """

    def __init__(self, cfg: EncoderConfig, threads: int = 0):
        _set_threads(threads)
        self.encoder = Encoder(cfg, threads)

    def __call__(self, batch: pa.Table) -> pa.Table:
        groups = [[q["text"] for q in qs] for qs in batch["queries"].to_pylist()]
        sums, counts = encode_sum(self.encoder, groups)
        return pa.table({"id": batch["id"], "q_sum": vectors_to_arrow(sums), "q_count": pa.array(counts, pa.int32())})


class GenerateQueries:
    """(id, docid, title, text) -> (id, docid, queries, failed)."""

    def __init__(self, name: str, cfg: GeneratorConfig, threads: int = 0):
        _set_threads(threads)
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
