"""Fine-tuning on Ray Train: a ``TorchTrainer`` whose workers read their pairs with Ray Data, checkpoint, and resume.

:func:`train_encoder` is called on the driver with the (guarded) pairs.  It
lays the pairs out per worker and per step (``schedule``), hands each worker
its own Ray Data dataset (``get_dataset_shard("w{rank}")``, not split by Ray:
Ray's split assigns blocks to workers as they ask, and the equality of one
worker and two needs every worker to see exactly its columns of each step),
and runs :func:`train_loop` on ``num_workers`` workers (gloo on CPU, NCCL on GPU).

Checkpoints go through Ray Train's ``Checkpoint`` to
``RunConfig(storage_path, name)`` every ``checkpoint_every`` steps and at the
last.  Resume is Ray Train v2's (the default in Ray 2.60, where
``TorchTrainer.restore``/``can_restore`` only raise a deprecation error): a
new ``fit()`` with the same storage path and name reloads the run's
checkpoint-manager snapshot, and ``ray.train.get_checkpoint()`` in the workers
returns its latest checkpoint, from which the loop continues at the step it
records.  So a driver killed with ``kill -9`` and the same call again resume
from the last checkpoint, not from zero; the caller names the run by what it
trains (the artifact key), so another pair set or setting never resumes the
wrong run.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Dict, List, Optional

import numpy as np
import pyarrow as pa

from ..config import EncoderConfig
from ..errors import UserError, reraise_user_error
from ..store.storage import Storage
from .pairs import canonical_order, training_texts
from .schedule import step_rows, worker_rows
from .settings import TrainSettings, validate_settings

# Rows per Ray Data block of a worker's pairs: small blocks stream; one block per step would be too many.
BLOCK_ROWS = 1024


class TrainError(UserError):
    """Training cannot start for a reason the user can fix (too few pairs for a batch, ...)."""


@dataclass
class TrainOutcome:
    """What a finished training run gives: where the final model files are, and what it cost."""

    model_dir: str  # a local directory: save_pretrained model + tokenizer
    steps: int
    resumed_from: int  # the step this call started at (0: from scratch)
    pairs: int  # pairs per epoch (after dropping each epoch's incomplete last batch)
    epochs: int
    global_batch: int
    losses: List[float] = field(default_factory=list)  # global loss of every step, from step 0
    loop_seconds: float = 0.0  # rank 0's training loop in this call (steps + checkpoints, no start-up)
    wall_seconds: float = 0.0  # the whole call on the driver (Ray Train start-up, model loads, copy-out)
    read_seconds: float = 0.0  # of loop_seconds: waiting for batches from Ray Data
    step_seconds: float = 0.0  # of loop_seconds: the optimiser steps (the rest: checkpoints before the last)
    cpu_seconds: float = 0.0  # CPU time of rank 0's process over its loop (all threads)

    @property
    def pairs_per_s(self) -> float:
        """Pairs trained per second of this call's loop (0 when it trained none)."""
        trained = (self.steps - self.resumed_from) * self.global_batch
        return trained / self.loop_seconds if self.loop_seconds > 0 else 0.0


def worker_tables(texts: pa.Table, settings: TrainSettings) -> List[pa.Table]:
    """Each worker's pairs for every step in order (``query``, ``passage``, ``id``[, ``negatives``], ``step``)."""
    rows = step_rows(texts.num_rows, settings.global_batch, settings.epochs, settings.seed)
    if rows.shape[0] == 0:
        raise TrainError(f"train: {texts.num_rows} pairs are fewer than train.global_batch={settings.global_batch}: "
                         "lower global_batch or add pairs")
    out = []
    for r in range(settings.num_workers):
        mine = worker_rows(rows, r, settings.num_workers)
        t = texts.take(pa.array(mine.reshape(-1)))
        # The step of each row travels with it: the loop checks it never trains a batch as another step.
        out.append(t.append_column("step", pa.array(np.repeat(np.arange(mine.shape[0]), mine.shape[1]), pa.int64())))
    return out


