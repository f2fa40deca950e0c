"""What every benchmark kind shares: the question and provided-query schemas, the tables, small steps."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, Iterable, List, Optional, Sequence, Set, Tuple

import pyarrow as pa

from .corpus import QUARANTINE_SCHEMA
from ..errors import UserError
from ..ids import seed_for

QUERIES_SCHEMA = pa.schema(
    [
        ("qid", pa.string()),
        ("lang", pa.string()),
        ("text", pa.string()),
        ("answers", pa.list_(pa.string())),
        ("gold_docid", pa.string()),
    ]
)

PROVIDED_SCHEMA = pa.schema(
    [
        ("docid", pa.string()),
        ("id", pa.int64()),
        ("lang", pa.string()),
        ("text", pa.string()),
        ("qid", pa.string()),
    ]
)


class BenchmarkError(UserError):
    """The benchmark cannot be prepared or loaded; the message says why."""


@dataclass
class BenchmarkTables:
    """The prepared tables before they are written, plus what the manifest reports."""

    corpus: Optional[pa.Table]  # None: the corpus is in files the ingest stage reads
    queries: pa.Table
    quarantine: pa.Table
    provided: Optional[pa.Table] = None
    dev: Optional[pa.Table] = None  # dev questions (QUERIES_SCHEMA): tuning only, never evaluated or provided
    source: Dict[str, Any] = field(default_factory=dict)
    notes: List[str] = field(default_factory=list)
    extra: Dict[str, Any] = field(default_factory=dict)  # kind-specific manifest keys



# -- shared steps ----------------------------------------------------------------
def select_languages(present: Iterable[str], wanted: Sequence[str], what: str) -> List[str]:
    """The wanted languages (all present ones when none are named); a wanted one that is missing is an error."""
    present = sorted(set(present))
    if not wanted:
        return present
    missing = [lang for lang in wanted if lang not in present]
    if missing:
        raise BenchmarkError(f"benchmark.languages {missing} not in {what} (present: {present})")
    return sorted(set(wanted))


def first_n_ids(ids: Iterable[str], n: int) -> Optional[Set[str]]:
    """The first ``n`` ids in sorted order (None = keep all)."""
    return set(sorted(set(ids))[:n]) if n > 0 else None


def limit_corpus(corpus: pa.Table, golds: Set[str], limit: int, seed: int) -> Tuple[pa.Table, Dict[str, Any]]:
    """Every gold passage plus deterministic distractors up to ``limit`` rows, input order kept."""
    if limit <= 0:
        return corpus, {}
    info: Dict[str, Any] = {"requested": limit, "golds": len(golds), "exceeded_by_golds": len(golds) > limit}
    if corpus.num_rows <= limit:
        return corpus, info
    docids = corpus.column("docid").to_pylist()
    gold_idx = [i for i, d in enumerate(docids) if d in golds]
    rest = [i for i, d in enumerate(docids) if d not in golds]
    # A hash order, not an RNG: the same passages are chosen on every machine.
    rest.sort(key=lambda i: (seed_for(seed, docids[i]), docids[i]))
    keep = sorted(gold_idx + rest[: max(0, limit - len(gold_idx))])
    return corpus.take(pa.array(keep, type=pa.int64())), info


def quarantine_table(rows: List[Dict[str, Any]]) -> pa.Table:
    """Set-aside rows (source, line, docid, reason, raw) as one table of the quarantine schema."""
    return pa.Table.from_pylist(rows, schema=QUARANTINE_SCHEMA)


def raw_text(obj: Any) -> str:
    """A bad record as quarantine keeps it: its repr, cut at 500 characters so one huge row cannot bloat the table."""
    return repr(obj)[:500]


