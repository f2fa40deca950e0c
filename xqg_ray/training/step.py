"""One optimiser step of the encoder on a batch of pairs, and its training state as files.

:class:`ContrastiveStep` is the model side of training, the same in a Ray
Train worker and in a bare loop (``bench/train.py``): it tokenizes a batch of
(question, passage) texts, pools each as :class:`~xqg_ray.models.encoder.Encoder`
does (``pool_torch``), takes the contrastive loss and steps AdamW at the
learning rate of that step.

Dropout stays off (the model is in eval mode while it trains): a step is then a
function of the weights and the batch alone, so one worker equals two and a
resumed run equals an uninterrupted one.  Weights train in float32.

Across workers (:class:`Collective`), each worker forwards its share of the
global batch, the embeddings are gathered, and the gradients are averaged by
one all-reduce of a flat buffer -- what DDP's reducer does -- after the
backward.  DDP's wrapper itself is not used: it expects one forward per
backward, and one forward of questions and passages together would pad every
question to the passage length (nearly twice the compute).

A checkpoint directory is a ``save_pretrained`` model and tokenizer (what the
artifact keeps), the optimiser state as ``optimizer.safetensors`` plus
``optimizer.json`` (no pickle), and ``state.json`` (step, losses).
"""

from __future__ import annotations

import json
import os
from typing import Any, Dict, List, Optional, Sequence

import numpy as np
import torch

from ..config import EncoderConfig
from ..models.encoder import pool_torch
from .loss import global_batch_loss, info_nce
from .schedule import lr_at
from .settings import TrainSettings

STATE_FILE = "state.json"
OPTIMIZER_TENSORS = "optimizer.safetensors"
OPTIMIZER_META = "optimizer.json"
# Files of a checkpoint that are training state, not the model.
STATE_FILES = (STATE_FILE, OPTIMIZER_TENSORS, OPTIMIZER_META)


class Collective:
    """The process group as the step needs it: gather rows, average gradients (gloo on CPU, NCCL on GPU)."""

    def __init__(self, rank: int, world: int):
        self.rank, self.world = rank, world

    def gather(self, x: Any) -> Any:
        import torch.distributed as dist

        parts = [torch.empty_like(x) for _ in range(self.world)]
        dist.all_gather(parts, x.detach().contiguous())
        return torch.cat(parts, dim=0)

    def average_gradients(self, params: Sequence[Any]) -> None:
        import torch.distributed as dist

        grads = [p.grad for p in params if p.grad is not None]
        if not grads:
            return
        flat = torch.cat([g.reshape(-1) for g in grads])
        dist.all_reduce(flat)  # one message per step, not one per tensor
        flat /= self.world
        off = 0
        for g in grads:
            g.copy_(flat[off : off + g.numel()].view_as(g))
            off += g.numel()

    def broadcast(self, params: Sequence[Any]) -> None:
        """Rank 0's weights everywhere (they load the same files; this makes sure)."""
        import torch.distributed as dist

        for p in params:
            dist.broadcast(p.data, 0)


def optimizer_files(state: Dict[str, Any]) -> tuple:
    """(tensors for safetensors, JSON-able rest) of an optimiser ``state_dict``."""
    tensors: Dict[str, Any] = {}
    meta: Dict[str, Any] = {"param_groups": state["param_groups"], "state": {}}
    for idx, st in state["state"].items():
        for k, v in st.items():
            if torch.is_tensor(v):
                tensors[f"{idx}.{k}"] = v.detach().cpu().contiguous()
            else:
                meta["state"].setdefault(str(idx), {})[k] = v
    return tensors, meta


def optimizer_state(tensors: Dict[str, Any], meta: Dict[str, Any]) -> Dict[str, Any]:
    """The inverse of :func:`optimizer_files`."""
    state: Dict[int, Dict[str, Any]] = {}
    for name, t in tensors.items():
        idx, k = name.split(".", 1)
        state.setdefault(int(idx), {})[k] = t
    for idx, rest in meta["state"].items():
        state.setdefault(int(idx), {}).update(rest)
    return {"state": state, "param_groups": meta["param_groups"]}


