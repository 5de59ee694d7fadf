"""Multiply-accumulate counts of the encoder, dense and pruned, against two baselines.

Per layer with N tokens entering and N' surviving its attention (hidden d, heads H, FFN f):
``3*N*d^2 + 2*N^2*d + H*N^2`` (QKV, scores and context, softmax) plus
``N'*d^2 + 2*N'*d*f`` (output projection and FFN, which our encoder runs on the kept
tokens). This is ToP's formula with the output projection also on N'. Embeddings and the
classifier are not counted, as in both papers.

Both baselines are reported because they differ by up to 3x (METHODS.md): *padded*
compares with the dense model run on inputs padded to the task's max length (ToP's
headline), *real* with the dense model on each example's own length (LTP's).
"""
from __future__ import annotations

from collections import Counter
from dataclasses import asdict, dataclass
from typing import Iterable, Mapping, Sequence

from tp_search.pruning.config import ModelShape, PruningConfig


def layer_macs(n_in: int, n_out: int, s: ModelShape) -> int:
    d, f = s.hidden_size, s.intermediate_size
    return 3 * n_in * d * d + 2 * n_in * n_in * d + s.num_heads * n_in * n_in \
        + n_out * d * d + 2 * n_out * d * f


def schedule_macs(n: int, kept: Sequence[int], s: ModelShape) -> int:
    """MACs of one example of real length ``n`` whose layers keep ``kept[l]`` tokens."""
    total, n_in = 0, n
    for k in kept:
        total += layer_macs(n_in, k, s)
        n_in = k
    return total


def dense_macs(n: int, s: ModelShape) -> int:
    return s.num_layers * layer_macs(n, n, s)


def reduction(cfg: PruningConfig, n: int, max_len: int = 0) -> float:
    """Dense MACs of one input of ``n`` real tokens over ``cfg``'s on the same input
    truncated to ``max_len`` (0: not): every lever's share of the work, one number."""
    m = min(n, max_len) if max_len else n
    return dense_macs(n, cfg.shape) / schedule_macs(m, cfg.kept_counts(m), cfg.shape)


def counts_reduction(s: ModelShape, requests: Sequence[tuple[int, Sequence[int]]],
                     dense_lengths: Sequence[int] | None = None) -> float:
    """Dense MACs over pruned MACs of inputs whose kept counts were observed (an
    input-dependent policy): ``requests`` of (real length, kept after each layer).
    ``dense_lengths``: the requests' lengths before truncation, which the dense baseline
    runs (default: the requests' own, i.e. not truncated)."""
    base = [n for n, _ in requests] if dense_lengths is None else dense_lengths
    if len(base) != len(requests):
        raise ValueError("dense_lengths must give one length per request")
    return sum(dense_macs(n, s) for n in base) / sum(schedule_macs(n, k, s)
                                                     for n, k in requests)


def reductions(cfg: PruningConfig, lengths: Mapping[int, int] | Iterable[int], seq_len: int,
               max_len: int = 0) -> tuple[float, float]:
    """(padded, real) reductions over examples of the given real lengths (a length ->
    count mapping, or the lengths; each distinct length computed once): against the dense
    model padded to ``seq_len`` and against it on each example's real length. The pruned
    model sees each input truncated to ``max_len`` (0: not), the baselines do not."""
    counts = lengths if isinstance(lengths, Mapping) else Counter(int(n) for n in lengths)
    s, total = cfg.shape, sum(counts.values())

    def cut(n: int) -> int:
        return min(n, max_len) if max_len else n
    pruned = sum(c * schedule_macs(cut(n), cfg.kept_counts(cut(n)), s)
                 for n, c in counts.items())
    real = sum(c * dense_macs(n, s) for n, c in counts.items())
    return dense_macs(seq_len, s) * total / pruned, real / pruned


@dataclass(frozen=True)
class MacsReport:
    dense_padded: float  # mean over examples
    dense_real: float
    pruned: float
    reduction_padded: float  # dense_padded / pruned
    reduction_real: float

    def to_dict(self) -> dict[str, float]:
        return asdict(self)


def macs_report(cfg: PruningConfig, lengths: Iterable[int], max_len: int,
                kept: Sequence[Sequence[int]] | None = None) -> MacsReport:
    """Mean MACs over examples of the given real lengths.

    ``kept[i][l]``: tokens example i kept after layer l, when the schedule depends on the
    input (threshold policy, measured by the encoder); otherwise derived from ``cfg``.
    """
    lengths = [min(int(n), max_len) for n in lengths]
    if not lengths:
        raise ValueError("macs_report needs at least one input length")
    s = cfg.shape
    if kept is None:
        if cfg.policy == "threshold":
            raise ValueError("threshold configurations need measured kept counts")
        kept = [cfg.kept_counts(n) for n in lengths]
    pruned = sum(schedule_macs(n, k, s) for n, k in zip(lengths, kept)) / len(lengths)
    real = sum(dense_macs(n, s) for n in lengths) / len(lengths)
    padded = float(dense_macs(max_len, s))
    return MacsReport(padded, real, pruned, padded / pruned, real / pruned)
