"""Training pairs (question, source passage) and the leak guard that keeps evaluated questions out.

Two sources, both joined onto the corpus partitions (``id``, ``content_hash``,
``title``, ``text``):

* a generator's committed output (``generated/NAME/data/p-*.parquet``,
  ``GENERATED_SCHEMA``): every generated question of a passage is one pair;
* the benchmark's held-out human questions (its ``provided`` table: ``docid``,
  ``id``, ``lang``, ``text``, ``qid``): the upper bound.

The leak guard: a pair whose question is an evaluated question -- the same
qid, the same base id in another language (XQuAD's translations share the id
before ``-lang``), or the same text up to case, spacing and final punctuation,
in any language -- is set aside with its reason and counted, never trained
on.  The benchmark already drops such held-out rows; the guard is checked
again here because training on a test question would make the comparison
meaningless, and a generator can write an evaluated question word for word.

The sample (a training's ``max_pairs``): a seeded bottom-k.  Each guarded pair
hashes (training seed, passage id, language, question) to 63 bits and the
sample is the ``max_pairs`` pairs with the smallest hashes: the same pairs
whatever order the partitions are read in, kept while reading them one at a
time (:func:`keep_smallest`), so the driver holds the sample and one
partition's pairs, never all of them.

Pure functions over Arrow tables; no Ray, no torch.
"""

from __future__ import annotations

import hashlib
import unicodedata
from typing import Any, Dict, Iterable, Optional, Tuple

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ..ids import seed_for

# One training pair: a question and the passage it was written for.  ``qid`` is
# the human question's id (null for generated ones); ``source`` names where it came from.
PAIRS_SCHEMA = pa.schema(
    [
        ("id", pa.int64()),
        ("content_hash", pa.string()),
        ("title", pa.string()),
        ("text", pa.string()),
        ("lang", pa.string()),
        ("query", pa.string()),
        ("qid", pa.string()),
        ("source", pa.string()),
    ]
)

# A pair set aside, and why.
PAIRS_SET_ASIDE_SCHEMA = pa.schema(
    [("id", pa.int64()), ("lang", pa.string()), ("query", pa.string()), ("qid", pa.string()), ("source", pa.string()), ("reason", pa.string())]
)

EVALUATED_QID = "evaluated question"
TRANSLATION = "translation of an evaluated question"
EVALUATED_TEXT = "same text as an evaluated question"
EMPTY = "empty question"
NOT_IN_CORPUS = "passage not in corpus"
STALE = "passage changed since generation"
DUPLICATE = "duplicate pair"

# Final punctuation that does not make a different question ("Who won?" == "who won").
_FINAL_PUNCT = "?？؟!！.。 \t"


def normalize_question(text: str) -> str:
    """The form questions are compared in: NFKC, case-folded, spaces collapsed, final ?/!/. dropped."""
    t = " ".join(unicodedata.normalize("NFKC", text or "").casefold().split())
    return t.rstrip(_FINAL_PUNCT)


def base_qid(qid: str) -> str:
    """``56be...ec-de`` -> ``56be...ec``: XQuAD's translations of one question share it."""
    return qid.rsplit("-", 1)[0] if "-" in qid else qid


def _pairs_table(cols: Dict[str, Any]) -> pa.Table:
    return pa.table({f.name: pa.array(cols[f.name], f.type) for f in PAIRS_SCHEMA}, schema=PAIRS_SCHEMA)


def _aside(pairs: pa.Table, reason: str) -> pa.Table:
    return pa.table(
        {"id": pairs["id"], "lang": pairs["lang"], "query": pairs["query"], "qid": pairs["qid"], "source": pairs["source"],
         "reason": pa.array([reason] * pairs.num_rows, pa.string())},
        schema=PAIRS_SET_ASIDE_SCHEMA,
    )


def _join_corpus(pairs: pa.Table, corpus: pa.Table, check_hash: bool) -> Tuple[pa.Table, pa.Table]:
    """Pairs with the passage's title and text from ``corpus``; the rest set aside (unknown or changed passage)."""
    ids = corpus["id"].to_numpy()
    pos = pc.index_in(pairs["id"], value_set=corpus["id"])
    known = pc.is_valid(pos)
    out = [_aside(pairs.filter(pc.invert(known)), NOT_IN_CORPUS)] if pairs.num_rows else []
    pairs, pos = pairs.filter(known), pos.filter(known).to_numpy().astype(np.int64)
    assert len(ids) == 0 or (ids[pos] == pairs["id"].to_numpy()).all()
    cols = {n: pairs[n] for n in ("id", "lang", "query", "qid", "source")}
    cols["content_hash"] = corpus["content_hash"].take(pa.array(pos))
    cols["title"] = corpus["title"].take(pa.array(pos))
    cols["text"] = corpus["text"].take(pa.array(pos))
    joined = _pairs_table({k: v.combine_chunks() if isinstance(v, pa.ChunkedArray) else v for k, v in cols.items()})
    if check_hash and "content_hash" in pairs.column_names:
        # A question written for an older version of the passage may not fit the new text.
        same = pc.equal(joined["content_hash"], pairs["content_hash"])
        out.append(_aside(joined.filter(pc.invert(same)), STALE))
        joined = joined.filter(same)
    return joined, _concat_aside(out)