class ContrastiveStep:
    """The encoder, its tokenizer and optimiser; ``step(batch, i)`` trains on one batch and returns the loss."""

    def __init__(self, model_path: str, encoder: EncoderConfig, settings: TrainSettings, total_steps: int,
                 device: str = "cpu", init_from: Optional[str] = None, collective: Optional[Collective] = None):
        from transformers import AutoModel, AutoTokenizer

        self.enc, self.s, self.total, self.device, self.coll = encoder, settings, total_steps, device, collective
        src = init_from or model_path
        self.tokenizer = AutoTokenizer.from_pretrained(src)
        self.model = AutoModel.from_pretrained(src, dtype=torch.float32).to(device).eval()
        self.params = [p for p in self.model.parameters() if p.requires_grad]
        if collective is not None:
            collective.broadcast(self.params)
        self.opt = torch.optim.AdamW(self.params, lr=settings.lr, weight_decay=settings.weight_decay)
        if init_from and os.path.exists(os.path.join(init_from, OPTIMIZER_TENSORS)):
            from safetensors.torch import load_file

            with open(os.path.join(init_from, OPTIMIZER_META)) as f:
                meta = json.load(f)
            self.opt.load_state_dict(optimizer_state(load_file(os.path.join(init_from, OPTIMIZER_TENSORS)), meta))

    def embed(self, texts: Sequence[str], max_len: int) -> Any:
        """Pooled ``[B, H]`` float32 vectors of ``texts``, with gradient."""
        t = self.tokenizer(list(texts), padding=True, truncation=True, max_length=max_len, return_tensors="pt")
        t = {k: v.to(self.device) for k, v in t.items()}
        return pool_torch(self.model(**t).last_hidden_state, t["attention_mask"], self.enc.pooling)

    def step(self, batch: Dict[str, Any], i: int) -> float:
        """Train on ``batch`` (``query``, ``passage`` texts, ``id``; ``negatives`` with hard negatives) as step ``i``; the global loss."""
        lr = lr_at(i, self.total, self.s.lr, self.s.warmup_steps)
        for g in self.opt.param_groups:
            g["lr"] = lr
        self.opt.zero_grad(set_to_none=True)
        q = self.embed(list(batch["query"]), self.enc.max_query_length)
        p = self.embed(list(batch["passage"]), self.enc.max_passage_length)
        hard = None
        if self.s.hard_negatives:
            negs = [n for row in batch["negatives"] for n in list(row)[: self.s.hard_negatives]]
            hard = self.embed(negs, self.enc.max_passage_length)
        ids = torch.as_tensor(np.asarray(batch["id"], np.int64), device=self.device)
        if self.coll is None:
            loss = info_nce(q, p, self.s.temperature, hard, ids)
            value = float(loss.detach())
        else:
            c = self.coll
            all_hard = c.gather(hard) if hard is not None else None
            loss = global_batch_loss(q, p, c.gather(q), c.gather(p), c.rank, c.world, self.s.temperature, hard, all_hard, c.gather(ids))
            value = float(loss.detach()) / c.world
        loss.backward()
        if self.coll is not None:
            self.coll.average_gradients(self.params)
        if self.s.max_grad_norm > 0:
            torch.nn.utils.clip_grad_norm_(self.params, self.s.max_grad_norm)
        self.opt.step()
        return value

    def save(self, d: str, state: Dict[str, Any]) -> None:
        """Write a checkpoint directory: model, tokenizer, optimiser, ``state``."""
        from safetensors.torch import save_file

        os.makedirs(d, exist_ok=True)
        self.model.save_pretrained(d)
        self.tokenizer.save_pretrained(d)
        tensors, meta = optimizer_files(self.opt.state_dict())
        save_file(tensors, os.path.join(d, OPTIMIZER_TENSORS))
        with open(os.path.join(d, OPTIMIZER_META), "w") as f:
            json.dump(meta, f)
        with open(os.path.join(d, STATE_FILE), "w") as f:
            json.dump(state, f)


def read_state(d: str) -> Dict[str, Any]:
    with open(os.path.join(d, STATE_FILE)) as f:
        return json.load(f)


def model_files(d: str) -> List[str]:
    """The files of a checkpoint that make the model (everything but the training state), sorted."""
    return sorted(f for f in os.listdir(d) if os.path.isfile(os.path.join(d, f)) and f not in STATE_FILES)


__all__ = ["Collective", "ContrastiveStep", "STATE_FILES", "model_files", "optimizer_files", "optimizer_state", "read_state"]
