"""Training an encoder on (question, passage) pairs: loss, leak guard, schedule, Ray Train (1 vs 2 workers, kill and resume), artifact.

Tolerances: one worker and two workers with the same global batch differ only
by float32 summation order (batches padded to another length, gradients summed
by an all-reduce): weights within 1e-5 absolute after 40 steps (measured:
~2e-7).  A resumed run replays the same steps in the same process layout:
weights within 1e-6 (measured: equal).  AdamW is blind to a constant factor on
the gradient, so the 1/world factors of the averaging are checked by the pure
gradient test, the all-reduce itself by the two-worker run.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from procs import wait_for_other_jobs
from xqg_ray.config import EncoderConfig
from xqg_ray.schemas import GENERATED_SCHEMA
from xqg_ray.store.integrity import IntegrityError
from xqg_ray.store.storage import Storage
from xqg_ray.training import pairs as P
from xqg_ray.training.artifact import current_artifact, find_artifact, load_artifact
from xqg_ray.training.loss import global_batch_loss, info_nce
from xqg_ray.training.run import checkpoints_path, train_or_reuse
from xqg_ray.training.schedule import lr_at, step_rows, worker_rows
from xqg_ray.training.settings import TrainSettings, validate_settings
from xqg_ray.config import ConfigError

REPO = Path(__file__).resolve().parents[1]
WORDS = ("the quick brown fox jumps over lazy dog capital france founded spiel gewonnen football "
         "university river city century war king science question passage").split()
# 64 pairs, 8 per step, 5 epochs: 40 steps, a checkpoint every 10.
SETTINGS = TrainSettings(epochs=5, global_batch=8, lr=1e-3, temperature=0.1, checkpoint_every=10, torch_threads=1)
ONE_VS_TWO_ATOL = 1e-5
RESUME_ATOL = 1e-6


def corpus_and_pairs(n: int = 64):
    rng = np.random.default_rng(0)
    texts = [" ".join(rng.choice(WORDS, 8)) for _ in range(n)]
    corpus = pa.table({"id": pa.array(np.arange(n) * 7 + 3, pa.int64()), "content_hash": [f"h{i}" for i in range(n)],
                       "title": [""] * n, "text": texts})
    gen = pa.Table.from_pylist(
        [{"id": int(i), "content_hash": f"h{k}", "queries": [{"lang": "en", "text": " ".join(t.split()[1:4])}], "failed": 0}
         for k, (i, t) in enumerate(zip(corpus["id"].to_pylist(), texts))], schema=GENERATED_SCHEMA)
    pairs, aside = P.generated_pairs(gen, corpus, "gen:t")
    assert aside.num_rows == 0
    return corpus, pairs


def encoder(tiny_models) -> EncoderConfig:
    return EncoderConfig(model=tiny_models["tiny-bert"], pooling="mean", query_prefix="query: ", passage_prefix="passage: ")


def weights(path) -> dict:
    from safetensors.torch import load_file

    return load_file(os.path.join(path, "model.safetensors"))


def max_diff(a: dict, b: dict) -> float:
    assert a.keys() == b.keys()
    return max(float((a[k] - b[k]).abs().max()) for k in a)


# ---------------------------------------------------------------- pure parts


def test_info_nce_values_and_masked_duplicate_passage():
    q = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    p = torch.tensor([[1.0, 0.0], [1.0, 1.0]])
    # row 0: cos 1 and 1/sqrt2; row 1: cos 0 and 1/sqrt2 -> logsumexp over temperature 1
    s = 1 / np.sqrt(2)
    want = 0.5 * ((np.log(np.exp(1) + np.exp(s)) - 1) + (np.log(1 + np.exp(s)) - s))
    assert float(info_nce(q, p, 1.0)) == pytest.approx(want, abs=1e-6)
    # the same passage as both rows' positive is not a negative: each row has one column left
    assert float(info_nce(q, p, 1.0, ids=torch.tensor([5, 5]))) == pytest.approx(0.0, abs=1e-7)
    # a hard negative equal to row 1's query direction raises row 1's loss only
    hard = torch.tensor([[0.0, 1.0]])
    row1 = np.log(1 + np.exp(s) + np.exp(1)) - s
    row0 = np.log(np.exp(1) + np.exp(s) + 1) - 1
    assert float(info_nce(q, p, 1.0, hard=hard)) == pytest.approx((row0 + row1) / 2, abs=1e-6)


def test_global_batch_loss_gradients_average_to_one_workers():
    """Two simulated workers' gradients, averaged, equal the gradient of the whole batch on one."""
    torch.manual_seed(0)
    lin = torch.nn.Linear(4, 3)
    xq, xp = torch.randn(6, 4), torch.randn(6, 4)
    ids = torch.tensor([1, 2, 3, 1, 4, 5])
    info_nce(lin(xq), lin(xp), 0.1, ids=ids).backward()
    one = lin.weight.grad.clone()
    grads = []
    for rank in range(2):
        lin.zero_grad()
        with torch.no_grad():
            all_q, all_p = lin(xq), lin(xp)
        sl = slice(rank * 3, rank * 3 + 3)
        global_batch_loss(lin(xq[sl]), lin(xp[sl]), all_q, all_p, rank, 2, 0.1, all_ids=ids).backward()
        grads.append(lin.weight.grad.clone())
    assert torch.allclose((grads[0] + grads[1]) / 2, one, atol=1e-6)
    assert not torch.allclose(grads[0], one, atol=1e-3)  # each worker alone is not the whole gradient


