"""The inputs of an embeddings unit: which query sources a run encodes, and how a unit reads the rows of each.

Sources: each generator's unfiltered queries and, where a system reads them,
its kept or passed ones (:func:`query_sources`).  A generating generator stores every
draw (``generated/NAME/attempts``) next to the unfiltered selection
(``generated/NAME/data``), so a system of the filtered questions (``questions:
kept``) needs no second generation: the unit reads the attempts file and selects
the kept questions passage by passage (:func:`selected_queries`).  A source
looks to the encode stage like a generator's manifest: the unfiltered one *is*
the generator's manifest (its embeddings keep the keys and files they had
before filters), the kept one is derived from it under the name
``GENERATOR@kept`` (``config.systems.query_source``) with its own fingerprints,
its units' files the attempts files, and a ``select`` spec saying which
questions to take.  A unit reads each source, and the corpus, as a
:class:`Source`: rows sorted by id, a batch at a time.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, Iterator, List, Optional, Tuple

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ..config import RunConfig
from ..config.schema import FilterConfig
from ..config.systems import query_source
from ..store.integrity import VerifiedParquet
from ..store.ledger import fingerprint
from .generate import queries_table

# What the selection reads of an attempts file (ATTEMPTS_SCHEMA), and what a replay adds: the flags.
ATTEMPT_COLUMNS = ["id", "content_hash", "lang", "text", "reason", "kept", "unfiltered"]
REPLAY_COLUMNS = ["round", "draw", "empty", "wrong_language", "exemplar", "degenerate", "round_trip"]


def query_sources(cfg: RunConfig, gens: Dict[str, Dict[str, Any]]) -> Dict[str, Dict[str, Any]]:
    """Source name -> its manifest: every generator of ``gens`` (name -> its published manifest) as
    itself, plus ``GENERATOR@SELECTION`` for each other selection some system of ``cfg`` reads.

    The unfiltered sources are exactly ``gens``, as before filters (every encoder encodes every
    generator some system uses), so a config without a kept system plans the same units.
    """
    out = dict(gens)
    for s in cfg.systems:
        name = query_source(s)
        if name in out or s.generator not in gens:
            continue
        out[name] = selected_source(s.generator, gens[s.generator], s.questions, s.round_trip_top_k, s.max_attempts)
    return out


def selected_source(generator: str, m: Dict[str, Any], which: str, round_trip_top_k: int = 0, max_attempts: int = 0) -> Dict[str, Any]:
    """The manifest of generator ``generator``'s ``which`` selection, derived from its manifest ``m``;
    with a system's own ``round_trip_top_k`` or ``max_attempts`` (0: the generator's), the verdicts
    replayed at those (:func:`~xqg_ray.evaluation.question_filter.replay`).

    Fingerprints: the generator's with the selection (and the replay), so its embedding rows (``src``)
    and the stage's key differ from the unfiltered ones; unit keys: the generator's (the same draws).
    """
    g = m["generator"]
    units = []
    for u in m["units"]:
        if not u.get("attempts"):
            raise RuntimeError(f"generated/{generator}: partition {u['partition']} has no stored draws (attempts) to select {which} questions from")
        units.append({"partition": u["partition"], "key": u["key"], **u["attempts"]})
    select: Dict[str, Any] = {"generator": generator, "questions": which, "languages": list(g["languages"]), "n": int(g["n_per_language"])}
    key: Dict[str, Any] = {"questions": which}
    if round_trip_top_k or max_attempts:
        f = g["filters"]
        select["replay"] = key["replay"] = {
            # A generator without the round trip keeps neither of its settings in its manifest (its key from before it).
            "enabled": list(f["enabled"]), "round_trip_top_k": int(round_trip_top_k or f.get("round_trip_top_k", FilterConfig.round_trip_top_k)),
            "max_attempts": int(max_attempts or f["max_attempts"]), "duplicate_jaccard": float(f["duplicate_jaccard"]),
            "fill_empty": bool(f.get("fill_empty", FilterConfig.fill_empty))}
    return {"fingerprint": fingerprint({"gen": m["fingerprint"], **key}), "gen_fp": fingerprint({"gen": m["gen_fp"], **key}),
            "units": units, "select": select}


def selected_queries(f: VerifiedParquet, select: Dict[str, Any], batch_rows: int) -> Iterator[pa.Table]:
    """GENERATED_SCHEMA rows of the passages of an attempts file ``f`` (sorted by id), holding the
    ``select`` spec's selection, a few passages at a time.

    Draws are read ``batch_rows`` at a time; a passage's draws may span two batches, so the last
    passage of a batch waits for the next one: one passage's draws are never split.
    """
    langs: List[str] = select["languages"]
    again = select.get("replay")
    carry = None
    for b in f.batches(ATTEMPT_COLUMNS + (REPLAY_COLUMNS if again else []), batch_rows):
        t = pa.Table.from_batches([b]) if carry is None else pa.concat_tables([carry, pa.Table.from_batches([b])])
        if not t.num_rows:
            continue
        ids = t["id"].to_numpy()
        last = int((ids != ids[-1]).sum())  # rows before the last passage's draws (sorted by id)
        carry = t.slice(last)
        if last:
            yield queries_table(t.slice(0, last), langs, select["n"], select["questions"], again)
    if carry is not None and carry.num_rows:
        yield queries_table(carry, langs, select["n"], select["questions"], again)


def select_entry(source: Dict[str, Any]) -> Dict[str, Any]:
    """What an encode unit's ``gens`` entry of ``source`` adds to its file record: the ``select`` spec
    of a selection, nothing for a generator's data file (the entry as before filters)."""
    return {"select": source["select"]} if "select" in source else {}


# What a unit reads of the corpus and of a generator's data file.
PASSAGE_COLUMNS = ["id", "title", "text", "content_hash"]
GEN_COLUMNS = ["id", "content_hash", "queries"]


@dataclass
class Source:
    """One kind of a partition's output and the committed table its rows come from (the corpus or a generator's)."""

    kind: str
    src: str
    name: Optional[str]  # the generator; None for passages
    file: VerifiedParquet
    columns: List[str]
    # A selection of the stored draws (selected_source); None: the file's rows as they are.
    select: Optional[Dict[str, Any]] = None
    width: int = 0  # slots per computed row (generators)

    def batches(self, rows: int) -> Iterator[pa.Table]:
        """The source's rows (``columns``, sorted by id) a batch at a time."""
        if self.select is not None:
            yield from selected_queries(self.file, self.select, rows)
            return
        for b in self.file.batches(self.columns, rows):
            yield pa.Table.from_batches([b])

    def text_counts(self, t: pa.Table) -> np.ndarray:
        """Texts to encode per row: one passage, or the row's queries."""
        if self.name is None:
            return np.ones(t.num_rows, np.int64)
        return pc.list_value_length(t["queries"]).fill_null(0).to_numpy().astype(np.int64)

    def inputs(self, t: pa.Table, template: str) -> Tuple[List[str], Optional[List[List[str]]]]:
        """(texts to encode, flattened in row order; each row's query languages, None for passages)."""
        from ..models.encoder import format_passage

        if self.name is None:
            return [format_passage(template, a, b) for a, b in zip(t["title"].to_pylist(), t["text"].to_pylist())], None
        rows = t["queries"].to_pylist()
        return [q["text"] for qs in rows for q in qs], [[q["lang"] for q in qs] for qs in rows]
