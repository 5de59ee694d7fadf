"""The keep step every pruning layer runs: score, count, select.

Importance is the attention a token *receives* (mean over heads and real query rows); the
count is the policy's (``topk``: a fraction of the example's real length; ``threshold``:
tokens scoring at least theta); selection keeps the best ``count`` tokens in original order.
The physical encoder, the training forward and the profiler all call these functions, so
what is trained, timed and deployed is one computation.
"""
from __future__ import annotations

import torch
from torch import Tensor

from tp_search.pruning.config import KEEP_SCALE, PruningConfig


def importance(probs: Tensor, valid: Tensor | None) -> Tensor:
    """Attention received by each key, averaged over heads and real query rows. [B, N]."""
    if valid is None:
        return probs.mean(dim=(1, 2))
    w = valid.to(probs.dtype)  # [B, N] query weights
    per_row = probs.sum(dim=1)  # [B, N_q, N_k]
    s = torch.einsum("bq,bqk->bk", w, per_row) / (w.sum(1, keepdim=True) * probs.shape[1])
    return s.masked_fill(~valid, 0.0)


def count_kept(cfg: PruningConfig, layer: int, scores: Tensor, valid: Tensor | None,
               n_real: Tensor) -> Tensor:
    """Tokens each example keeps after ``layer`` [B] (CLS included, at least 1); the
    tensor form of ``PruningConfig.kept_counts``'s rounding rule."""
    alive = valid.sum(1) if valid is not None else torch.full_like(n_real, scores.shape[1])
    if cfg.policy == "topk":
        want = keep_count_tensor(cfg.keep[layer], n_real)
    else:  # threshold: every real token at or above theta (CLS always)
        ok = scores >= cfg.thresholds[layer]
        ok[:, 0] = True
        if valid is not None:
            ok &= valid
        want = ok.sum(1)
    return torch.minimum(want.clamp_min(1), alive)


def keep_count_tensor(k: float | Tensor, n_real: Tensor) -> Tensor:
    """``config.keep_count`` as tensors [B], in integers so that an exported graph computes
    the same counts on every runtime (float64 may run as float32 there)."""
    kq = torch.round(torch.as_tensor(k, dtype=torch.float64, device=n_real.device)
                     * KEEP_SCALE).long()
    return torch.div(kq * n_real.long() + (KEEP_SCALE - 1), KEEP_SCALE, rounding_mode="floor")


def select_tokens(scores: Tensor, valid: Tensor | None, counts: Tensor
                  ) -> tuple[Tensor, Tensor | None]:
    """Indices of the ``counts[b]`` best tokens of each example, in original order.

    CLS (position 0) always wins, padding always loses. Returns gather indices [B, K] with
    K = max(counts) and the new validity mask (None when no example is padded).
    """
    B, N = scores.shape
    s = scores.clone()
    if valid is not None:
        s = s.masked_fill(~valid, float("-inf"))
    s[:, 0] = float("inf")
    exporting = torch.compiler.is_exporting()
    if exporting:  # K is data-dependent: computed in the graph, not fixed at export.
        # At least 2 slots (a second, masked one when only CLS survives): shape checks
        # downstream (SDPA broadcasting) must be able to tell K from a broadcast 1.
        K = counts.max().clamp_min(2).item()
        torch._check(K >= 2)
        torch._check(K <= N)
    else:
        K = int(counts.max())
    top = s.topk(K, dim=1, sorted=True).indices  # best first
    if not exporting and (B == 1 or bool((counts == K).all())):  # eager shortcut
        return top.sort(dim=1).values, None
    rank = torch.arange(K, device=s.device)
    new_valid = rank[None, :] < counts[:, None]
    # Push slots beyond each example's count to the end, keep kept tokens in original order.
    idx = torch.where(new_valid, top, top.new_full((), N)).sort(dim=1).values
    return idx.clamp_max(N - 1), new_valid


def gather(x: Tensor, idx: Tensor) -> Tensor:
    return x.gather(1, idx[:, :, None].expand(-1, -1, x.shape[-1]))