def test_schedule_rows_are_the_same_for_any_worker_count():
    rows = step_rows(10, 4, 2, seed=0)
    assert rows.shape == (4, 4)  # 2 steps per epoch (2 pairs dropped each epoch), 2 epochs
    for e in range(2):
        assert len(set(rows[2 * e : 2 * e + 2].ravel())) == 8  # no pair twice in an epoch
    assert not (rows[:2] == rows[2:]).all()  # each epoch its own order
    np.testing.assert_array_equal(np.hstack([worker_rows(rows, r, 2) for r in range(2)]), rows)
    np.testing.assert_array_equal(step_rows(10, 4, 2, seed=0), rows)
    assert [lr_at(i, 10, 1.0, 2) for i in (0, 1, 2, 9)] == [0.5, 1.0, 1.0, 0.125]


def test_settings_validation_is_one_line():
    with pytest.raises(ConfigError, match=r"^train.global_batch=6 must be a multiple of num_workers \(4\)$"):
        validate_settings(TrainSettings(global_batch=6, num_workers=4))
    with pytest.raises(ConfigError, match=r"^train.global_batch=1 must be >= 2"):
        validate_settings(TrainSettings(global_batch=1))


def test_leak_guard_rejects_a_planted_evaluated_question_and_its_translation():
    corpus = pa.table({"id": pa.array([10, 20, 30], pa.int64()), "content_hash": ["a", "b", "c"], "title": ["T", "", ""],
                       "text": ["one", "two", "three"]})
    provided = pa.table({"docid": ["d1", "d2", "d3", "d4", "d5"], "id": pa.array([10, 20, 30, 10, 99], pa.int64()),
                         "lang": ["de", "es", "en", "en", "en"],
                         "text": ["Wer gewann?", "¿Quién ganó?", "Who scored?", "A fresh question", "Lost passage"],
                         "qid": ["q1-de", "q1-es", "q2-en", "q3-en", "q4-en"]})
    evaluated = {"qids": ["q1-de", "q9-en"], "texts": [["de", "Wer gewann?"], ["en", "Who  SCORED"]]}
    pairs, aside = P.provided_pairs(provided, corpus)
    assert aside.to_pylist() == [{"id": 99, "lang": "en", "query": "Lost passage", "qid": "q4-en", "source": "provided", "reason": P.NOT_IN_CORPUS}]
    kept, rejected = P.guard_pairs(pairs, evaluated)
    assert kept["qid"].to_pylist() == ["q3-en"]
    assert kept.slice(0, 1).to_pylist()[0]["title"] == "T"
    assert sorted(zip(rejected["qid"].to_pylist(), rejected["reason"].to_pylist())) == [
        ("q1-de", P.EVALUATED_QID), ("q1-es", P.TRANSLATION), ("q2-en", P.EVALUATED_TEXT)]
    assert P.set_aside_counts(rejected) == {P.EVALUATED_QID: 1, P.EVALUATED_TEXT: 1, P.TRANSLATION: 1}
    # a generated question equal to an evaluated one (case, spacing, final "?") is rejected too, once per duplicate kept
    gen = pa.Table.from_pylist([{"id": 20, "content_hash": "b", "failed": 0, "queries": [
        {"lang": "en", "text": "who scored?"}, {"lang": "en", "text": "new"}, {"lang": "en", "text": "new"}, {"lang": "en", "text": " "}]},
        {"id": 30, "content_hash": "OLD", "failed": 0, "queries": [{"lang": "en", "text": "stale"}]}], schema=GENERATED_SCHEMA)
    gp, gaside = P.generated_pairs(gen, corpus, "gen:x")
    assert sorted(gaside["reason"].to_pylist()) == [P.EMPTY, P.STALE]
    kept, rejected = P.guard_pairs(gp, evaluated)
    assert kept["query"].to_pylist() == ["new"]
    assert P.set_aside_counts(rejected) == {P.DUPLICATE: 1, P.EVALUATED_TEXT: 1}