def train_loop(config: Dict[str, Any]) -> None:
    """Ray Train's per-worker loop: load (or resume), step through this worker's pairs, checkpoint."""
    import ray.train
    import ray.train.torch
    import torch
    from ray.train import Checkpoint

    from .step import Collective, ContrastiveStep, read_state

    s = TrainSettings(**config["settings"])
    enc = EncoderConfig(**config["encoder"])
    if s.torch_threads > 0:
        torch.set_num_threads(s.torch_threads)
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    total = config["total_steps"]
    device = str(ray.train.torch.get_device())
    coll = Collective(rank, world) if world > 1 else None
    state: Dict[str, Any] = {"step": 0, "losses": [], "train_seconds": 0.0}
    ckpt = ray.train.get_checkpoint()
    if ckpt is not None:
        with ckpt.as_directory() as d:
            state = read_state(d)
            model = ContrastiveStep(config["model_path"], enc, s, total, device, init_from=d, collective=coll)
    else:
        model = ContrastiveStep(config["model_path"], enc, s, total, device, collective=coll)
    start = int(state["step"])
    b = s.global_batch // world
    shard = ray.train.get_dataset_shard(f"w{rank}")
    t0 = time.perf_counter()
    # Where the loop's time goes (this call): waiting for batches, steps, checkpoints.
    spent = {"read_seconds": 0.0, "step_seconds": 0.0, "checkpoint_seconds": 0.0}
    c0 = time.process_time()  # this worker process's CPU (all its threads): a measure a loaded machine distorts less
    done = start
    t_mark = t0
    for i, batch in enumerate(shard.iter_batches(batch_size=b, batch_format="numpy", prefetch_batches=2)):
        if i < start:  # steps the checkpoint already holds: their rows are read, not trained on
            continue
        if i >= total:
            break
        if not (batch["step"] == i).all():
            raise RuntimeError(f"worker {rank}: the batch read as step {i} holds rows of steps {sorted(set(batch['step'].tolist()))}")
        t_step = time.perf_counter()
        spent["read_seconds"] += t_step - t_mark
        state["losses"].append(model.step(batch, i))
        done = i + 1
        t_mark = time.perf_counter()
        spent["step_seconds"] += t_mark - t_step
        if done % s.checkpoint_every == 0 or done == total:
            loop = t_mark - t0
            state.update(step=done, resumed_from=start, loop_seconds=loop, cpu_seconds=time.process_time() - c0, **spent)
            metrics = {"step": done, "resumed_from": start, "loss": state["losses"][-1], "loop_seconds": loop}
            if rank == 0:
                with tempfile.TemporaryDirectory() as tmp:
                    model.save(tmp, state)
                    ray.train.report(metrics, checkpoint=Checkpoint.from_directory(tmp))
            else:
                ray.train.report(metrics, checkpoint=None)
            t_after = time.perf_counter()
            spent["checkpoint_seconds"] += t_after - t_mark
            t_mark = t_after
    if done != total:
        raise RuntimeError(f"worker {rank} trained to step {done} of {total}: its pairs ended early")


def run_config(storage_path: str, name: str, settings: TrainSettings, storage: Optional[Storage]) -> Any:
    """``RunConfig`` for checkpoints under ``storage_path`` (a local directory or ``s3://``, with the run's S3 settings)."""
    from ray.train import CheckpointConfig, RunConfig

    kw: Dict[str, Any] = {}
    if storage_path.startswith("s3://"):
        # The run's endpoint and credentials, not only the environment's.
        kw["storage_filesystem"] = (storage or Storage()).s3()
        storage_path = storage_path[len("s3://"):]
    else:
        storage_path = os.path.abspath(storage_path)
    # Ray starts its worker processes 15 nice levels below the raylet (its
    # worker_niceness, so a busy node keeps its driver and raylet responsive).  A
    # training worker is the run's one long CPU-bound process: at +15 it got a
    # fraction of the CPU a bare loop gets on a shared machine (bench/train.py: 0.72x
    # at load 38).  Same priority as the driver; on a dedicated node it changes nothing.
    # (Ray's job manager sets the same variable for job drivers.)
    workers = {"env_vars": {"RAY_worker_niceness": "0"}}
    return RunConfig(name=name, storage_path=storage_path, checkpoint_config=CheckpointConfig(num_to_keep=settings.keep_checkpoints),
                     worker_runtime_env=workers, **kw)


# Ray Train v2's record of a run's checkpoints, in the run's directory; Ray writes it in place.
SNAPSHOT = "checkpoint_manager_snapshot.json"


def drop_damaged_snapshot(storage: Storage, run_dir: str) -> bool:
    """Delete ``run_dir``'s checkpoint-manager snapshot when it is not JSON; True when it did.

    A driver killed while Ray Train rewrote it leaves it empty or cut short, and the next
    ``fit()`` then fails to start (Ray's CheckpointManagerInitializationError).  Without it the
    run starts again from step 0: the same result, later, instead of an error.
    """
    import json
    import logging

    from ..store.storage import StorageError

    path = f"{run_dir.rstrip('/')}/{SNAPSHOT}"
    try:
        if not storage.exists(path):
            return False
        json.loads(storage.read_bytes(path).decode("utf-8"))
        return False
    except StorageError:
        return False  # not reachable from here: Ray Train reports what it cannot read
    except (UnicodeDecodeError, ValueError):
        logging.getLogger(__name__).warning("%s is damaged (a run killed while it was written): the training starts again", path)
        storage.delete(path)
        return True


