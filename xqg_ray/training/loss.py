"""The contrastive loss: InfoNCE over in-batch negatives (and optional hard negatives), pure torch.

Row ``i`` of the score matrix is question ``i`` against every passage of the
batch (then the hard negatives); its positive is passage ``i``.  Scores are
cosine similarities over ``temperature``.  A passage that is the positive of
another question in the batch but also of question ``i`` (two questions of one
passage in one batch) is masked out of row ``i``: it is not a negative.

Across workers, :func:`global_batch_loss` computes the loss of the whole
global batch on every worker, with gradients flowing only through the
worker's own rows, scaled by the number of workers: averaging the workers'
gradients then gives exactly the gradient of the global batch's loss on one
worker (each worker's share of it is its own rows' contribution).
"""

from __future__ import annotations

from typing import Any, Optional


def info_nce(q: Any, p: Any, temperature: float, hard: Optional[Any] = None, ids: Optional[Any] = None) -> Any:
    """Mean cross-entropy of each question against its passage among all passages of the batch.

    ``q``, ``p``: ``[B, H]``; ``hard``: ``[N, H]`` extra negative columns for every row
    (or None); ``ids``: ``[B]`` passage ids, to mask a row's positive repeated elsewhere.
    """
    import torch
    import torch.nn.functional as F

    q = F.normalize(q.float(), dim=1)
    cols = p if hard is None else torch.cat([p, hard], dim=0)
    cols = F.normalize(cols.float(), dim=1)
    scores = q @ cols.T / temperature
    B = q.shape[0]
    if ids is not None:
        same = ids[:, None] == ids[None, :]
        same.fill_diagonal_(False)
        pad = torch.zeros((B, cols.shape[0] - B), dtype=torch.bool, device=scores.device)
        scores = scores.masked_fill(torch.cat([same, pad], dim=1), float("-inf"))
    return F.cross_entropy(scores, torch.arange(B, device=scores.device))


def global_batch_loss(local_q: Any, local_p: Any, all_q: Any, all_p: Any, rank: int, world: int, temperature: float,
                      local_hard: Optional[Any] = None, all_hard: Optional[Any] = None, all_ids: Optional[Any] = None) -> Any:
    """The global batch's :func:`info_nce` x ``world``, differentiable only through this worker's rows.

    ``all_*``: every worker's rows gathered (no gradient), rank-major; ``local_*``: this
    worker's rows with gradient, equal in value to its slice of ``all_*``.
    """
    import torch

    b = local_q.shape[0]

    def splice(all_x: Any, local_x: Any) -> Any:
        n = local_x.shape[0]
        return torch.cat([all_x[: rank * n].detach(), local_x, all_x[(rank + 1) * n :].detach()], dim=0)

    q = splice(all_q, local_q)
    p = splice(all_p, local_p)
    hard = splice(all_hard, local_hard) if local_hard is not None else None
    assert q.shape[0] == b * world
    return info_nce(q, p, temperature, hard, all_ids) * world


__all__ = ["global_batch_loss", "info_nce"]
