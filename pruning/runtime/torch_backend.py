"""The PyTorch encoder itself, eager fp32: the reference every other backend is exported
from and checked against, and what training runs.

Its profiler timer runs the encoder's own layer methods. Each timed *pass* runs every layer
of the model in order, so weights come from memory the way they do in a real forward pass
(timing one layer in a loop keeps its weights in cache and under-predicts a real pass by
11-19%). Passes alternate between the two kinds of layer the encoder has: a plain layer
(SDPA attention + finish on n tokens) and a pruning layer (explicit attention with scores +
selection n -> n/2 + finish), so neither borrows the other's warm caches. Per-layer costs
are the pass totals divided by the layer count.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Mapping, Sequence

import torch
from torch import Tensor

from ..config import PruningConfig
from ..measure.timed_inputs import fixed_inputs
from ..model.encoder import PrunedBert
from ..model.keep import gather
from .base import Backend, Feeds, TimerFactory
from .registry import REFERENCE


class TorchRunner:
    def __init__(self, model: PrunedBert, cfg: PruningConfig | None = None,
                 threads: int | None = None, backend: str = REFERENCE,
                 schedule: str = "topk") -> None:
        self.model, self.cfg, self.threads = model.eval(), cfg or model.pruning, threads
        self.backend, self.schedule = backend, schedule

    def __call__(self, batch: Mapping[str, Tensor], keep: Sequence[float] | None = None
                 ) -> Tensor:
        cfg = self.cfg if keep is None else (
            PruningConfig.topk(self.model.shape, list(keep)) if self.schedule == "topk"
            else PruningConfig.threshold(self.model.shape, list(keep)))
        return self.model(batch["input_ids"], batch.get("attention_mask"),
                          batch.get("token_type_ids"), pruning=cfg)

    def describe(self) -> dict[str, Any]:
        return {"backend": self.backend, "precision": "fp32",
                "runtime": f"torch {torch.__version__}",
                "threads": self.threads or torch.get_num_threads()}


class TorchBackend(Backend):
    def key(self, threads: int) -> dict[str, Any]:
        return {"backend": self.name, "runtime": f"torch {torch.__version__.split('+')[0]}",
                "threads": threads}

    def build(self, model: PrunedBert, cfg: PruningConfig | None = None, *, threads: int = 1,
              keep_input: bool = False, calibration: Feeds | None = None,
              cache_dir: Path | None = None, schedule: str = "topk") -> TorchRunner:
        return TorchRunner(model, cfg, threads, self.name, schedule)

    def component_timers(self, model: PrunedBert, threads: int) -> TimerFactory:
        device = str(next(model.parameters()).device)
        return lambda batch, n: EncoderPassTimer(model, batch, n, device)

    def full_pass(self, model: PrunedBert, threads: int):
        return lambda cfg, ids: (lambda: model(ids, pruning=cfg))


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


class EncoderPassTimer:
    """Times the components of one model at one (batch, n) with realistic passes."""

    def __init__(self, model: PrunedBert, batch: int, n: int, device: str, seed: int = 0
                 ) -> None:
        self.model, self.device, self.n, self.batch = model, device, n, batch
        self.ids = fixed_inputs(model, None, n, batch, seed + n)["input_ids"].to(device)
        # keep half the tokens at every layer: the selection step n -> n/2
        self.half = PruningConfig.topk(model.shape, [0.5] * model.shape.num_layers)
        self.n_real = torch.full((batch,), n, device=device, dtype=torch.long)

    def _t(self) -> float:
        _sync(self.device)
        return time.perf_counter()

    @torch.inference_mode()
    def warm(self) -> None:
        """One layer of each kind at this shape: cheap, and enough to take first-call costs."""
        m, layer = self.model, self.model.layers[0]
        x = m.embeddings(self.ids, None)
        ctx, _ = layer.attention(x, None, need_probs=False)
        layer.finish(x, ctx)
        self.pruning_pass(layers=1)
        m.classify(x)

    @torch.inference_mode()
    def plain_pass(self) -> dict[str, float]:
        """embed + every layer as a non-pruning layer + head; ms per component (per layer)."""
        m, L = self.model, len(self.model.layers)
        t0 = self._t()
        x = m.embeddings(self.ids, None)
        t1 = self._t()
        sdpa = fin = 0.0
        for layer in m.layers:
            a = self._t()
            ctx, _ = layer.attention(x, None, need_probs=False)
            b = self._t()
            x = layer.finish(x, ctx)
            c = self._t()
            sdpa += b - a
            fin += c - b
        a = self._t()
        m.classify(x)
        b = self._t()
        return {"embed": (t1 - t0) * 1e3, "attn_sdpa": sdpa / L * 1e3,
                "finish": fin / L * 1e3, "head": (b - a) * 1e3}

    @torch.inference_mode()
    def pruning_pass(self, layers: int | None = None) -> dict[str, float]:
        """Every layer as a pruning layer (n -> n/2); each layer gets the same n-token input
        (values do not change latency), and the finish on the kept half is timed.
        ``select`` is the encoder's own keep step (scores, counts, selection) plus the two
        gathers."""
        m, L = self.model, len(self.model.layers)
        x = m.embeddings(self.ids, None)
        probs_t = sel_t = fin_t = 0.0
        for l, layer in enumerate(m.layers[:layers]):
            a = self._t()
            ctx, probs = layer.attention(x, None, need_probs=True)
            b = self._t()
            idx, _, _ = m.keep_step(self.half, l, probs, None, self.n_real)
            xk, ck = gather(x, idx), gather(ctx, idx)
            c = self._t()
            layer.finish(xk, ck)
            d = self._t()
            probs_t += b - a
            sel_t += c - b
            fin_t += d - c
        return {"attn_probs": probs_t / L * 1e3, "select": sel_t / L * 1e3,
                "finish_half": fin_t / L * 1e3}
