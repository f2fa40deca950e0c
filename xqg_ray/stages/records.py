"""Typed records of the stages: unit plans sent to actors and tasks, unit entries and stage manifests.

Each is a dataclass that serialises to JSON with :meth:`Record.to_json` (field
order is the order keys appear in the written JSON; optional fields left None
are not written) and is read back with :meth:`Record.from_json` (keys it does
not declare -- ``seal``, ``created``, a commit record's ``stage`` -- are
ignored).  A manifest's unit entry is declared once here, so which keys a
manifest keeps is the entry's fields, not a hand-kept list.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any, ClassVar, Dict, FrozenSet, List, Optional, Type, TypeVar

R = TypeVar("R", bound="Record")
FileRec = Dict[str, Any]


class Record:
    """JSON (de)serialisation of a dataclass; fields named in ``OPTIONAL`` are omitted when None."""

    OPTIONAL: ClassVar[FrozenSet[str]] = frozenset()

    def to_json(self) -> Dict[str, Any]:
        out: Dict[str, Any] = {}
        for f in fields(self):  # type: ignore[arg-type]
            v = getattr(self, f.name)
            if v is None and f.name in self.OPTIONAL:
                continue
            out[f.name] = v.to_json() if isinstance(v, Record) else [x.to_json() if isinstance(x, Record) else x for x in v] if isinstance(v, list) else v
        return out

    @classmethod
    def from_json(cls: Type[R], d: Dict[str, Any]) -> R:
        """The record from a JSON object (a commit record, a summary, a manifest entry): its declared keys only."""
        names = {f.name for f in fields(cls)}  # type: ignore[arg-type]
        return cls(**{k: v for k, v in d.items() if k in names})


# -- generate -------------------------------------------------------------------


@dataclass
class GenerateUnit(Record):
    """What a generate actor does for one corpus partition."""

    partition: int
    unit: str
    key: str
    corpus: FileRec
    prior: Optional[FileRec]
    out: str
    # The prior version's attempts file (every draw with its flags): a generating kind reuses a
    # passage's queries only together with its draws.
    prior_attempts: Optional[FileRec] = None


@dataclass
class PartitionEntry(Record):
    """What every per-partition manifest entry holds: the unit's key, its data file and its row counts
    (computed in this run, reused per passage from the prior version)."""

    partition: int
    key: str
    file: str
    sha256: str
    bytes: int
    rows: int
    computed: int
    reused: int


@dataclass
class GeneratedEntry(PartitionEntry):
    """One partition of a ``generated/NAME`` manifest (and the summary a generate unit returns)."""

    OPTIONAL = frozenset({"set_aside", "quarantine", "attempts", "filter", "quality", "commit", "segments", "passage_vectors", "drawn_ahead"})
    failed_slots: int
    set_aside: Optional[int] = None
    quarantine: Optional[FileRec] = None
    # Generating kinds: every draw with its flags (ATTEMPTS_SCHEMA), the filter's counts
    # (evaluation.question_quality.filter_counts) and the questions' quality tallies per
    # selection and language (evaluation.question_quality.unit_quality).
    attempts: Optional[FileRec] = None
    filter: Optional[Dict[str, Any]] = None
    quality: Optional[Dict[str, Any]] = None
    # A unit resumed from an earlier attempt's commit record has no ``commit`` entry (as before).
    commit: Optional[str] = None
    # Kept as delta segments (store.segments; ``attempts`` then has its own): read with live_table.
    segments: Optional[List[Dict[str, Any]]] = None
    # A round-trip judge's E(p) of the partition (schemas.passage_vectors_schema), with the encoder key,
    # torch threads and device they were computed with: the encode stage's passages where those match.
    passage_vectors: Optional[Dict[str, Any]] = None
    # filters.draw_ahead > 0: the draws sampled ahead for later rounds (``made``) and those no round read
    # (``unused``): the decode rows the option spent for nothing (models.rounds).
    drawn_ahead: Optional[Dict[str, int]] = None


@dataclass
class GeneratedManifest(Record):
    """The ``generated/NAME`` manifest."""

    OPTIONAL = frozenset({"filter"})
    gen_fp: str
    generator: Dict[str, Any]
    snapshot: str
    passages: Dict[str, Any]
    rows: Dict[str, int]
    unit_counts: Dict[str, int]
    failed_slots: int
    set_aside: int
    units: List[GeneratedEntry]
    # Generating kinds: the filter's counts summed over the units.
    filter: Optional[Dict[str, Any]] = None


# -- encode ---------------------------------------------------------------------


@dataclass
class EncodePartitionUnit(Record):
    """What an encode actor does for one corpus partition: E(p) and each generator's query sums."""

    stage: str
    partition: int
    unit: str
    key: str
    corpus: FileRec
    gens: Dict[str, Dict[str, Any]]
    prior: Optional[FileRec]
    out: str
    kind: str = "partition"
    # The prior version's query sources (kind -> src) and the churn past which the partition is
    # rewritten whole rather than given a delta segment (store.segments, corpus.compact_fraction).
    prior_srcs: Optional[Dict[str, str]] = None
    compact_fraction: float = 0.0
    # A generator's round-trip judge's E(p) of this partition (GeneratedEntry.passage_vectors), computed as
    # this unit would compute them: its passages of the same content take these vectors instead.
    passage_vectors: Optional[Dict[str, Any]] = None


