"""The query sources the encode stage encodes: each generator's unfiltered queries, and its kept ones where a system reads them.

A generating generator stores every draw (``generated/NAME/attempts``) next to
the unfiltered selection (``generated/NAME/data``), so a system of the filtered
questions (``questions: kept``) needs no second generation: the encode stage
reads the unit's attempts file and selects the kept questions passage by
passage (:func:`selected_queries`).  A source looks to the encode stage like a
generator's manifest: the unfiltered one *is* the generator's manifest (its
embeddings keep the keys and files they had before filters), the kept one is
derived from it under the name ``GENERATOR@kept`` (:func:`query_source`) with
its own fingerprints, its units' files the attempts files, and a ``select``
spec saying which questions to take.
"""

from __future__ import annotations

from typing import Any, Dict, Iterator, List

import pyarrow as pa

from ..config import RunConfig
from ..config.systems import query_source
from ..store.integrity import VerifiedParquet
from ..store.ledger import fingerprint
from .generate import queries_table

# What the selection reads of an attempts file (ATTEMPTS_SCHEMA).
ATTEMPT_COLUMNS = ["id", "content_hash", "lang", "text", "kept", "unfiltered"]


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
        out[name] = selected_source(s.generator, gens[s.generator], s.questions)
    return out


def selected_source(generator: str, m: Dict[str, Any], which: str) -> Dict[str, Any]:
    """The manifest of generator ``generator``'s ``which`` selection, derived from its manifest ``m``.

    Fingerprints: the generator's with the selection, so its embedding rows (``src``) and the
    stage's key differ from the unfiltered ones; unit keys: the generator's (the same draws).
    """
    g = m["generator"]
    units = []
    for u in m["units"]:
        if not u.get("attempts"):
            raise RuntimeError(f"generated/{generator}: partition {u['partition']} has no stored draws (attempts) to select {which} questions from")
        units.append({"partition": u["partition"], "key": u["key"], **u["attempts"]})
    return {"fingerprint": fingerprint({"gen": m["fingerprint"], "questions": which}),
            "gen_fp": fingerprint({"gen": m["gen_fp"], "questions": which}), "units": units,
            "select": {"generator": generator, "questions": which, "languages": list(g["languages"]), "n": int(g["n_per_language"])}}


def selected_queries(f: VerifiedParquet, select: Dict[str, Any], batch_rows: int) -> Iterator[pa.Table]:
    """GENERATED_SCHEMA rows of the passages of an attempts file ``f`` (sorted by id), holding the
    ``select`` spec's selection, a few passages at a time.

    Draws are read ``batch_rows`` at a time; a passage's draws may span two batches, so the last
    passage of a batch waits for the next one: one passage's draws are never split.
    """
    langs: List[str] = select["languages"]
    carry = None
    for b in f.batches(ATTEMPT_COLUMNS, batch_rows):
        t = pa.Table.from_batches([b]) if carry is None else pa.concat_tables([carry, pa.Table.from_batches([b])])
        if not t.num_rows:
            continue
        ids = t["id"].to_numpy()
        last = int((ids != ids[-1]).sum())  # rows before the last passage's draws (sorted by id)
        carry = t.slice(last)
        if last:
            yield queries_table(t.slice(0, last), langs, select["n"], select["questions"])
    if carry is not None and carry.num_rows:
        yield queries_table(carry, langs, select["n"], select["questions"])


def select_entry(source: Dict[str, Any]) -> Dict[str, Any]:
    """What an encode unit's ``gens`` entry of ``source`` adds to its file record: the ``select`` spec
    of a selection, nothing for a generator's data file (the entry as before filters)."""
    return {"select": source["select"]} if "select" in source else {}
