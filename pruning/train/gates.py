"""Hard-concrete (L0) gates, the parametrisation ToP's coarse-to-fine pruning trains.

A gate is a stretched, clamped binary-concrete variable (Louizos et al. 2018): during
training a sample lies in [0, 1] and is exactly 0 or 1 with non-zero probability, so the
expected number of open gates is differentiable in ``log_alpha`` while samples already look
like the binary decisions used at inference.
"""
from __future__ import annotations

import math

import torch
from torch import Tensor, nn

LIMIT_L, LIMIT_R, TEMPERATURE = -0.1, 1.1, 2.0 / 3.0
EPS = 1e-6


class HardConcrete(nn.Module):
    """``shape`` independent gates with stretch (l, r) = (-0.1, 1.1) and temperature 2/3."""

    def __init__(self, shape: int | tuple[int, ...], init_log_alpha: float | Tensor = 0.0,
                 temperature: float = TEMPERATURE, limit_l: float = LIMIT_L,
                 limit_r: float = LIMIT_R) -> None:
        super().__init__()
        shape = (shape,) if isinstance(shape, int) else tuple(shape)
        init = torch.as_tensor(init_log_alpha, dtype=torch.float32).expand(shape).clone()
        self.log_alpha = nn.Parameter(init)
        self.temperature, self.limit_l, self.limit_r = temperature, limit_l, limit_r

    def prob_open(self) -> Tensor:
        """P(z > 0): the differentiable expected 'gate is on' used for expected costs."""
        shift = self.temperature * math.log(-self.limit_l / self.limit_r)
        return torch.sigmoid(self.log_alpha - shift)

    def sample(self) -> Tensor:
        """One reparametrised sample per gate (gradients flow into ``log_alpha``)."""
        u = torch.rand_like(self.log_alpha).clamp(EPS, 1 - EPS)
        s = torch.sigmoid((u.log() - (-u).log1p() + self.log_alpha) / self.temperature)
        return (s * (self.limit_r - self.limit_l) + self.limit_l).clamp(0.0, 1.0)

    def hard(self) -> Tensor:
        """Deterministic 0/1 gates: the expected number of closed gates (rounded) are closed,
        those with the lowest ``log_alpha`` (the reference's evaluation rule)."""
        with torch.no_grad():
            flat_la = self.log_alpha.flatten()
            closed = int(round(float((1 - self.prob_open()).sum())))
            z = torch.ones_like(flat_la)
            if closed:
                z[flat_la.argsort()[:closed]] = 0.0
            return z.view_as(self.log_alpha)


def log_alpha_for_prob(p: float) -> float:
    """Inverse of ``prob_open`` for one gate (clipped to +-10, the reference's extremes)."""
    p = min(max(p, 1e-6), 1 - 1e-6)
    shift = TEMPERATURE * math.log(-LIMIT_L / LIMIT_R)
    return float(min(10.0, max(-10.0, math.log(p / (1 - p)) + shift)))


def graded_log_alpha(ratio: float, bins: int, slope: float = 2.0) -> Tensor:
    """Token-bin log-alphas whose mean P(open) equals ``ratio``, best-ranked bins most open.

    A ramp over rank (not equal values) so that the bins a configuration drops are the
    low-ranked ones, matching the top-k export; the offset is found by bisection.
    """
    centre = ratio * bins - (torch.arange(bins, dtype=torch.float64) + 0.5)
    shift = TEMPERATURE * math.log(-LIMIT_L / LIMIT_R)

    def mean_p(delta: float) -> float:
        return float(torch.sigmoid(slope * centre + delta - shift).mean())

    lo, hi = -40.0, 40.0
    for _ in range(80):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if mean_p(mid) < ratio else (lo, mid)
    return (slope * centre + (lo + hi) / 2).float()
