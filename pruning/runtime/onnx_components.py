"""The encoder's pieces as small ONNX graphs, timed on an exported backend for its latency
table.

The predictor's components (embeddings; a plain layer's attention and its output
projection + FFN; a pruning layer's scoring attention and keep step; the head) are exported
as five graphs with dynamic batch and length: ``embed``, ``plain`` (every layer, each on the
same input, its own weights: a pass streams all weights as inference does), ``prune`` (every
layer as a pruning layer keeping half), ``finish`` (every layer's projection + FFN) and
``head``. Per-layer costs are graph times divided by the layer count; the attention parts are
``plain - finish`` and ``prune - finish at half the tokens``, so fusions a runtime makes
inside a whole layer stay in the measurement. A backend turns each graph into a call (an
ONNX Runtime session, an OpenVINO compiled model), quantized as it deploys.
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

from ..config import PruningConfig
from ..model.encoder import PrunedBert
from ..model.keep import gather
from .export import cache_dir, digest, export_module

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


def component_graphs(model: PrunedBert, cache: Path | None = None) -> dict[str, Path]:
    """The five fp32 graphs of ``model`` (exported once per weights, cached)."""
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
        out[kind] = path
    return out


Call = Callable[[dict[str, np.ndarray]], Any]  # one graph, run on a feed


class ComponentTimers:
    """``calls``: one runnable per graph of ``GRAPHS``; ``at(batch, n)`` gives a timer with
    the profiler's interface (``warm``, ``plain_pass``, ``pruning_pass``) for one point."""

    def __init__(self, model: PrunedBert, calls: dict[str, Call]) -> None:
        self.calls, self.model = calls, model

    def at(self, batch: int, n: int) -> "GraphPassTimer":
        return GraphPassTimer(self, batch, n)


class GraphPassTimer:
    def __init__(self, timers: ComponentTimers, batch: int, n: int) -> None:
        m = timers.model
        self.s, self.L = timers.calls, m.shape.num_layers
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
        self.s[kind](feed)
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


def sample_feeds(path: Path, count: int = 8, n: int = 16, seed: int = 0
                 ) -> list[dict[str, np.ndarray]]:
    """Random inputs of an exported graph's input shapes (ids in a small vocabulary range,
    masks all ones): calibration data where only latency matters."""
    rng = np.random.default_rng(seed)
    m = onnx.load(str(path), load_external_data=False)
    inits = {i.name for i in m.graph.initializer}
    out = []
    for _ in range(count):
        feed = {}
        for inp in m.graph.input:
            if inp.name in inits:
                continue
            dims = [d.dim_value or (1 if k == 0 else n)
                    for k, d in enumerate(inp.type.tensor_type.shape.dim)]
            elem = inp.type.tensor_type.elem_type
            if elem == onnx.TensorProto.INT64:
                fill = (np.ones(dims, np.int64) if "mask" in inp.name
                        else rng.integers(5, 100, dims).astype(np.int64))
            elif elem == onnx.TensorProto.DOUBLE:
                fill = np.ones(dims, np.float64)
            else:
                fill = rng.standard_normal(dims).astype(np.float32)
            feed[inp.name] = fill
        out.append(feed)
    return out
