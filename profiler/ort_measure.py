"""Latency tables on ONNX Runtime: the encoder's pieces exported as graphs, timed in ORT.

The predictor's components (embeddings; a plain layer's attention and its output
projection + FFN; a pruning layer's scoring attention and keep step; the head) are exported
as five graphs with dynamic batch and length: ``embed``, ``plain`` (every layer, each on the
same input, its own weights: a pass streams all weights as inference does), ``prune`` (every
layer as a pruning layer keeping half), ``finish`` (every layer's projection + FFN) and
``head``. Per-layer costs are graph times divided by the layer count; the attention parts are
``plain - finish`` and ``prune - finish at half the tokens``, so fusions ORT makes inside a
whole layer stay in the measurement. int8 quantizes the same graphs as deployment does.
"""
from __future__ import annotations

import hashlib
import math
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import onnx
import torch
from torch import Tensor, nn

from tp_search.pruning.config import PruningConfig
from tp_search.pruning.model.encoder import PrunedBert
from tp_search.pruning.model.keep import gather
from tp_search.pruning.runtime import get_backend
from tp_search.pruning.runtime.export import cache_dir, digest, export_module
from tp_search.pruning.runtime.ort_backend import quantized, session

GRAPHS = ("embed", "plain", "prune", "finish", "head")


class _Embed(nn.Module):
    def __init__(self, m: PrunedBert) -> None:
        super().__init__()
        self.m = m

    def forward(self, input_ids: Tensor) -> Tensor:
        return self.m.embeddings(input_ids, None)


class _Plain(nn.Module):
    def __init__(self, m: PrunedBert) -> None:
        super().__init__()
        self.m = m

    def forward(self, x: Tensor, mask: Tensor) -> tuple[Tensor, ...]:
        valid = mask.bool()  # as the exported encoder: the mask is always carried
        return tuple(lay.finish(x, lay.attention(x, valid, need_probs=False)[0])
                     for lay in self.m.layers)


class _Prune(nn.Module):
    def __init__(self, m: PrunedBert) -> None:
        super().__init__()
        self.m = m
        self.half = PruningConfig.topk(m.shape, [0.5] * m.shape.num_layers)

    def forward(self, x: Tensor, mask: Tensor) -> tuple[Tensor, ...]:
        valid, n_real = mask.bool(), mask.sum(1)
        outs = []
        for l, lay in enumerate(self.m.layers):
            ctx, probs = lay.attention(x, valid, need_probs=True)
            idx, _, _ = self.m.keep_step(self.half, l, probs, valid, n_real)
            outs.append(lay.finish(gather(x, idx), gather(ctx, idx)))
        return tuple(outs)


class _Finish(nn.Module):
    def __init__(self, m: PrunedBert) -> None:
        super().__init__()
        self.m = m

    def forward(self, x: Tensor, ctx: Tensor) -> tuple[Tensor, ...]:
        return tuple(lay.finish(x, ctx) for lay in self.m.layers)


class _Head(nn.Module):
    def __init__(self, m: PrunedBert) -> None:
        super().__init__()
        self.m = m

    def forward(self, x: Tensor) -> Tensor:
        return self.m.classify(x)


