"""Encoding in bounded memory: the encode stage streams a partition in windows of ``encoder.window_rows``.

No Ray: ``EncodePartition`` runs in this process on committed synthetic
inputs (a corpus partition and two generators' tables), with tiny-bert.  What
the stage holds is counted with small hooks (rows per tokenizer call, per
forward, per encode call, rows buffered by the writer), not with RSS
(``bench/encode_memory.py`` measures RSS).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from xqg_ray.config import ConfigError, EncoderConfig, StorageConfig, load_config
from xqg_ray.ids import content_hash
from xqg_ray.schemas import GENERATED_SCHEMA, PASSAGE, gen_kind
from xqg_ray.stages import encode_actor as encode_stage
from xqg_ray.stages.encode_actor import EncodePartition, slot_width
from xqg_ray.stages.reuse import PriorRows, interleave
from xqg_ray.stages.records import EncodePartitionUnit
from xqg_ray.store.integrity import CommittedParquetWriter, IntegrityError, VerifiedParquet, write_table_committed
from xqg_ray.store.storage import Storage

SMOKE = str(Path(__file__).resolve().parents[1] / "conf" / "smoke.yaml")
WORDS = "river city bank museum treaty löwe 東京 пример the of and a".split()


def _text(rng: np.random.Generator) -> str:
    return " ".join(rng.choice(WORDS, size=int(rng.integers(1, 30))))


def _inputs(root: str, n: int, seed: int = 0, changed: Dict[int, str] | None = None, drop: frozenset = frozenset()) -> Dict[str, Any]:
    """Committed corpus and generated tables of ``n`` passages (ids 10, 20, ...); the unit plan's file records."""
    storage = Storage()
    ids = [10 * (i + 1) for i in range(n) if i not in drop]
    rngs = {i: np.random.default_rng([seed, i]) for i in ids}  # a passage's text and queries do not depend on the others
    texts = {i: (changed or {}).get(i, _text(rngs[i])) for i in ids}
    hashes = [content_hash("t", texts[i]) for i in ids]
    corpus = pa.table({"id": pa.array(ids, pa.int64()), "title": ["t"] * len(ids), "text": [texts[i] for i in ids], "content_hash": hashes})
    tag = f"{n}-{seed}-{len(drop)}-{len(changed or {})}"
    rec = {"corpus": write_table_committed(storage, root, f"in/corpus-{tag}.parquet", corpus), "gens": {}}
    # "a": 2 languages x up to 2 queries (some slots failed); "b": 0-5 queries of one language.
    for name, langs, most in (("a", ["de", "zh"], 2), ("b", ["ja"], 5)):
        queries = [[{"lang": lang, "text": _text(rngs[i])} for lang in langs for _ in range(int(rngs[i].integers(0, most + 1)))] for i in ids]
        t = pa.table({"id": corpus["id"], "content_hash": corpus["content_hash"], "queries": queries,
                      "failed": pa.array(np.zeros(len(ids), np.int32))}, schema=GENERATED_SCHEMA)
        rec["gens"][name] = {"src": f"fp-{name}", "key": f"k-{name}", **write_table_committed(storage, root, f"in/{name}-{tag}.parquet", t)}
    return rec


def _unit(root: str, rec: Dict[str, Any], out: str, prior: Dict[str, Any] | None = None) -> Dict[str, Any]:
    return EncodePartitionUnit(stage="embeddings", partition=0, unit="p-00000", key=out, corpus=rec["corpus"], gens=rec["gens"],
                               prior=prior, out=f"embeddings/data/{out}.parquet").to_json()


@pytest.fixture(scope="module")
def actor(tiny_models):
    cfg = EncoderConfig(model=tiny_models["tiny-bert"], pooling="mean", max_query_length=16, max_passage_length=24,
                        batch_size=16, dtype="float32")  # a token budget above 8 rows: the window is what caps a forward
    return EncodePartition("unused", StorageConfig(), cfg, threads=1)


class Hooks:
    """Largest rows per tokenizer call, per forward, per encode call (a window's vectors), buffered by the writer."""

    def __init__(self, actor: EncodePartition, monkeypatch: pytest.MonkeyPatch):
        self.peak = {"tokenizer": 0, "forward": 0, "window": 0, "buffered": 0}
        enc, seen = actor.encoder, self.peak
        tok, model, encode = enc.tokenizer, enc.model, enc.encode

        def tokenizer(texts, **kw):
            seen["tokenizer"] = max(seen["tokenizer"], len(texts))
            return tok(texts, **kw)

        def forward(**kw):
            seen["forward"] = max(seen["forward"], int(kw["input_ids"].shape[0]))
            return model(**kw)

        def windowed(texts, kind):
            seen["window"] = max(seen["window"], len(texts))
            return encode(texts, kind)

        class Writer(CommittedParquetWriter):
            def commit(self):
                seen["buffered"] = max(seen["buffered"], self.peak_rows)
                return super().commit()

        monkeypatch.setattr(enc, "tokenizer", type("Tok", (), {"__call__": staticmethod(tokenizer), "__getattr__": lambda s, k: getattr(tok, k)})())
        monkeypatch.setattr(enc, "model", forward)
        monkeypatch.setattr(enc, "encode", windowed)
        monkeypatch.setattr(encode_stage, "CommittedParquetWriter", Writer)