@dataclass
class EncodeQueriesUnit(Record):
    """What an encode actor does for one query set (the clean test questions or a perturbation of them)."""

    stage: str
    unit: str
    set: str
    key: str
    queries: FileRec
    perturbation: Optional[Dict[str, Any]]
    out: str
    kind: str = "queries"


def encode_unit(d: Dict[str, Any]) -> Record:
    """An encode unit plan from its JSON: a query set or a partition."""
    return EncodeQueriesUnit.from_json(d) if d.get("kind") == "queries" else EncodePartitionUnit.from_json(d)


@dataclass
class EmbeddingsEntry(PartitionEntry):
    """One partition of an ``embeddings`` manifest; ``segments`` when it is kept as delta segments
    (:mod:`xqg_ray.store.segments`: read it with ``live_table``, never by ``file`` alone)."""

    OPTIONAL = frozenset({"commit", "segments"})
    commit: Optional[str] = None
    segments: Optional[List[Dict[str, Any]]] = None


@dataclass
class EmbeddingsManifest(Record):
    """The ``embeddings`` manifest of one encoder."""

    enc_fp: str
    encoder_name: str
    encoder: Dict[str, Any]
    snapshot: str
    passages: Dict[str, Any]
    rows: Dict[str, int]
    computed_by_kind: Dict[str, int]
    unit_counts: Dict[str, int]
    dim: Optional[int]
    counts: Dict[str, Dict[str, int]]
    generators: Dict[str, str]
    units: List[EmbeddingsEntry]


@dataclass
class QuerySetEntry(Record):
    """One encoded query set of a ``queries`` manifest."""

    file: str
    sha256: str
    bytes: int
    rows: int
    dim: int
    perturbation: Optional[Dict[str, Any]]
    commit: str


@dataclass
class QueriesManifest(Record):
    """The ``queries`` manifest of one encoder: every query set."""

    enc_fp: str
    encoder_name: str
    queries_sha256: str
    computed: int
    sets: Dict[str, QuerySetEntry]

    def to_json(self) -> Dict[str, Any]:
        out = super().to_json()
        out["sets"] = {n: e.to_json() for n, e in self.sets.items()}
        return out


# -- index ----------------------------------------------------------------------


@dataclass
class ShardSystem(Record):
    """One system's part of a shard job: its augmentation settings and where its shard goes."""

    name: str
    generator: str
    alpha: float
    aggregation: str
    n: int
    stage: str
    label: str
    key: str
    out: str
    ids_out: str
    prior: Optional[Dict[str, FileRec]]


@dataclass
class ShardJob(Record):
    """A Ray task's work: one shard of every listed system, from the shard's embeddings files."""

    root: str
    shard: int
    emb_files: List[FileRec]
    partitions: List[int]  # the corpus partition of each embeddings file
    num_partitions: int
    systems: List[ShardSystem]
    dim: int
    factory: str
    metric: str
    threads: int

    @classmethod
    def from_json(cls, d: Dict[str, Any]) -> "ShardJob":
        job = super().from_json(d)
        job.systems = [s if isinstance(s, ShardSystem) else ShardSystem.from_json(s) for s in job.systems]
        return job


@dataclass
class ShardEntry(Record):
    """One shard of an ``index/SYSTEM`` manifest."""

    OPTIONAL = frozenset({"commit", "sources", "rows_read"})
    shard: int
    key: str
    file: str
    sha256: str
    bytes: int
    ntotal: int
    ids: FileRec
    commit: Optional[str] = None
    mode: str = ""
    # Per embeddings file of the shard (in its partitions' order), the sha256 of each segment this
    # version was built from: the next update reads only the segments appended since.
    sources: Optional[List[List[str]]] = None
    # Embeddings rows an update read (of the system's kinds): the change, where only appended segments were read.
    rows_read: Optional[int] = None


@dataclass
class IndexManifest(Record):
    """The ``index/SYSTEM`` manifest."""

    OPTIONAL = frozenset({"questions"})
    config_key: str
    system: Dict[str, Any]
    num_shards: int
    num_partitions: int
    dim: int
    metric: str
    factory: str
    encoder: str
    encoder_name: str
    embeddings: str
    alpha: float
    aggregation: Optional[str]
    n: Optional[int]
    generator: Optional[str]
    query_counts: Optional[Dict[str, int]]
    corpus_hash: str
    snapshot: str
    ntotal: int
    changes: Dict[str, int]
    modes: List[str]
    shards: List[ShardEntry]
    # A generating generator's system: which of its questions it read (config.schema.QUESTION_SELECTIONS).
    questions: Optional[str] = None


# -- benchmark ------------------------------------------------------------------


@dataclass
class BenchmarkManifest(Record):
    """The ``benchmark`` manifest; ``extra`` (the builder's facts about its source) is written inline after the rest."""

    kind: str
    config: Dict[str, Any]
    sources: List[Dict[str, Any]]
    source: Any
    snapshot: str
    snapshot_file: str
    parent_snapshot: Optional[str]
    corpus_hash: str
    changes: Dict[str, Any]
    files: Dict[str, FileRec]
    counts: Dict[str, Any]
    languages: List[str]
    notes: Any
    evaluated: Dict[str, Any]
    extra: Dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> Dict[str, Any]:
        out = super().to_json()
        return {**{k: v for k, v in out.items() if k != "extra"}, **self.extra}


def entries(cls: Type[R], records: List[Dict[str, Any]]) -> List[R]:
    """``records`` (unit summaries or commit records) as typed manifest entries of ``cls``."""
    return [cls.from_json(r) for r in records]
