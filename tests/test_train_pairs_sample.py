"""A training's ``max_pairs`` sample: a seeded bottom-k of the guarded pairs, kept partition by partition (pure, no Ray).

The sample is the ``k`` pairs with the smallest BLAKE2b hashes of (seed, id,
lang, question), recomputed here without the project's helpers; it does not
depend on the order partitions are read in, 0 or a k above the pair count
keeps today's pairs, and the artifact key of a config without ``max_pairs``
is the one it had before the field existed.
"""

from __future__ import annotations

import hashlib
import random

import pyarrow as pa
import pytest

from xqg_ray.config import ConfigError, EncoderConfig, TrainConfig, train_settings_problems
from xqg_ray.training.artifact import artifact_key
from xqg_ray.training.pairs import PAIRS_SCHEMA, SAMPLE_HASH, guard_pairs, keep_smallest, sampled_pairs
from xqg_ray.training.settings import key_fields, validate_settings

SEED = 7
PARTITIONS = 3


def pairs_table(rows) -> pa.Table:
    """Pairs from (id, lang, query) rows, as the guard's output has them."""
    return pa.table(
        {"id": [r[0] for r in rows], "content_hash": [f"h{r[0]}" for r in rows], "title": [f"t{r[0]}" for r in rows],
         "text": [f"passage {r[0]}" for r in rows], "lang": [r[1] for r in rows], "query": [r[2] for r in rows],
         "qid": [None] * len(rows), "source": ["gen:g"] * len(rows)},
        schema=PAIRS_SCHEMA,
    )


# 12 passages x 2 languages, plus one duplicate (same question up to case) the guard drops.
ROWS = [(i, lang, f"question {j} about {i} in {lang}?") for i in range(1, 13) for lang in ("de", "fr") for j in range(2)]
ROWS.append((5, "de", "QUESTION 0 ABOUT 5 IN DE"))


def partitions():
    """The pairs split as the stage reads them: by passage id mod PARTITIONS."""
    return [pairs_table([r for r in ROWS if r[0] % PARTITIONS == p]) for p in range(PARTITIONS)]


def blake(seed: int, pid: int, lang: str, query: str) -> int:
    h = hashlib.blake2b(f"{seed}\x1f{pid}\x1f{lang}\x1f{query}".encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(h, "big") & (2**63 - 1)


def sample_of(parts, k: int, seed: int = SEED) -> pa.Table:
    sample = None
    for part in parts:
        kept, _ = guard_pairs(part, {})
        sample = keep_smallest(sample, kept, k, seed)
    return sampled_pairs(sample)


def keys(t: pa.Table):
    return list(zip(t["id"].to_pylist(), t["lang"].to_pylist(), t["query"].to_pylist()))


def test_sample_is_the_k_smallest_hashes():
    guarded = [r for r in ROWS if r[2] != "QUESTION 0 ABOUT 5 IN DE"]
    expected = sorted(sorted(guarded, key=lambda r: (blake(SEED, *r), r))[:5])
    got = sample_of(partitions(), 5)
    assert keys(got) == expected
    assert got.schema == PAIRS_SCHEMA and SAMPLE_HASH not in got.column_names
    # Pinned: the same seed picks these pairs on every machine and run.
    assert expected == [(1, "fr", "question 1 about 1 in fr?"), (2, "fr", "question 1 about 2 in fr?"),
                        (8, "fr", "question 0 about 8 in fr?"), (9, "de", "question 1 about 9 in de?"),
                        (10, "de", "question 0 about 10 in de?")]
    # Another seed, another sample.
    assert keys(sample_of(partitions(), 5, seed=8)) != expected


def test_sample_does_not_depend_on_partition_order():
    want = sample_of(partitions(), 7)
    assert want.num_rows == 7
    rng = random.Random(0)
    for _ in range(5):
        parts = partitions()
        rng.shuffle(parts)
        # The rows inside a partition shuffled too.
        parts = [p.take(pa.array(rng.sample(range(p.num_rows), p.num_rows))) for p in parts]
        assert sample_of(parts, 7).equals(want)


def test_k_zero_or_above_the_count_keeps_todays_pairs():
    today, aside = guard_pairs(pa.concat_tables(partitions()), {})
    assert today.num_rows == 48 and aside.num_rows == 1
    for k in (0, 48, 49, 1000):
        assert sample_of(partitions(), k).equals(today)
    assert sample_of([], 3).equals(PAIRS_SCHEMA.empty_table())


def test_max_pairs_validated_in_one_line():
    assert train_settings_problems(TrainConfig(max_pairs=-1), "trainings.x") == ["trainings.x.max_pairs=-1 must be >= 0 (0 = all pairs)"]
    assert train_settings_problems(TrainConfig(max_pairs=0), "trainings.x") == []
    with pytest.raises(ConfigError, match=r"^train\.max_pairs=-1 must be >= 0 \(0 = all pairs\)$"):
        validate_settings(TrainConfig(max_pairs=-1))


def test_max_pairs_is_not_in_the_key_and_old_keys_hold():
    # The sample is in the pairs' content hash; a limit above the pair count trains the same weights.
    assert key_fields(TrainConfig(max_pairs=2_000_000)) == key_fields(TrainConfig()) and "max_pairs" not in key_fields(TrainConfig())
    # The keys before max_pairs existed (computed on main at 86beac5): artifacts trained then are reused.
    assert artifact_key(EncoderConfig(), "f" * 64, "a" * 64, TrainConfig()) == "584a755f6a3773bf406aa9618bb9df1f4c73f3d06a5f814041875f66ee602141"
    assert artifact_key(EncoderConfig(), "f" * 64, "a" * 64, TrainConfig(lr=1e-4, seed=3, max_pairs=5)) == (
        "94f78e49ae301e2f666088aeedbd1a7eeea08d90080e176f548b0baf74a6014f")