def train_encoder(pairs: pa.Table, encoder: EncoderConfig, settings: TrainSettings, storage_path: str, name: str,
                  model_dir: str, storage: Optional[Storage] = None) -> TrainOutcome:
    """Fine-tune ``encoder`` on ``pairs`` (``PAIRS_SCHEMA``, already guarded); the final model is copied to ``model_dir``.

    ``storage_path``/``name``: where the run's checkpoints live; the same
    call after an interruption resumes from its last checkpoint.
    """
    import ray
    import ray.data
    from ray.data import ExecutionOptions
    from ray.train import DataConfig, ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer

    from ..models.loading import resolve_model
    from .step import model_files, read_state

    t_wall = time.perf_counter()
    s = validate_settings(settings)
    texts = training_texts(canonical_order(pairs), encoder.query_prefix, encoder.passage_prefix, encoder.passage_template)
    if s.hard_negatives and "negatives" not in texts.column_names:
        raise TrainError(f"train.hard_negatives={s.hard_negatives} but the pairs have no negatives column: mine them or set 0")
    tables = worker_tables(texts, s)
    total = tables[0].num_rows // (s.global_batch // s.num_workers)
    datasets = {}
    # A dataset keeps the context it was made in: without bars here, a worker's reads do not
    # redraw a progress line per batch into the driver's log (hundreds per epoch).
    data_ctx = ray.data.DataContext.get_current()
    bars = data_ctx.enable_progress_bars
    data_ctx.enable_progress_bars = False
    try:
        for r, t in enumerate(tables):
            datasets[f"w{r}"] = ray.data.from_arrow([t.slice(o, BLOCK_ROWS) for o in range(0, t.num_rows, BLOCK_ROWS)])
    finally:
        data_ctx.enable_progress_bars = bars
    resources = {"CPU": s.cpus_per_worker, **({"GPU": s.gpus_per_worker} if s.use_gpu else {})}
    trainer = TorchTrainer(
        train_loop,
        train_loop_config={"settings": asdict(s), "encoder": asdict(encoder), "total_steps": total,
                           "model_path": resolve_model(encoder.model).path},
        scaling_config=ScalingConfig(num_workers=s.num_workers, use_gpu=s.use_gpu, resources_per_worker=resources),
        torch_config=TorchConfig(backend="nccl" if s.use_gpu else "gloo"),
        run_config=run_config(storage_path, name, s, storage),
        datasets=datasets,
        # Step i must read step i's rows: Train's default ingest options let Ray Data reorder batches.
        dataset_config=DataConfig(datasets_to_split=[], execution_options=ExecutionOptions(preserve_order=True)),
    )
    drop_damaged_snapshot(storage or Storage(), f"{storage_path.rstrip('/')}/{name}")
    try:
        result = trainer.fit()
    except Exception as e:  # a user error raised in a worker arrives wrapped by Ray Train
        reraise_user_error(e)
        raise
    if result.checkpoint is None:
        raise RuntimeError(f"training run {name} under {storage_path} finished without a checkpoint")
    with result.checkpoint.as_directory() as d:
        state = read_state(d)
        os.makedirs(model_dir, exist_ok=True)
        for f in model_files(d):
            shutil.copyfile(os.path.join(d, f), os.path.join(model_dir, f))
    resumed = int(state.get("resumed_from", 0))
    return TrainOutcome(model_dir=model_dir, steps=int(state["step"]), resumed_from=resumed,
                        pairs=(total // s.epochs) * s.global_batch, epochs=s.epochs, global_batch=s.global_batch, losses=list(state["losses"]),
                        loop_seconds=float(state.get("loop_seconds", 0.0)), wall_seconds=time.perf_counter() - t_wall,
                        read_seconds=float(state.get("read_seconds", 0.0)), step_seconds=float(state.get("step_seconds", 0.0)),
                        cpu_seconds=float(state.get("cpu_seconds", 0.0)))


__all__ = ["BLOCK_ROWS", "TrainError", "TrainOutcome", "run_config", "train_encoder", "train_loop", "worker_tables"]
