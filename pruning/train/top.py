"""Stage 3 (ToP): constraint-aware training of a searched configuration with L0 gates.

Coarse-to-fine hard-concrete gates decide what each layer drops: a *layer gate* says whether
layer l prunes at all (straight-through binarised), ``bins`` *token gates* say which rank
bins survive (a token's rank among the surviving tokens, divided by their count, picks its
bin). A token is kept by layer l with ``1 - (1 - z_token) * z_layer``, times its keep
decision in layer l-1. The gates start at the searched configuration and a Lagrangian
``l1 (s - t) + l2 (s - t)^2`` (multipliers trained by gradient ascent) holds the expected
sparsity ``s`` (of MACs, or of latency predicted from this machine's lookup table) at the
target ``t``, while logit distillation and a decaying ranking distillation train the
weights. At the end the gates are made hard and exported as a plain top-k configuration
that the encoder runs by physically dropping tokens.

Deliberate differences from the reference, because we start from a searched configuration
rather than from scratch: gates are initialised to that configuration (not all-open) and
the target ramps from the configuration's own sparsity, not from 0. At export the number of
closed token bins is the rounded expected count, and the closed bins are the lowest-ranked
ones, because the encoder keeps the best-ranked tokens.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Callable

import torch
from torch import Tensor, nn

from tp_search.pruning.config import ModelShape, PruningConfig
from tp_search.pruning.core.errors import InfeasibleError, TpError
from tp_search.pruning.macs import dense_macs
from tp_search.pruning.model.encoder import PrunedBert
from tp_search.pruning.train.distillation import (
    RankingDistiller,
    check_pair,
    check_rank_layers,
    default_rank_layers,
    load_teacher,
    teacher_outputs,
)
from tp_search.pruning.train.forward import KeepFn, ranks, train_forward
from tp_search.pruning.train.gates import HardConcrete, graded_log_alpha
from tp_search.pruning.train.stage_inputs import Data, load_model
from tp_search.pruning.train.latency import LatencyModel, require
from tp_search.pruning.train.trainer import run_stage
from tp_search.pruning.train.train_settings import TopSettings
from tp_search.pruning.train.stage import Stage, StepResult

log = logging.getLogger("tp.train")

MIN_KEEP = 1e-6  # a layer whose bins all close keeps only CLS


# --------------------------------------------------------------------------- gates

class TopGates(nn.Module):
    """Layer gates [L] and token-bin gates [L, bins], initialised to a topk configuration."""

    def __init__(self, cfg: PruningConfig, bins: int) -> None:
        super().__init__()
        L = cfg.shape.num_layers
        layer_la, token_la, prev = [], [], 1.0
        for l in range(L):
            if cfg.prunes_at(l):
                layer_la.append(10.0)
                token_la.append(graded_log_alpha(cfg.keep[l] / prev, bins))
            else:
                layer_la.append(-10.0)
                token_la.append(torch.full((bins,), 10.0))
            prev = cfg.keep[l]
        self.bins = bins
        self.layer = HardConcrete(L, torch.tensor(layer_la))
        self.token = HardConcrete((L, bins), torch.stack(token_la))

    def expected_keep(self) -> tuple[Tensor, Tensor]:
        """Expected cumulative keep fraction after each layer [L], P(layer prunes) [L]."""
        p = self.layer.prob_open()
        ratio = 1 - p * (1 - self.token.prob_open().mean(1))
        return torch.cumprod(ratio, 0), p

    def sample(self) -> tuple[Tensor, Tensor]:
        zl = self.layer.sample()
        zl = (zl > 0.5).to(zl.dtype) + zl - zl.detach()  # straight-through binary
        return zl, self.token.sample()

    def hard(self, round_up: frozenset[int] = frozenset()) -> tuple[Tensor, Tensor]:
        """Binary gates: layer gates by the reference's rounding rule; per layer the rounded
        expected number of closed token bins (rounded up in ``round_up``), taken from the
        lowest ranks."""
        zl = self.layer.hard()
        with torch.no_grad():
            expected = (1 - self.token.prob_open()).sum(1)
            closed = expected.round()
            for l in round_up:
                closed[l] = expected[l].ceil()
            closed = closed.long().clamp(0, self.bins)
            pos = torch.arange(self.bins, device=closed.device)
            zt = (pos[None, :] < (self.bins - closed)[:, None]).to(zl.dtype)
        return zl, zt

    def keep_fns(self, zl: Tensor, zt: Tensor) -> dict[int, KeepFn]:
        bins = self.bins

        def make(l: int) -> KeepFn:
            def fn(scores: Tensor, m: Tensor) -> Tensor:
                alive = m > 0
                r = ranks(scores, alive)
                S = alive.sum(1, keepdim=True).clamp_min(1)
                b = torch.div(r * bins, S, rounding_mode="floor").clamp_max(bins - 1)
                z = zt[l][b]
                return 1 - (1 - z) * zl[l]
            return fn
        return {l: make(l) for l in range(zl.shape[0])}

    def rounding_gaps(self) -> list[int]:
        """Layers whose closed-bin count rounded down, largest fraction lost first."""
        with torch.no_grad():
            e = (1 - self.token.prob_open()).sum(1)
            frac = e - e.floor()
            prunes = self.layer.hard() > 0
        return [int(l) for l in torch.argsort(frac, descending=True)
                if prunes[l] and 1e-3 < float(frac[l]) < 0.5]

    def export(self, shape: ModelShape, round_up: frozenset[int] = frozenset(),
               **meta: Any) -> PruningConfig:
        zl, zt = self.hard(round_up)
        keep, prev = [], 1.0
        for l in range(shape.num_layers):
            if zl[l] > 0:
                prev = prev * float(zt[l].sum()) / self.bins
            keep.append(max(round(prev, 6), MIN_KEEP))
        return PruningConfig.topk(shape, keep, method="top", **meta)


# --------------------------------------------------------------------------- costs

Cost = Callable[[Tensor, Tensor], Tensor]  # (keep fraction [L], P(prunes) [L]) -> sparsity


def macs_cost(shape: ModelShape, n: int) -> Cost:
    """Expected MACs sparsity 1 - E[MACs]/dense at ``n`` tokens (pruning.macs's formula)."""
    d, f, H = shape.hidden_size, shape.intermediate_size, shape.num_heads
    dense = float(dense_macs(n, shape))

    def cost(keep: Tensor, prob: Tensor) -> Tensor:
        n_out = n * keep
        n_in = torch.cat([n_out.new_full((1,), float(n)), n_out[:-1]])
        macs = 3 * n_in * d * d + 2 * n_in ** 2 * d + H * n_in ** 2 + n_out * d * d \
            + 2 * n_out * d * f
        return 1 - macs.sum() / dense
    return cost


def latency_cost(predictor: Any, n: int) -> Cost:
    """Predicted-latency sparsity 1 - E[latency]/dense from the machine's lookup table."""
    dense = predictor.dense(n)

    def cost(keep: Tensor, prob: Tensor) -> Tensor:
        # the predictor builds its tables on the CPU; gradients flow through .cpu()
        lat = predictor.torch_latency(n, (n * keep).cpu(), prob.cpu())
        return (1 - lat / dense).to(keep.device)
    return cost


def config_sparsity(cost: Cost, cfg: PruningConfig) -> float:
    L = cfg.shape.num_layers
    keep = torch.tensor(cfg.keep, dtype=torch.float64)
    prob = torch.tensor([float(cfg.prunes_at(l)) for l in range(L)], dtype=torch.float64)
    return float(cost(keep, prob))


# --------------------------------------------------------------------------- stage

class TopExtra(nn.Module):
    def __init__(self, gates: TopGates, penalty: float) -> None:
        super().__init__()
        self.gates = gates
        # Lagrange multipliers (l1, l2), updated by plain gradient ascent after each step
        # (not Adam, whose normalised steps act bang-bang). l2 starts at ``penalty`` > 0:
        # with l2 = 0 the gates, which Adam moves at a steady speed, overshoot the target
        # and oscillate; the quadratic term adds the proportional damping (an augmented
        # Lagrangian) while l1 removes the remaining steady-state gap.
        self.register_buffer("lambdas", torch.tensor([0.0, penalty], dtype=torch.float64))


class TopStage(Stage):
    name = "prune-top"

    def __init__(self, student: PrunedBert, distiller: RankingDistiller, cfg: PruningConfig,
                 s: TopSettings, cost: Cost, target: float, cost_kind: str) -> None:
        self.model, self.d, self.s = student, distiller, s
        self.extra_ = TopExtra(TopGates(cfg, s.bins), s.penalty)
        self.cost, self.target, self.cost_kind = cost, target, cost_kind
        with torch.no_grad():
            self.start = float(cost(*self._expected()))
        self.source_cfg = cfg

    @property
    def gates(self) -> TopGates:
        return self.extra_.gates

    def extra(self) -> nn.Module:
        return self.extra_

    def param_groups(self) -> list[dict[str, Any]]:
        return [{"params": list(self.gates.parameters()), "lr": self.s.gate_lr}]

    def after_update(self, step: int) -> None:
        """Dual ascent: d/dl1 = s - t, d/dl2 = (s - t)^2 at this step's sparsity."""
        gap = self._gap
        lam = self.extra_.lambdas
        lam += self.s.lambda_lr * torch.tensor([gap, gap * gap], dtype=lam.dtype,
                                               device=lam.device)

    def _expected(self) -> tuple[Tensor, Tensor]:
        keep, prob = self.gates.expected_keep()
        return keep.double(), prob.double()

    def target_at(self, step: int, total: int) -> float:
        warm = max(1, int(self.s.target_warmup * total))
        return self.start + (self.target - self.start) * min(1.0, step / warm)

    def alpha_at(self, step: int, total: int) -> float:
        warm = max(1, int(self.s.target_warmup * total))
        return self.s.rank_weight * self.s.rank_decay ** min(1.0, step / warm)

    def step(self, batch: dict[str, Tensor], step: int, total: int) -> StepResult:
        t_logits, rel = self.d.targets(batch)
        zl, zt = self.gates.sample()
        out = train_forward(self.model, batch, prune=self.gates.keep_fns(zl, zt),
                            score_layers=self.d.layers)
        kd = self.d.kd(out.logits, t_logits)
        rank = self.d.rank_loss(out, rel)
        s = self.cost(*self._expected())
        t = self.target_at(step, total)
        l1, l2 = self.extra_.lambdas
        lag = l1 * (s - t) + l2 * (s - t) ** 2
        self._gap = s.item() - t
        alpha = self.alpha_at(step, total)
        loss = kd + alpha * rank + lag.float()
        return StepResult(loss, out.logits, {"kd": kd.item(), "s": s.item(), "t": t,
                                             "lag": lag.item()})

    def pruning_config(self) -> PruningConfig:
        """The hard configuration; where rounding the gates breaks the constraint, the
        layers that lost the most by rounding round up instead, one at a time."""
        meta = dict(source=self.s.config, constraint=self.cost_kind, target_sparsity=self.target)
        up: frozenset[int] = frozenset()
        cfg = self.gates.export(self.model.shape, **meta)
        for l in self.gates.rounding_gaps():
            if config_sparsity(self.cost, cfg) >= self.target - 1e-9:
                break
            up = up | {l}
            cfg = self.gates.export(self.model.shape, round_up=up, **meta)
        return cfg

    def extra_metrics(self) -> dict[str, Any]:
        with torch.no_grad():
            keep, prob = self._expected()
            s = float(self.cost(keep, prob))
        cfg = self.pruning_config()
        return {"top": {
            "constraint": self.cost_kind, "target_sparsity": self.target,
            "start_sparsity": self.start, "expected_sparsity": s,
            "exported_sparsity": config_sparsity(self.cost, cfg),
            "expected_keep": keep.round(decimals=4).tolist(),
            "layer_prune_prob": prob.round(decimals=4).tolist(),
            "lambdas": self.extra_.lambdas.detach().tolist(),
            "source_keep": list(self.source_cfg.keep)}}


def load_topk_config(path: str | None, shape: ModelShape) -> PruningConfig:
    if path is None:
        raise TpError("prune --method top needs --config FILE (a topk configuration, e.g. "
                      "tp-search's best_config.json)")
    cfg = PruningConfig.load(path)
    cfg.check_shape(shape)
    if cfg.policy == "threshold":
        raise TpError(f"{path}: a threshold (LTP) configuration; --method top trains a topk "
                      "configuration (use --method ltp for thresholds)")
    if cfg.policy == "none":
        cfg = PruningConfig.topk(shape, [1.0] * shape.num_layers)
    return cfg


def prune_top(settings: TopSettings, latency: LatencyModel | None = None) -> Path:
    """Train ToP gates from ``settings.config`` on the distilled student; export topk.

    ``latency`` (e.g. a ``profiler.Predictor``) is required with ``settings.latency_ms``: the
    constraint is the latency it predicts.
    """
    s = settings
    if s.teacher is None:
        raise TpError("prune needs --teacher DIR (the fine-tuned dense model) and --model "
                      "DIR (the distilled student)")
    if s.model is None:
        raise TpError("prune needs --model DIR: the student to prune (the output of "
                      "tp-train distill)")
    if s.bins < 2:
        raise TpError(f"--bins must be at least 2, got {s.bins}")
    if not 0 <= s.target_warmup <= 1:
        raise TpError(f"--target-warmup must be in [0, 1], got {s.target_warmup}")
    if s.target_sparsity is not None and not 0 <= s.target_sparsity < 1:
        raise TpError(f"--target-sparsity must be in [0, 1), got {s.target_sparsity}")

    def make(data: Data) -> Stage:
        student = load_model(s.model, data.spec)
        cfg = load_topk_config(s.config, student.shape)
        teacher = load_teacher(s.teacher, data, s.device)
        check_pair(teacher, student)
        L = student.config.num_layers
        layers = check_rank_layers(s.rank_layers or default_rank_layers(L), L)
        d = RankingDistiller(teacher, layers, s.rank_k, s.temperature, data.spec.is_regression,
                             teacher_outputs(teacher, s.teacher, data, s))
        n = s.seq_len or data.max_len
        if s.latency_ms is not None:
            pred = require(latency, "--latency-ms")
            cost, kind = latency_cost(pred, n), "latency"
            target = latency_target(pred, n, s.latency_ms, L)
        else:
            cost, kind = macs_cost(student.shape, n), "macs"
            target = s.target_sparsity if s.target_sparsity is not None \
                else config_sparsity(cost, cfg)
        log.info("prune-top: %s sparsity target %.3f at %d tokens (configuration: %.3f)",
                 kind, target, n, config_sparsity(cost, cfg))
        return TopStage(student, d, cfg, s, cost, target, kind)
    return run_stage(make, s, "prune-top", latency=latency)


def latency_target(pred: Any, n: int, latency_ms: float, L: int) -> float:
    if latency_ms <= 0:
        raise TpError(f"--latency-ms must be positive, got {latency_ms}")
    dense = pred.dense(n)
    floor = pred.predict_counts(n, [1] * L, [True] + [False] * (L - 1))
    if latency_ms < floor:
        raise InfeasibleError(f"--latency-ms {latency_ms:g}: below the predicted latency of "
                              f"keeping only CLS after layer 0 ({floor:.3f} ms at {n} tokens); "
                              "no token pruning can meet it")
    if latency_ms >= dense:
        log.warning("--latency-ms %g is above the dense model's predicted %.3f ms at %d tokens:"
                    " the constraint asks for no pruning", latency_ms, dense, n)
    return max(0.0, 1 - latency_ms / dense)
