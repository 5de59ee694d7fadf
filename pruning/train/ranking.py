"""Ranking distillation (ToP): teach early layers the teacher's last-layer token ranking.

The loss is LambdaLoss (Wang et al., CIKM 2018) with the NDCG-Loss2++ weighting, the
variant ToP uses: a pairwise logistic loss over item pairs whose relevance differs, each
pair weighted by how much swapping it would change NDCG at the current predicted ranks.
Only the teacher's top-K tokens carry relevance (K - rank), so the student is pushed to get
the important tokens right rather than to order the unimportant tail.
"""
from __future__ import annotations

import math

import torch
from torch import Tensor

IGNORE = -1.0  # relevance of items that are not ranked (padding, CLS)


def teacher_relevance(scores: Tensor, valid: Tensor | None, k: int = 20,
                      skip_cls: bool = True) -> Tensor:
    """Relevance labels [B, N]: the teacher's top-k tokens get k, k-1, ..., 1; other real
    tokens 0; padding (and CLS, which is never pruned) ``IGNORE``."""
    B, N = scores.shape
    ok = torch.ones_like(scores, dtype=torch.bool) if valid is None else valid.clone()
    if skip_cls:
        ok[:, 0] = False
    s = scores.masked_fill(~ok, float("-inf"))
    k = max(1, min(k, N))
    top = s.topk(k, dim=1).indices  # best first
    gains = torch.arange(k, 0, -1, dtype=scores.dtype, device=scores.device).expand(B, -1)
    rel = torch.zeros_like(scores).scatter(1, top, gains)
    # With fewer than k rankable tokens some picks are padding: they are overwritten here.
    return rel.masked_fill(~ok, IGNORE)


def lambda_loss(pred: Tensor, rel: Tensor, sigma: float = 1.0, mu: float = 10.0,
                k: int | None = None, eps: float = 1e-10) -> Tensor:
    """NDCG-Loss2++ LambdaLoss, mean over slates. ``pred``, ``rel`` [B, N]; rel < 0 ignored.

    ``k`` truncates the NDCG (pairs where both positions are beyond k do not count).
    """
    B, N = pred.shape
    ignore = rel < 0
    pred = pred.masked_fill(ignore, float("-inf"))
    pred_sorted, order = pred.sort(dim=1, descending=True)
    rel_by_pred = rel.gather(1, order)  # relevance in predicted order, ignored at the end
    ideal = rel.clamp_min(0).sort(dim=1, descending=True).values
    valid_pos = ~ignore.gather(1, order)

    pos = torch.arange(1, N + 1, dtype=pred.dtype, device=pred.device)
    D = torch.log2(1.0 + pos)  # discount at 1-based position
    kk = N if k is None else min(k, N)
    max_dcg = ((2.0 ** ideal[:, :kk] - 1) / D[:kk]).sum(1).clamp_min(eps)
    G = (2.0 ** rel_by_pred.clamp_min(0) - 1) / max_dcg[:, None]  # normalised gains

    # NDCG-Loss2 weights: |1/D(|i-j|) - 1/D(|i-j|+1)| with D(m) = log2(1+m), times |G_i - G_j|
    m = (pos[:, None] - pos[None, :]).abs()
    safe = m.clamp_min(1.0)
    w2 = torch.where(m > 0, (1.0 / torch.log2(1.0 + safe) - 1.0 / torch.log2(2.0 + safe)).abs(),
                     torch.zeros_like(m))
    inv = 1.0 / D
    gdiff = (G[:, :, None] - G[:, None, :]).abs()
    lambdarank = (inv[:, None] - inv[None, :]).abs()  # |1/D_i - 1/D_j|
    weights = (mu * w2[None] + lambdarank[None]) * gdiff

    pairs = (rel_by_pred[:, :, None] > rel_by_pred[:, None, :]) \
        & valid_pos[:, :, None] & valid_pos[:, None, :]
    if k is not None:
        near = (pos[:, None] <= kk) | (pos[None, :] <= kk)
        pairs &= near[None]
    diff = (pred_sorted[:, :, None] - pred_sorted[:, None, :])
    diff = torch.where(pairs, diff, torch.zeros_like(diff)).clamp(-1e8, 1e8)
    logp = torch.nn.functional.logsigmoid(sigma * diff) / math.log(2.0)  # log2, as LambdaLoss
    loss = -(weights * logp * pairs).sum(dim=(1, 2))
    has = pairs.any(dim=(1, 2))
    return (loss * has).sum() / has.sum().clamp_min(1)