def _concat_aside(tables: Iterable[pa.Table]) -> pa.Table:
    ts = [t for t in tables if t.num_rows]
    return pa.concat_tables(ts) if ts else PAIRS_SET_ASIDE_SCHEMA.empty_table()


def _drop_empty(pairs: pa.Table) -> Tuple[pa.Table, pa.Table]:
    empty = pc.fill_null(pc.equal(pc.utf8_trim_whitespace(pairs["query"]), ""), True)
    return pairs.filter(pc.invert(empty)), _aside(pairs.filter(empty), EMPTY)


def generated_pairs(generated: pa.Table, corpus: pa.Table, source: str) -> Tuple[pa.Table, pa.Table]:
    """(pairs, set aside) from a generator's output rows (``GENERATED_SCHEMA``) and the corpus they were generated from."""
    q = generated["queries"].combine_chunks() if generated.num_rows else pa.array([], generated.schema.field("queries").type)
    parent = pc.list_parent_indices(q).to_numpy().astype(np.int64) if len(q) else np.zeros(0, np.int64)
    flat = pc.list_flatten(q)
    raw = pa.table(
        {
            "id": generated["id"].take(pa.array(parent)),
            "content_hash": generated["content_hash"].take(pa.array(parent)),
            "lang": flat.field("lang") if len(flat) else pa.array([], pa.string()),
            "query": flat.field("text") if len(flat) else pa.array([], pa.string()),
            "qid": pa.nulls(len(parent), pa.string()),
            "source": pa.array([source] * len(parent), pa.string()),
        }
    )
    raw, empty = _drop_empty(raw)
    pairs, aside = _join_corpus(raw, corpus, check_hash=True)
    return pairs, _concat_aside([empty, aside])


def provided_pairs(provided: pa.Table, corpus: pa.Table, source: str = "provided") -> Tuple[pa.Table, pa.Table]:
    """(pairs, set aside) from the held-out human questions (``docid``, ``id``, ``lang``, ``text``, ``qid``)."""
    raw = pa.table(
        {
            "id": provided["id"].cast(pa.int64()),
            "lang": provided["lang"].cast(pa.string()),
            "query": provided["text"].cast(pa.string()),
            "qid": provided["qid"].cast(pa.string()) if "qid" in provided.column_names else pa.nulls(provided.num_rows, pa.string()),
            "source": pa.array([source] * provided.num_rows, pa.string()),
        }
    )
    raw, empty = _drop_empty(raw)
    pairs, aside = _join_corpus(raw, corpus, check_hash=False)
    return pairs, _concat_aside([empty, aside])


def leak_reasons(pairs: pa.Table, evaluated: Dict[str, Any]) -> list:
    """Per pair: why it leaks an evaluated question ('' if it does not).

    ``evaluated`` is the benchmark manifest's ``evaluated`` entry:
    ``{"qids": [...], "texts": [[lang, text], ...]}``.
    """
    qids = set(evaluated.get("qids", []))
    bases = {base_qid(q) for q in qids}
    texts = {normalize_question(t) for _, t in evaluated.get("texts", [])}
    out = []
    for qid, query in zip(pairs["qid"].to_pylist(), pairs["query"].to_pylist()):
        if qid is not None and qid in qids:
            out.append(EVALUATED_QID)
        elif qid is not None and base_qid(qid) in bases:
            out.append(TRANSLATION)
        elif normalize_question(query) in texts:
            out.append(EVALUATED_TEXT)
        else:
            out.append("")
    return out


def guard_pairs(pairs: pa.Table, evaluated: Dict[str, Any]) -> Tuple[pa.Table, pa.Table]:
    """(pairs with no evaluated question in them and no duplicates, set aside with reasons)."""
    reasons = np.array(leak_reasons(pairs, evaluated), dtype=object)
    ok = reasons == ""
    aside = [_aside(pairs.filter(pa.array(reasons == r)), r) for r in (EVALUATED_QID, TRANSLATION, EVALUATED_TEXT)]
    kept = canonical_order(pairs.filter(pa.array(ok)))
    # The same question for the same passage twice adds nothing but weight.
    key = [(i, lang, normalize_question(q)) for i, lang, q in zip(kept["id"].to_pylist(), kept["lang"].to_pylist(), kept["query"].to_pylist())]
    first = np.ones(len(key), bool)
    seen = set()
    for j, k in enumerate(key):
        first[j] = k not in seen
        seen.add(k)
    aside.append(_aside(kept.filter(pa.array(~first)), DUPLICATE))
    return kept.filter(pa.array(first)), _concat_aside(aside)