def component_graphs(model: PrunedBert, precision: str, cache: Path | None = None
                     ) -> dict[str, Path]:
    """The five graphs of ``model`` (exported once per weights, cached; int8 quantized)."""
    model = model.eval().cpu()
    L, d = model.shape.num_layers, model.shape.hidden_size
    b, n = torch.export.Dim("batch"), torch.export.Dim("sequence", min=2,
                                                         max=model.config.max_len)
    tok = {0: b, 1: n}
    ids = torch.randint(5, max(6, model.config.vocab_size), (2, 16))
    x, mask = torch.randn(2, 16, model.config.hidden_size), torch.ones(2, 16, dtype=torch.long)
    specs = {"embed": (_Embed(model), (ids,), ["input_ids"], (tok,)),
             "plain": (_Plain(model), (x, mask), ["x", "mask"], (tok, tok)),
             "prune": (_Prune(model), (x, mask), ["x", "mask"], (tok, tok)),
             "finish": (_Finish(model), (x, x), ["x", "ctx"], (tok, tok)),
             "head": (_Head(model), (x,), ["x"], (tok,))}
    base = digest(model, None, False)
    out = {}
    for kind, (mod, args, names, dyn) in specs.items():
        h = hashlib.sha1(f"{base}:{kind}:{L}:{d}:{onnx.__version__}".encode()).hexdigest()[:16]
        path = cache_dir(cache) / f"component-{kind}-{h}.onnx"
        if not path.is_file():
            outputs = ["logits"] if kind in ("embed", "head") else [f"out{l}" for l in range(L)]
            export_module(mod, args, names, outputs, dyn, path)
        out[kind] = quantized(path, cache) if precision == "int8" else path
    return out


class OrtTimers:
    """Sessions of the component graphs; ``at(batch, n)`` gives a timer with PassTimer's
    interface (``warm``, ``plain_pass``, ``pruning_pass``) for one grid point."""

    def __init__(self, model: PrunedBert, backend: str, threads: int) -> None:
        precision = get_backend(backend).precision
        self.sessions = {k: session(p, threads)
                         for k, p in component_graphs(model, precision).items()}
        self.model = model

    def at(self, batch: int, n: int) -> "OrtPassTimer":
        return OrtPassTimer(self, batch, n)


class OrtPassTimer:
    def __init__(self, timers: OrtTimers, batch: int, n: int) -> None:
        m = timers.model
        self.s, self.L = timers.sessions, m.shape.num_layers
        rng = np.random.default_rng(n)
        d = m.config.hidden_size
        half = max(1, math.ceil(n / 2))
        self.ids = rng.integers(5, max(6, min(m.config.vocab_size, 30000)), (batch, n))
        self.x = rng.standard_normal((batch, n, d), dtype=np.float32)
        self.ctx = rng.standard_normal((batch, n, d), dtype=np.float32)
        self.xh = self.x[:, :half].copy()
        self.ch = self.ctx[:, :half].copy()
        self.mask = np.ones((batch, n), dtype=np.int64)

    def _ms(self, kind: str, feed: dict[str, np.ndarray]) -> float:
        t0 = time.perf_counter()
        self.s[kind].run(None, feed)
        return (time.perf_counter() - t0) * 1e3

    def warm(self) -> None:
        self.plain_pass()
        self.pruning_pass()

    def plain_pass(self) -> dict[str, float]:
        embed = self._ms("embed", {"input_ids": self.ids})
        plain = self._ms("plain", {"x": self.x, "mask": self.mask}) / self.L
        finish = self._ms("finish", {"x": self.x, "ctx": self.ctx}) / self.L
        head = self._ms("head", {"x": self.x})
        return {"embed": embed, "attn_sdpa": max(plain - finish, 0.0), "finish": finish,
                "head": head}

    def pruning_pass(self) -> dict[str, float]:
        prune = self._ms("prune", {"x": self.x, "mask": self.mask}) / self.L
        finish_half = self._ms("finish", {"x": self.xh, "ctx": self.ch}) / self.L
        return {"attn_probs": max(prune - finish_half, 0.0), "select": 0.0,
                "finish_half": finish_half}


def full_pass(model: PrunedBert, backend: str, threads: int
              ) -> Callable[[PruningConfig, Tensor], Callable[[], Any]]:
    """Whole-model passes on ``backend`` (calibration, validation): the deployed graph of
    each configuration, timed end to end."""
    if backend == "torch":
        return lambda cfg, ids: (lambda: model(ids, pruning=cfg))
    b = get_backend(backend)

    def make(cfg: PruningConfig, ids: Tensor) -> Callable[[], Any]:
        runner = b.build(model, cfg, threads=threads)
        feed = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
        return lambda: runner(feed)
    return make
