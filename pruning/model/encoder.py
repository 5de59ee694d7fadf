"""A compact BERT-family encoder that physically drops tokens between layers.

Readable in one sitting: embeddings, a loop over layers, a keep step, a head. BERT, RoBERTa,
XLM-R, DistilBERT and ELECTRA differ only in what ``EncoderConfig`` says (token types or
not, RoBERTa's position ids, ELECTRA's embedding projection, the head kind in ``heads.py``);
their checkpoint layouts live in ``families.py``. Nothing here depends on transformers.

A layer that prunes computes attention probabilities explicitly, scores each token by the
attention it receives (mean over heads and real query rows), and gathers the kept tokens
*before* its output projection and FFN, so everything after the scoring runs on fewer
tokens. Layers that do not prune use fused SDPA attention.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from tp_search.pruning.config import ModelShape, PruningConfig
from tp_search.pruning.model.heads import ClassificationHead
from tp_search.pruning.model.keep import count_kept, gather, importance, select_tokens

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
    family: str = "bert"  # the checkpoint's model_type (families.py)
    embedding_size: int | None = None  # ELECTRA: embeddings narrower than hidden, projected
    position_offset: int = 0  # RoBERTa/XLM-R: padding_idx + 1, positions count real tokens
    head: str = "pooler"  # heads.HEADS kind
    classifier_dropout: float | None = None  # None: hidden_dropout
    hf_config: dict = field(default_factory=dict, repr=False)  # the original config.json

    @property
    def shape(self) -> ModelShape:
        return ModelShape(self.num_layers, self.hidden_size, self.num_heads,
                          self.intermediate_size)

    @property
    def max_len(self) -> int:
        """Longest input the position embeddings cover (RoBERTa: 514 rows, 512 tokens)."""
        return self.max_position_embeddings - self.position_offset


@dataclass
class ForwardInfo:
    """What the pruning did: tokens alive after each layer, per example (real tokens only)."""

    kept: list[Tensor] = field(default_factory=list)  # [B] counts after each layer
    kept_index: list[Tensor] = field(default_factory=list)  # [B, K] original positions
    scores: list[Tensor | None] = field(default_factory=list)  # importance at pruning layers


class Embeddings(nn.Module):
    """Word + position (+ token type) embeddings, layer norm (+ ELECTRA's projection)."""

    def __init__(self, c: EncoderConfig) -> None:
        super().__init__()
        e = c.embedding_size or c.hidden_size
        self.pad = c.pad_token_id
        self.position_offset = c.position_offset
        self.word = nn.Embedding(c.vocab_size, e, padding_idx=c.pad_token_id)
        self.position = nn.Embedding(c.max_position_embeddings, e)
        # DistilBERT has no token types; ids passed anyway are ignored
        self.token_type = nn.Embedding(c.type_vocab_size, e) if c.type_vocab_size else None
        self.ln = nn.LayerNorm(e, eps=c.layer_norm_eps)
        self.drop = nn.Dropout(c.hidden_dropout)
        self.project = nn.Linear(e, c.hidden_size) if e != c.hidden_size else None

    def forward(self, input_ids: Tensor, token_type_ids: Tensor | None) -> Tensor:
        n = input_ids.shape[1]
        if self.position_offset:  # RoBERTa: real tokens numbered from padding_idx + 1,
            real = (input_ids != self.pad).long()  # pads at padding_idx (a cumsum, no branch)
            pos = torch.cumsum(real, 1) * real + (self.position_offset - 1)
            x = self.word(input_ids) + self.position(pos)
        else:
            x = self.word(input_ids) + self.position.weight[:n]
        if self.token_type is not None:
            x = x + (self.token_type.weight[0] if token_type_ids is None
                     else self.token_type(token_type_ids))
        x = self.drop(self.ln(x))
        return x if self.project is None else self.project(x)


def additive_mask(valid: Tensor) -> Tensor:
    """[B, N] validity as a [B, 1, 1, N] float mask to add to attention scores (0 or -inf:
    the same probabilities as masking; a key mask, and CLS is always valid, so no row is
    all -inf)."""
    zeros = torch.zeros(valid.shape, dtype=torch.float32, device=valid.device)
    return zeros.masked_fill(~valid, float("-inf"))[:, None, None, :]


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
        # an exported graph adds a [B, 1, 1, N] float mask: a boolean one becomes Where (and
        # SDPA's NaN guard) on every [B, H, N, N] score, 15% of ONNX Runtime's time at 512
        mask = None if valid is None else (
            additive_mask(valid) if torch.compiler.is_exporting() else valid[:, None, None, :])
        if not need_probs:
            ctx = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=p_drop)
            probs = None
        else:
            att = (q @ k.transpose(-1, -2)) * (1.0 / math.sqrt(self.head_dim))
            if mask is not None:
                att = att.masked_fill(~mask, float("-inf")) if mask.dtype == torch.bool \
                    else att + mask
            probs = att.softmax(-1)
            ctx = F.dropout(probs, p_drop, self.training) @ v
        return ctx.transpose(1, 2).reshape(B, N, d), probs

    def finish(self, x: Tensor, ctx: Tensor) -> Tensor:
        """Output projection, residual, FFN: per-token work, run on the kept tokens only."""
        h = self.ln1(x + self.drop(self.attn_out(ctx)))
        return self.ln2(h + self.drop(self.ffn_out(self.act(self.ffn_in(h)))))


class PrunedBert(nn.Module):
    """BERT-family sequence classifier whose forward pass drops tokens per a ``PruningConfig``."""

    def __init__(self, c: EncoderConfig, pruning: PruningConfig | None = None) -> None:
        super().__init__()
        self.config = c
        self.embeddings = Embeddings(c)
        self.layers = nn.ModuleList(Layer(c) for _ in range(c.num_layers))
        self.head = ClassificationHead(c.head, c.hidden_size, c.num_labels,
                                       c.hidden_dropout if c.classifier_dropout is None
                                       else c.classifier_dropout)
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
        # eager: an unpadded batch skips the mask (faster SDPA); an exported graph must
        # serve any batch, so it always carries the mask (no branch on tensor values)
        valid = None if attention_mask is None or (
            not torch.compiler.is_exporting() and bool(attention_mask.all())) \
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
        return self.classify(x)

    def classify(self, x: Tensor) -> Tensor:
        """Logits from the final hidden states [B, N, d]: the head reads the first token."""
        return self.head(x)

    def keep_step(self, cfg: PruningConfig, layer: int, probs: Tensor, valid: Tensor | None,
                  n_real: Tensor) -> tuple[Tensor, Tensor | None, Tensor]:
        """Score, count and select: gather indices, the new validity mask, the scores.

        The profiler times exactly this call, so the table holds what inference runs."""
        scores = importance(probs, valid)
        counts = count_kept(cfg, layer, scores, valid, n_real)
        idx, new_valid = select_tokens(scores, valid, counts)
        return idx, new_valid, scores
