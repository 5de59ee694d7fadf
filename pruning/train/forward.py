"""The training forward pass: token pruning by *masking* instead of gathering.

The inference encoder (``pruning.model.encoder``) physically drops tokens. Training needs soft,
differentiable decisions, so here every token stays in the tensor and a keep mask
``m`` in [0, 1] per token does the dropping, as both reference implementations train:
a dropped token is masked out as an attention *key* (weight ``m`` on its softmax term,
i.e. ``log m`` added to the scores) and its hidden state is multiplied by ``m``. With
binary masks this computes exactly what the physical encoder computes (tests check it).

Keep decisions are cumulative: the mask after layer l is the mask after layer l-1 times the
layer's keep factor, so a dropped token never comes back. CLS is always kept.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable, Collection, Mapping

import torch
import torch.nn.functional as F
from torch import Tensor

from tp_search.pruning.config import PruningConfig
from tp_search.pruning.model.encoder import Layer, PrunedBert
from tp_search.pruning.model.keep import importance, keep_count_tensor

# keep factor of a pruning layer: (scores [B, N], mask entering the layer [B, N]) -> [B, N]
KeepFn = Callable[[Tensor, Tensor], Tensor]


@dataclass
class TrainOutput:
    logits: Tensor
    scores: dict[int, Tensor] = field(default_factory=dict)  # importance [B, N] per layer
    keep: list[Tensor] = field(default_factory=list)  # cumulative mask after each layer
    valid: Tensor | None = None  # real (non-padding) tokens [B, N]


def soft_importance(probs: Tensor, weight: Tensor) -> Tensor:
    """``encoder.importance`` with real-valued query weights (a soft keep mask).

    Equal to ``importance(probs, weight > 0)`` when the weights are 0/1; tokens with zero
    weight score 0.
    """
    w = weight.to(probs.dtype)
    s = torch.einsum("bq,bqk->bk", w, probs.sum(1)) / (w.sum(1, keepdim=True) * probs.shape[1])
    return s * (weight > 0)


def _is_binary(m: Tensor) -> bool:
    return bool(((m == 0) | (m == 1)).all())


def _soft_attention(layer: Layer, x: Tensor, m: Tensor, need_probs: bool
                    ) -> tuple[Tensor, Tensor | None]:
    """Attention where key j's softmax term is weighted by m_j (log m_j added to scores)."""
    B, N, d = x.shape
    q, k, v = layer.qkv(x).view(B, N, 3, layer.num_heads, layer.head_dim).permute(2, 0, 3, 1, 4)
    bias = torch.where(m > 0, m.clamp_min(1e-12).log(), float("-inf"))[:, None, None, :]
    bias = bias.to(q.dtype)
    p_drop = layer.attn_drop_p if layer.training else 0.0
    if not need_probs:
        ctx = F.scaled_dot_product_attention(q, k, v, attn_mask=bias, dropout_p=p_drop)
        probs = None
    else:
        probs = ((q @ k.transpose(-1, -2)) * (1.0 / math.sqrt(layer.head_dim)) + bias).softmax(-1)
        ctx = F.dropout(probs, p_drop, layer.training) @ v
    return ctx.transpose(1, 2).reshape(B, N, d), probs


def train_forward(model: PrunedBert, batch: Mapping[str, Tensor],
                  prune: Mapping[int, KeepFn] | None = None,
                  score_layers: Collection[int] = ()) -> TrainOutput:
    """Logits plus importance scores (``score_layers`` and pruning layers) and keep masks.

    ``prune[l]`` maps layer l's scores and incoming mask to a keep factor; layers without
    an entry keep every token. Works in train and eval mode (dropout follows the model).
    """
    prune = prune or {}
    ids, am = batch["input_ids"], batch["attention_mask"]
    x = model.embeddings(ids, batch.get("token_type_ids"))
    valid = am.bool()
    m = valid.to(x.dtype)
    out = TrainOutput(logits=x.new_empty(0), valid=valid)
    for l, layer in enumerate(model.layers):
        need = l in prune or l in score_layers
        if _is_binary(m):
            alive = m > 0
            ctx, probs = layer.attention(x, None if bool(alive.all()) else alive, need)
            scores = importance(probs, alive) if need else None
        else:
            ctx, probs = _soft_attention(layer, x, m, need)
            scores = soft_importance(probs, m) if need else None
        if scores is not None:
            out.scores[l] = scores
        x = layer.finish(x, ctx)
        if l in prune:
            f = prune[l](scores, m)
            f = torch.cat([torch.ones_like(f[:, :1]), f[:, 1:]], dim=1)  # CLS always stays
            m = m * f
            x = x * m[..., None]
        out.keep.append(m)
    out.logits = model.classify(x)
    return out


def ranks(scores: Tensor, alive: Tensor) -> Tensor:
    """Rank of each token among the alive ones (0 = best; CLS first, dead tokens last)."""
    s = scores.masked_fill(~alive, float("-inf"))
    s[:, 0] = float("inf")
    order = s.argsort(dim=1, descending=True, stable=True)
    r = torch.empty_like(order)
    r.scatter_(1, order, torch.arange(order.shape[1], device=order.device).expand_as(order))
    return r


def topk_keep_fns(cfg: PruningConfig, n_real: Tensor) -> dict[int, KeepFn]:
    """Binary keep functions reproducing the encoder's topk policy (for checks and evals)."""
    fns: dict[int, KeepFn] = {}
    for l in range(cfg.shape.num_layers):
        if not cfg.prunes_at(l):
            continue

        def fn(scores: Tensor, m: Tensor, k: float = cfg.keep[l]) -> Tensor:
            alive = m > 0
            want = keep_count_tensor(k, n_real).clamp_min(1)
            count = torch.minimum(want, alive.sum(1))
            return (ranks(scores, alive) < count[:, None]).to(m.dtype)
        fns[l] = fn
    return fns


def threshold_keep_fns(thresholds: Tensor | list[float], temperature: float | None = None
                       ) -> dict[int, KeepFn]:
    """LTP keep functions: sigmoid((s - theta) / T) (soft) or s >= theta (T None, binary)."""
    fns: dict[int, KeepFn] = {}
    for l in range(len(thresholds)):
        if l == 0:
            continue  # layer 0 never prunes (LTP)

        def fn(scores: Tensor, m: Tensor, l: int = l) -> Tensor:
            theta = thresholds[l]
            if temperature is None:
                return (scores >= theta).to(m.dtype)
            return torch.sigmoid((scores - theta) / temperature)
        fns[l] = fn
    return fns