def _run(actor: EncodePartition, root: str, unit: Dict[str, Any], window: int, monkeypatch: pytest.MonkeyPatch) -> Dict[str, Any]:
    monkeypatch.setattr(actor, "root", root)
    monkeypatch.setattr(actor.cfg, "window_rows", window)
    return actor.run_unit(unit)


def _table(root: str, rec: Dict[str, Any]) -> pa.Table:
    return pq.read_table(f"{root}/{rec['file']}")


def test_peak_rows_are_set_by_window_rows_not_by_the_partition(actor, tmp_path, monkeypatch):
    peaks = []
    for n in (40, 160):
        root = str(tmp_path / f"n{n}")
        hooks = Hooks(actor, monkeypatch)
        rec = _run(actor, root, _unit(root, _inputs(root, n), "out"), 8, monkeypatch)
        assert rec["rows"] == 3 * n and rec["computed"] == 3 * n
        groups = pq.ParquetFile(f"{root}/{rec['file']}").metadata
        assert [groups.row_group(i).num_rows for i in range(groups.num_row_groups)] == [8] * (3 * n // 8)
        peaks.append(hooks.peak)
        monkeypatch.undo()
    # The same for 40 and 160 passages (480 rows, ~600 texts): one window of 8 texts at a time.
    assert peaks[0] == peaks[1] == {"tokenizer": 8, "forward": 8, "window": 8, "buffered": 8}


def test_rows_do_not_depend_on_the_window(actor, tmp_path, monkeypatch):
    root = str(tmp_path)
    inputs = _inputs(root, 60, seed=1)
    whole = _run(actor, root, _unit(root, inputs, "whole"), 100_000, monkeypatch)
    small = _run(actor, root, _unit(root, inputs, "small"), 7, monkeypatch)
    a, b = _table(root, whole), _table(root, small)
    for col in ("kind", "src", "id", "content_hash", "count", "slot_counts"):
        assert a[col].equals(b[col]), col
    assert a["kind"].to_pylist() == ["gen:a"] * 60 + ["gen:b"] * 60 + [PASSAGE] * 60
    assert a["id"].to_pylist() == [10 * (i + 1) for i in range(60)] * 3
    # Every generator row has the partition's widest slot list (2 for a, 5 for b), whatever its window.
    widths = {k: set(pa.compute.list_value_length(b.filter(pa.compute.equal(b["kind"], k))["slots"]).to_pylist()) for k in ("gen:a", "gen:b")}
    assert widths == {"gen:a": {2}, "gen:b": {5}}
    np.testing.assert_allclose(np.stack(b["vector"].to_numpy(zero_copy_only=False)), np.stack(a["vector"].to_numpy(zero_copy_only=False)),
                               rtol=0, atol=1e-6)
    for k in ("file", "sha256", "bytes", "key", "commit"):
        whole.pop(k), small.pop(k)
    assert whole == small
    assert whole["counts"] == {"a": check(inputs, root, "a"), "b": check(inputs, root, "b")}


def check(inputs: Dict[str, Any], root: str, name: str) -> Dict[str, int]:
    c = pa.compute.list_value_length(pq.read_table(f"{root}/{inputs['gens'][name]['file']}")["queries"]).to_numpy()
    return {"min": int(c.min()), "max": int(c.max()), "zero": int((c == 0).sum()), "passages": len(c)}


def test_reuse_streams_and_equals_recompute(actor, tmp_path, monkeypatch):
    """An update (one passage changed, two removed, five added) reuses the prior rows it can, window by window."""
    root = str(tmp_path)
    first = _run(actor, root, _unit(root, _inputs(root, 30, seed=3, drop=frozenset(range(25, 30))), "v1"), 4, monkeypatch)
    new = _inputs(root, 30, seed=3, changed={40: "a changed passage"}, drop=frozenset({0, 17}))
    update = _run(actor, root, _unit(root, new, "v2", prior={k: first[k] for k in ("file", "sha256", "bytes")}), 4, monkeypatch)
    fresh = _run(actor, root, _unit(root, new, "v2-fresh"), 4, monkeypatch)
    # 28 passages: 22 unchanged rows reused per kind, the changed one and the five new computed.
    assert update["reused_by_kind"] == {PASSAGE: 22, gen_kind("a"): 22, gen_kind("b"): 22}
    assert update["computed_by_kind"] == {PASSAGE: 6, gen_kind("a"): 6, gen_kind("b"): 6}
    u, f, old = _table(root, update), _table(root, fresh), _table(root, first)
    assert u.select(["kind", "id", "content_hash", "count"]).equals(f.select(["kind", "id", "content_hash", "count"]))
    np.testing.assert_allclose(np.stack(u["vector"].to_numpy(zero_copy_only=False)), np.stack(f["vector"].to_numpy(zero_copy_only=False)),
                               rtol=0, atol=1e-6)
    # Reused rows are the prior's rows, bit for bit.
    def keyed(t: pa.Table) -> Dict[Any, Dict[str, Any]]:
        return {(r["kind"], r["id"], r["content_hash"]): r for r in t.to_pylist()}

    before, after = keyed(old), keyed(u)
    kept = before.keys() & after.keys()
    assert len(kept) == 66 and all(before[k] == after[k] for k in kept)


def test_prior_rows_match_by_id_and_hash_across_batches():
    batches = [pa.table({"id": pa.array(ids, pa.int64()), "content_hash": hs, "v": ids})
               for ids, hs in (([1, 3], ["a", "b"]), ([4, 6, 9], ["c", "x", "d"]), ([12], ["e"]))]
    rows = PriorRows(batches)
    hit, old = rows.match(np.array([3, 4, 5]), pa.chunked_array([["b", "c", "z"]]))
    assert hit.tolist() == [True, True, False] and old["v"].to_pylist() == [3, 4]
    hit, old = rows.match(np.array([6, 9, 10]), pa.chunked_array([["y", "d", "q"]]))  # 6 changed
    assert hit.tolist() == [False, True, False] and old["v"].to_pylist() == [9]
    hit, old = rows.match(np.array([13]), pa.chunked_array([["e"]]))  # 12 removed
    assert hit.tolist() == [False] and old is None


def test_interleave_and_slot_width():
    c, o = pa.table({"x": [1, 2]}), pa.table({"x": [10, 20, 30]})
    assert interleave(c, o, np.array([True, False, True, False, True]))["x"].to_pylist() == [10, 1, 20, 2, 30]
    q = pa.array([[{"lang": "de", "text": "a"}, {"lang": "zh", "text": "b"}, {"lang": "de", "text": "c"}], [],
                  [{"lang": "ja", "text": "d"}] * 3], GENERATED_SCHEMA.field("queries").type)
    assert slot_width(q) == 3 and slot_width(q.slice(0, 2)) == 2 and slot_width(q.slice(1, 1)) == 0


def test_streaming_writer_and_reader(tmp_path):
    storage, root = Storage(), str(tmp_path)
    t = pa.table({"id": pa.array(np.arange(10), pa.int64()), "s": [str(i) for i in range(10)]})
    with CommittedParquetWriter(storage, root, "a/x.parquet", t.schema, 4) as w:
        w.add(t.slice(0, 3))
        w.add(t.slice(3, 6))
        w.add(t.slice(9))
        rec = w.commit()
    meta = pq.ParquetFile(tmp_path / "a" / "x.parquet").metadata
    assert [meta.row_group(i).num_rows for i in range(meta.num_row_groups)] == [4, 4, 2] and w.peak_rows == 4
    assert rec["rows"] == 10 and rec["bytes"] == (tmp_path / "a" / "x.parquet").stat().st_size
    vp = VerifiedParquet(storage, root, rec)
    assert pa.Table.from_batches(list(vp.batches(["id"], 3))).column("id").to_pylist() == list(range(10))
    # under row_group_rows (and empty): the bytes of one table write
    for rows in (t, t.slice(0, 0)):
        with CommittedParquetWriter(storage, root, "b.parquet", t.schema, 100) as w:
            w.add(rows)
            assert w.commit()["sha256"] == write_table_committed(storage, root, "c.parquet", rows)["sha256"]
    # an error before commit leaves no file and no temp file
    with pytest.raises(RuntimeError), CommittedParquetWriter(storage, root, "d/y.parquet", t.schema, 4) as w:
        w.add(t)
        raise RuntimeError
    assert list((tmp_path / "d").iterdir()) == []
    (tmp_path / "a" / "x.parquet").write_bytes((tmp_path / "a" / "x.parquet").read_bytes()[:-1] + b"!")
    with pytest.raises(IntegrityError, match="does not match its sha256 in the test"):
        VerifiedParquet(storage, root, rec, where="the test")


def test_window_rows_is_validated():
    with pytest.raises(ConfigError) as e:
        load_config(SMOKE, ["encoder.window_rows=0"])
    assert str(e.value).splitlines()[1:] == ["  - encoder.window_rows=0: must be >= 1"]
