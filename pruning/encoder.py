"""A compact BERT encoder that physically drops tokens between layers.

Readable in one sitting: embeddings, a loop over layers, a keep step. It holds weights in
the standard BERT layout (see ``checkpoint.py`` for the mapping) and depends on nothing in
transformers. A layer that prunes computes attention probabilities explicitly, scores each
token by the attention it receives (mean over heads and real query rows), and gathers the
kept tokens *before* its output projection and FFN, so everything after the scoring runs
on fewer tokens. Layers that do not prune use fused SDPA attention.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .config import ModelShape, PruningConfig

ACTIVATIONS: dict[str, Callable[[Tensor], Tensor]] = {
    "gelu": F.gelu,
    "gelu_new": lambda x: F.gelu(x, approximate="tanh"),
    "gelu_pytorch_tanh": lambda x: F.gelu(x, approximate="tanh"),
    "relu": F.relu,
}


@dataclass
class EncoderConfig:
    vocab_size: int = 30522
    hidden_size: int = 768
    num_layers: int = 12
    num_heads: int = 12
    intermediate_size: int = 3072
    max_position_embeddings: int = 512
    type_vocab_size: int = 2
    layer_norm_eps: float = 1e-12
    hidden_act: str = "gelu"
    hidden_dropout: float = 0.1
    attention_dropout: float = 0.1
    num_labels: int = 2
    pad_token_id: int = 0
    hf_config: dict = field(default_factory=dict, repr=False)  # the original config.json

    @property
    def shape(self) -> ModelShape:
        return ModelShape(self.num_layers, self.hidden_size, self.num_heads,
                          self.intermediate_size)


@dataclass
class ForwardInfo:
    """What the pruning did: tokens alive after each layer, per example (real tokens only)."""

    kept: list[Tensor] = field(default_factory=list)  # [B] counts after each layer
    kept_index: list[Tensor] = field(default_factory=list)  # [B, K] original positions
    scores: list[Tensor | None] = field(default_factory=list)  # importance at pruning layers


def importance(probs: Tensor, valid: Tensor | None) -> Tensor:
    """Attention received by each key, averaged over heads and real query rows. [B, N]."""
    if valid is None:
        return probs.mean(dim=(1, 2))
    w = valid.to(probs.dtype)  # [B, N] query weights
    per_row = probs.sum(dim=1)  # [B, N_q, N_k]
    s = torch.einsum("bq,bqk->bk", w, per_row) / (w.sum(1, keepdim=True) * probs.shape[1])
    return s.masked_fill(~valid, 0.0)


class Embeddings(nn.Module):
    def __init__(self, c: EncoderConfig) -> None:
        super().__init__()
        self.word = nn.Embedding(c.vocab_size, c.hidden_size, padding_idx=c.pad_token_id)
        self.position = nn.Embedding(c.max_position_embeddings, c.hidden_size)
        self.token_type = nn.Embedding(c.type_vocab_size, c.hidden_size)
        self.ln = nn.LayerNorm(c.hidden_size, eps=c.layer_norm_eps)
        self.drop = nn.Dropout(c.hidden_dropout)

    def forward(self, input_ids: Tensor, token_type_ids: Tensor | None) -> Tensor:
        n = input_ids.shape[1]
        x = self.word(input_ids) + self.position.weight[:n]
        if token_type_ids is None:
            x = x + self.token_type.weight[0]
        else:
            x = x + self.token_type(token_type_ids)
        return self.drop(self.ln(x))


class Layer(nn.Module):
    def __init__(self, c: EncoderConfig) -> None:
        super().__init__()
        d = c.hidden_size
        self.num_heads = c.num_heads
        self.head_dim = d // c.num_heads
        self.qkv = nn.Linear(d, 3 * d)  # fused query/key/value: one GEMM instead of three
        self.attn_out = nn.Linear(d, d)
        self.ln1 = nn.LayerNorm(d, eps=c.layer_norm_eps)
        self.ffn_in = nn.Linear(d, c.intermediate_size)
        self.ffn_out = nn.Linear(c.intermediate_size, d)
        self.ln2 = nn.LayerNorm(d, eps=c.layer_norm_eps)
        self.act = ACTIVATIONS[c.hidden_act]
        self.drop = nn.Dropout(c.hidden_dropout)
        self.attn_drop_p = c.attention_dropout

    def attention(self, x: Tensor, valid: Tensor | None, need_probs: bool
                  ) -> tuple[Tensor, Tensor | None]:
        """Multi-head attention context [B, N, d]; probabilities [B, H, N, N] if asked."""
        B, N, d = x.shape
        q, k, v = self.qkv(x).view(B, N, 3, self.num_heads, self.head_dim).permute(
            2, 0, 3, 1, 4)
        p_drop = self.attn_drop_p if self.training else 0.0
        if not need_probs:
            mask = None if valid is None else valid[:, None, None, :]
            ctx = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=p_drop)
            probs = None
        else:
            att = (q @ k.transpose(-1, -2)) * (1.0 / math.sqrt(self.head_dim))
            if valid is not None:
                att = att.masked_fill(~valid[:, None, None, :], float("-inf"))
            probs = att.softmax(-1)
            ctx = F.dropout(probs, p_drop, self.training) @ v
        return ctx.transpose(1, 2).reshape(B, N, d), probs

    def finish(self, x: Tensor, ctx: Tensor) -> Tensor:
        """Output projection, residual, FFN: per-token work, run on the kept tokens only."""
        h = self.ln1(x + self.drop(self.attn_out(ctx)))
        return self.ln2(h + self.drop(self.ffn_out(self.act(self.ffn_in(h)))))


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
    K = int(counts.max())
    top = s.topk(K, dim=1, sorted=True).indices  # best first
    if B == 1 or bool((counts == K).all()):
        return top.sort(dim=1).values, None
    rank = torch.arange(K, device=s.device)
    new_valid = rank[None, :] < counts[:, None]
    # Push slots beyond each example's count to the end, keep kept tokens in original order.
    idx = torch.where(new_valid, top, top.new_full((), N)).sort(dim=1).values
    return idx.clamp_max(N - 1), new_valid


def gather(x: Tensor, idx: Tensor) -> Tensor:
    return x.gather(1, idx[:, :, None].expand(-1, -1, x.shape[-1]))


class PrunedBert(nn.Module):
    """BERT sequence classifier whose forward pass drops tokens per a ``PruningConfig``."""

    def __init__(self, c: EncoderConfig, pruning: PruningConfig | None = None) -> None:
        super().__init__()
        self.config = c
        self.embeddings = Embeddings(c)
        self.layers = nn.ModuleList(Layer(c) for _ in range(c.num_layers))
        self.pooler = nn.Linear(c.hidden_size, c.hidden_size)
        self.classifier = nn.Linear(c.hidden_size, c.num_labels)
        self.drop = nn.Dropout(c.hidden_dropout)
        self.pruning = pruning or PruningConfig.dense(c.shape)
        self.pruning.check_shape(c.shape)
        self.tokenizer = None  # set by checkpoint.load

    @property
    def shape(self) -> ModelShape:
        return self.config.shape

    def set_pruning(self, pruning: PruningConfig) -> None:
        pruning.check_shape(self.shape)
        self.pruning = pruning

    def forward(self, input_ids: Tensor, attention_mask: Tensor | None = None,
                token_type_ids: Tensor | None = None, pruning: PruningConfig | None = None,
                info: ForwardInfo | None = None) -> Tensor:
        """Logits [B, num_labels]. Pass ``info`` to record what was kept."""
        cfg = pruning or self.pruning
        x = self.embeddings(input_ids, token_type_ids)
        valid = None if attention_mask is None or bool(attention_mask.all()) \
            else attention_mask.bool()
        n_real = (attention_mask.sum(1) if attention_mask is not None
                  else torch.full((x.shape[0],), x.shape[1], device=x.device)).long()
        pos = None  # original positions of surviving tokens, only tracked for ``info``
        if info is not None:
            pos = torch.arange(x.shape[1], device=x.device).expand(x.shape[0], -1)
        for l, layer in enumerate(self.layers):
            prunes = cfg.prunes_at(l)
            ctx, probs = layer.attention(x, valid, need_probs=prunes)
            scores = None
            if prunes:
                idx, valid, scores = self.keep_step(cfg, l, probs, valid, n_real)
                x, ctx = gather(x, idx), gather(ctx, idx)
                if pos is not None:
                    pos = pos.gather(1, idx)
            x = layer.finish(x, ctx)
            if info is not None:
                alive = valid.sum(1) if valid is not None else torch.full_like(
                    n_real, x.shape[1])
                info.kept.append(torch.minimum(alive, n_real))
                info.kept_index.append(pos)
                info.scores.append(scores)
        pooled = torch.tanh(self.pooler(x[:, 0]))
        return self.classifier(self.drop(pooled))

    def keep_step(self, cfg: PruningConfig, layer: int, probs: Tensor, valid: Tensor | None,
                  n_real: Tensor) -> tuple[Tensor, Tensor | None, Tensor]:
        """Score, count and select: gather indices, the new validity mask, the scores.

        The profiler times exactly this call, so the table holds what inference runs."""
        scores = importance(probs, valid)
        counts = self._counts(cfg, layer, scores, valid, n_real)
        idx, new_valid = select_tokens(scores, valid, counts)
        return idx, new_valid, scores

    @staticmethod
    def _counts(cfg: PruningConfig, layer: int, scores: Tensor, valid: Tensor | None,
                n_real: Tensor) -> Tensor:
        alive = valid.sum(1) if valid is not None else torch.full_like(n_real, scores.shape[1])
        if cfg.policy == "topk":
            want = torch.ceil(n_real.to(torch.float64) * cfg.keep[layer] - 1e-9).long()
        else:  # threshold: every real token at or above theta (CLS always)
            ok = scores >= cfg.thresholds[layer]
            ok[:, 0] = True
            if valid is not None:
                ok &= valid
            want = ok.sum(1)
        return torch.minimum(want.clamp_min(1), alive)