def set_aside_counts(aside: pa.Table) -> Dict[str, int]:
    """Rows set aside per reason, sorted by reason."""
    reasons = aside["reason"].to_pylist()
    return {r: reasons.count(r) for r in sorted(set(reasons))}


def canonical_order(pairs: pa.Table) -> pa.Table:
    """Pairs sorted by (id, lang, query, source): the order training permutes, whatever order they came in."""
    return pairs.sort_by([("id", "ascending"), ("lang", "ascending"), ("query", "ascending"), ("source", "ascending")])


# The column a sample in progress carries: each pair's sample hash, so it is computed once.
SAMPLE_HASH = "sample_hash"


def sample_hashes(pairs: pa.Table, seed: int) -> np.ndarray:
    """Each pair's 63-bit sample hash (int64): ``seed_for(seed, id, lang, query)``."""
    return np.fromiter((seed_for(seed, i, lang, q) for i, lang, q in zip(pairs["id"].to_pylist(), pairs["lang"].to_pylist(),
                                                                          pairs["query"].to_pylist())),
                       dtype=np.int64, count=pairs.num_rows)


def _hashed(pairs: pa.Table, seed: int) -> pa.Table:
    if SAMPLE_HASH in pairs.column_names:
        return pairs
    return pairs.cast(PAIRS_SCHEMA).append_column(SAMPLE_HASH, pa.array(sample_hashes(pairs, seed), pa.int64()))


def keep_smallest(sample: Optional[pa.Table], part: pa.Table, k: int, seed: int) -> pa.Table:
    """The ``k`` pairs of ``sample`` and ``part`` with the smallest sample hashes (ties by id, lang, query, source).

    ``sample``: None or an earlier call's result; ``part``: one partition's guarded
    pairs.  The result carries :data:`SAMPLE_HASH` (each pair hashed once; drop it
    with :func:`sampled_pairs`).  ``k`` = 0 keeps every pair, unhashed.
    """
    tables = [part] if sample is None else [sample, part]
    if k == 0:
        return pa.concat_tables([t.cast(PAIRS_SCHEMA) for t in tables])
    both = pa.concat_tables([_hashed(t, seed) for t in tables])
    if both.num_rows <= k:
        return both
    order = [(SAMPLE_HASH, "ascending"), ("id", "ascending"), ("lang", "ascending"), ("query", "ascending"), ("source", "ascending")]
    return both.sort_by(order).slice(0, k)


def sampled_pairs(sample: Optional[pa.Table]) -> pa.Table:
    """The pairs of a :func:`keep_smallest` result, in canonical order, without the sample hash (None: no pairs)."""
    if sample is None:
        return PAIRS_SCHEMA.empty_table()
    return canonical_order(sample.select(PAIRS_SCHEMA.names))


def training_texts(pairs: pa.Table, query_prefix: str, passage_prefix: str, passage_template: str) -> pa.Table:
    """``query``, ``passage`` (as the encoder sees them: prefixes, passage template) and ``id`` of each pair, in order."""
    from ..models.encoder import format_passage

    passages = [passage_prefix + format_passage(passage_template, t, x) for t, x in zip(pairs["title"].to_pylist(), pairs["text"].to_pylist())]
    cols = {"query": pa.array([query_prefix + q for q in pairs["query"].to_pylist()], pa.string()),
            "passage": pa.array(passages, pa.string()), "id": pairs["id"]}
    if "negatives" in pairs.column_names:  # hard negatives: passage texts, formatted by whoever mined them
        cols["negatives"] = pairs["negatives"]
    return pa.table(cols)


def pairs_hash(pairs: pa.Table) -> str:
    """sha256 of what training sees: each pair's passage version, language and question, in canonical order."""
    t = canonical_order(pairs)
    h = hashlib.sha256()
    for i, ch, lang, q in zip(t["id"].to_pylist(), t["content_hash"].to_pylist(), t["lang"].to_pylist(), t["query"].to_pylist()):
        h.update(f"{i}\x00{ch}\x00{lang}\x00{q}\x01".encode("utf-8"))
    if "negatives" in t.column_names:  # hard negatives change what is trained on
        for negs in t["negatives"].to_pylist():
            h.update(("\x00".join(negs or []) + "\x02").encode("utf-8"))
    return h.hexdigest()


__all__ = [
    "DUPLICATE",
    "EMPTY",
    "EVALUATED_QID",
    "EVALUATED_TEXT",
    "NOT_IN_CORPUS",
    "PAIRS_SCHEMA",
    "PAIRS_SET_ASIDE_SCHEMA",
    "SAMPLE_HASH",
    "STALE",
    "TRANSLATION",
    "base_qid",
    "canonical_order",
    "generated_pairs",
    "guard_pairs",
    "keep_smallest",
    "leak_reasons",
    "normalize_question",
    "pairs_hash",
    "provided_pairs",
    "sample_hashes",
    "sampled_pairs",
    "set_aside_counts",
    "training_texts",
]
