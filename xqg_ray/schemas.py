"""Every Arrow schema the stages write, in one place (the corpus schemas live with the readers)."""

from __future__ import annotations

import pyarrow as pa

# One generated (or provided) query of a passage.
QUERY_LIST_TYPE = pa.list_(pa.struct([("lang", pa.string()), ("text", pa.string())]))

# generated/NAME/data/p-*.parquet: the queries of every passage of one partition, sorted by id.
GENERATED_SCHEMA = pa.schema(
    [("id", pa.int64()), ("content_hash", pa.string()), ("queries", QUERY_LIST_TYPE), ("failed", pa.int32())]
)

# generated/NAME/attempts/p-*.parquet: every question a generator drew for a passage of one partition,
# sorted by (id, language in the generator's order, round, draw), with the quality flags the filter read
# (wrong_language null: the identifier cannot tell; exemplar "exact"/"near"/null; duplicate null for an
# empty draw), its rejection reason (null = kept) and the two selections: ``unfiltered`` (the first
# draws with any text: the data file's ``queries``) and ``kept`` (the filtered questions).
ATTEMPTS_SCHEMA = pa.schema(
    [("id", pa.int64()), ("content_hash", pa.string()), ("lang", pa.string()), ("round", pa.int32()), ("draw", pa.int32()),
     ("text", pa.string()), ("empty", pa.bool_()), ("wrong_language", pa.bool_()), ("exemplar", pa.string()),
     ("degenerate", pa.bool_()), ("duplicate", pa.bool_()), ("reason", pa.string()), ("kept", pa.bool_()),
     ("unfiltered", pa.bool_()), ("round_trip", pa.int32())]
)
# ATTEMPTS_SCHEMA's layout, in the key of a generator whose round trip fills ``round_trip`` (its own
# passage's rank, null where not judged): draws stored before it lack the ranks a looser threshold
# is replayed from (evaluation.question_filter.replay), so they are not reused.
ATTEMPTS_VERSION = 2

# The two selections of a passage's draws: ATTEMPTS_SCHEMA's boolean columns of those names ...
UNFILTERED, KEPT = "unfiltered", "kept"
# ... and one derived from them: the kept draws that no filter rejected (``reason`` null), i.e. the kept
# questions without those ``filters.fill_empty`` added back (empty slots stay empty).
PASSED = "passed"

# generated/NAME/data/quarantine-*.parquet: provided queries set aside, with the reason.
SET_ASIDE_SCHEMA = pa.schema([("line", pa.int64()), ("docid", pa.string()), ("reason", pa.string()), ("text", pa.string())])

# Kinds of embedding rows: E(p) of a passage, or the sum of E(q) over a generator's queries of it.
PASSAGE = "passage"


def gen_kind(generator: str) -> str:
    return f"gen:{generator}"


def embeddings_schema(dim: int) -> pa.Schema:
    """embeddings/data/p-*.parquet: one row per (kind, passage); ``src`` = the generator's fingerprint
    (empty for passages), so a row is reused only for the same passage content and generator settings."""
    return pa.schema(
        [
            ("kind", pa.string()),
            ("src", pa.string()),
            ("id", pa.int64()),
            ("content_hash", pa.string()),
            ("vector", pa.list_(pa.float32(), dim)),
            ("count", pa.int32()),
            # Generator rows: sum over languages of E(q) of each slot (the i-th query of
            # every language), so a system using only n queries per language (and a
            # sweep over n) needs no new encoding.  Null for passage rows.
            ("slots", pa.list_(pa.list_(pa.float32(), dim))),
            ("slot_counts", pa.list_(pa.int32())),
        ]
    )


def query_vectors_schema(dim: int) -> pa.Schema:
    """queries/data/*.parquet: one encoded query set (clean or perturbed), in benchmark order, with its text."""
    return pa.schema([("qid", pa.string()), ("lang", pa.string()), ("text", pa.string()), ("vector", pa.list_(pa.float32(), dim))])


def passage_vectors_schema(dim: int) -> pa.Schema:
    """generated/NAME/passages/p-*.parquet: E(p) of a partition's passages as the generator's round-trip
    judge encoded them (the run's encoder), in the corpus file's order; the encode stage takes them
    instead of encoding the passages again (stages.encode_actor)."""
    return pa.schema([("id", pa.int64()), ("content_hash", pa.string()), ("vector", pa.list_(pa.float32(), dim))])


# The unperturbed test questions' query set.
CLEAN = "clean"


# index/SYSTEM/data/shard-*.ids.parquet: which passage version each vector of a shard is.
SHARD_IDS_SCHEMA = pa.schema([("id", pa.int64()), ("content_hash", pa.string())])