def test_pairs_hash_is_order_free_and_content_bound():
    _, pairs = corpus_and_pairs(8)
    h = P.pairs_hash(pairs)
    assert P.pairs_hash(pairs.take(pa.array(np.arange(8)[::-1]))) == h
    assert P.pairs_hash(pairs.slice(1)) != h
    changed = pairs.set_column(5, "query", pa.array(["x"] + pairs["query"].to_pylist()[1:]))
    assert P.pairs_hash(changed) != h


# ---------------------------------------------------------------- Ray Train


@pytest.fixture(scope="module")
def trained_one(tmp_path_factory, ray_local, tiny_models):
    """The uninterrupted one-worker run, through train_or_reuse (the reference of the next tests)."""
    root = str(tmp_path_factory.mktemp("train1"))
    _, pairs = corpus_and_pairs()
    t = train_or_reuse(Storage(), root, "t", pairs, encoder(tiny_models), SETTINGS)
    return root, pairs, t


def test_loss_falls_and_the_artifact_is_reused(trained_one, tiny_models):
    root, pairs, t = trained_one
    m = t.manifest
    assert not t.reused and m["cost"]["steps"] == 40 and m["cost"]["resumed_from"] == 0
    per_epoch = m["loss"]["per_epoch"]
    assert len(per_epoch) == 5
    # fixed seed, 40 steps at lr 1e-3: the last epoch's mean loss is under 35% of the first's
    assert per_epoch[-1] < 0.35 * per_epoch[0], per_epoch
    assert not os.path.exists(os.path.join(checkpoints_path(root, "t"), m["key"][:16]))  # checkpoints removed
    again = train_or_reuse(Storage(), root, "t", pairs.take(pa.array(np.arange(64)[::-1])), encoder(tiny_models), SETTINGS)
    assert again.reused and again.manifest == m  # same pairs in another order: same key
    # placement is not part of the key
    assert train_or_reuse(Storage(), root, "t", pairs, encoder(tiny_models), replace(SETTINGS, checkpoint_every=7, num_workers=2)).reused


def test_changed_pairs_retrain(trained_one, tiny_models, monkeypatch):
    from xqg_ray.training import run as run_module
    from xqg_ray.training.trainer import TrainOutcome

    root, pairs, t = trained_one
    calls = []

    def fake_train(pairs, enc, s, storage_path, name, model_dir, storage=None):
        """Training itself is tested above; here only whether train_or_reuse trains (the reference's weights)."""
        calls.append(pairs.num_rows)
        shutil.copytree(load_artifact(Storage(), root, t.manifest), model_dir, dirs_exist_ok=True)
        return TrainOutcome(model_dir=model_dir, steps=7, resumed_from=0, pairs=56, epochs=1, global_batch=8, losses=[1.0] * 7, loop_seconds=1.0)

    monkeypatch.setattr(run_module, "train_encoder", fake_train)
    assert train_or_reuse(Storage(), root, "t", pairs, encoder(tiny_models), SETTINGS).reused and calls == []
    fewer = pairs.slice(0, 56)  # one pair set changed: another key, trained
    t2 = train_or_reuse(Storage(), root, "t", fewer, encoder(tiny_models), SETTINGS)
    assert calls == [56] and not t2.reused and t2.manifest["key"] != t.manifest["key"] and t2.manifest["cost"]["steps"] == 7
    assert current_artifact(Storage(), root, "t")["key"] == t2.manifest["key"]
    # another training setting (lr) or base-encoder setting (pooling) is another key too
    train_or_reuse(Storage(), root, "t", pairs, encoder(tiny_models), replace(SETTINGS, lr=2e-3))
    train_or_reuse(Storage(), root, "t", pairs, replace(encoder(tiny_models), pooling="cls"), SETTINGS)
    assert calls == [56, 64, 64]
    assert find_artifact(Storage(), root, "t", t.manifest["key"]) == t.manifest  # the first is still there


def test_artifact_sha256_checked_on_load(trained_one, tmp_path):
    from xqg_ray.models.encoder import Encoder

    root, _, t = trained_one
    path = load_artifact(Storage(), root, t.manifest)
    enc = Encoder(EncoderConfig(model=path, pooling="mean"))
    assert enc.encode(["who won"], "query").shape == (1, 32)
    copy = tmp_path / "copy"
    shutil.copytree(root, copy)
    f = copy / "trained" / "t" / t.manifest["key"][:16] / "model" / "model.safetensors"
    data = bytearray(f.read_bytes())
    data[len(data) // 2] ^= 1
    f.write_bytes(bytes(data))
    with pytest.raises(IntegrityError, match=r"model\.safetensors does not match its sha256") as e:
        load_artifact(Storage(), str(copy), t.manifest)
    assert "\n" not in str(e.value)


def test_two_workers_equal_one(trained_one, tiny_models, tmp_path):
    from xqg_ray.training.trainer import train_encoder

    root, pairs, t = trained_one
    two = replace(SETTINGS, num_workers=2)
    out = train_encoder(pairs, encoder(tiny_models), two, str(tmp_path / "ck"), "two", str(tmp_path / "m2"))
    assert out.steps == 40
    one = weights(load_artifact(Storage(), root, t.manifest))
    base = weights(tiny_models["tiny-bert"])
    assert max_diff(one, base) > 1e-2  # training moved the weights
    assert max_diff(weights(out.model_dir), one) < ONE_VS_TWO_ATOL


# The killed driver: the test's pairs (a Parquet file) and SETTINGS (as JSON), not this module, which imports torch.
KILLED = """
import json, ray, pyarrow.parquet as pq
from xqg_ray.config import EncoderConfig
from xqg_ray.store.storage import Storage
from xqg_ray.training.run import train_or_reuse
from xqg_ray.training.settings import TrainSettings
ray.init(address={address!r}, logging_level="WARNING")
enc = EncoderConfig(model={model!r}, pooling="mean", query_prefix="query: ", passage_prefix="passage: ")
train_or_reuse(Storage(), {root!r}, "t", pq.read_table({pairs!r}), enc, TrainSettings(**json.loads({settings!r})))
"""


def snapshot_recorded(path: Path) -> bool:
    """Ray Train has recorded a checkpoint: its snapshot is there and whole (Ray writes it in place)."""
    try:
        return bool(json.loads(path.read_text()))
    except (OSError, ValueError):
        return False


def test_a_damaged_checkpoint_snapshot_is_dropped(tmp_path):
    """A snapshot cut short by a kill is deleted (the run starts again); a whole one is kept."""
    from xqg_ray.training.trainer import SNAPSHOT, drop_damaged_snapshot

    run = tmp_path / "run"
    run.mkdir()
    assert drop_damaged_snapshot(Storage(), str(run)) is False  # none there
    (run / SNAPSHOT).write_text('{"checkpoints": [')
    assert drop_damaged_snapshot(Storage(), str(run)) is True and not (run / SNAPSHOT).exists()
    (run / SNAPSHOT).write_text("")
    assert drop_damaged_snapshot(Storage(), str(run)) is True and not (run / SNAPSHOT).exists()
    (run / SNAPSHOT).write_text('{"checkpoints": []}')
    assert drop_damaged_snapshot(Storage(), str(run)) is False and (run / SNAPSHOT).read_text() == '{"checkpoints": []}'


def test_kill_and_resume_from_a_checkpoint(trained_one, ray_local, tiny_models, tmp_path):
    # The killed driver joins this process's cluster, as a job on a shared cluster does (no cluster of its own to
    # start); its trainer's actors end with its job, which the resumed run waits for.
    ref_root, pairs, ref = trained_one
    root = str(tmp_path / "killed")
    run_dir = Path(checkpoints_path(root, "t")) / ref.manifest["key"][:16]
    address = ray_local.get_runtime_context().gcs_address
    pairs_file = tmp_path / "pairs.parquet"
    pq.write_table(pairs, pairs_file)
    code = KILLED.format(model=tiny_models["tiny-bert"], root=root, address=address, pairs=str(pairs_file),
                         settings=json.dumps(asdict(SETTINGS)))
    log = tmp_path / "killed.log"  # the run's output: why it ended, if it ends before the kill
    with open(log, "w") as out:
        proc = subprocess.Popen([sys.executable, "-c", code], cwd=REPO, start_new_session=True, stdout=out, stderr=subprocess.STDOUT)
    try:
        t0 = time.time()
        while time.time() - t0 < 180:
            if snapshot_recorded(run_dir / "checkpoint_manager_snapshot.json"):
                break
            if proc.poll() is not None:
                pytest.fail(f"the training run ended (rc {proc.returncode}) before its first checkpoint; its output ends:\n"
                            + log.read_text(errors="replace")[-3000:])
            time.sleep(0.02)
    finally:
        proc.kill()  # SIGKILL the driver; the cluster ends its job's actors (the trainer's controller and worker)
        proc.wait()
        wait_for_other_jobs()
    assert not (Path(root) / "trained" / "t" / "current.json").exists()  # it did not finish
    resumed = train_or_reuse(Storage(), root, "t", pairs, encoder(tiny_models), SETTINGS)
    cost = resumed.manifest["cost"]
    assert not resumed.reused and resumed.manifest["key"] == ref.manifest["key"]
    assert 0 < cost["resumed_from"] < 40 and cost["resumed_from"] % 10 == 0 and cost["steps"] == 40, cost
    got = weights(load_artifact(Storage(), root, resumed.manifest))
    assert max_diff(got, weights(load_artifact(Storage(), ref_root, ref.manifest))) < RESUME_ATOL
