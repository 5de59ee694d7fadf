"""Choosing on evidence: candidates the proxy cannot tell from the best are scored again on
more examples before one is chosen.

Every trial is scored on the search's slice (the first ``eval_samples`` of the held-out
train examples). On 300 examples one example is 0.33 points, and a candidate within two
standard errors of the best is not measurably worse. Those contenders — at most
``contenders`` of them, most accurate first — are re-scored on the whole held-out slice
(a second rung of successive halving: fewer candidates, more examples each), each with the
paired 95% interval of its difference to the dense teacher on the same examples.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

from tp_search.pruning.config import PruningConfig
from tp_search.pruning.measure.bootstrap import PairedDifference, paired_difference
from tp_search.pruning.runtime.registry import REFERENCE
from tp_search.search.scoring.proxy import ProxyEvaluator
from tp_search.search.selection.entries import Scored
from tp_search.search.space.candidates import Candidate

CONTENDERS = 8


def noise(metric: float, examples: int) -> float:
    """Two standard errors of a metric in [0, 1] measured on ``examples`` examples
    (binomial; never below one example's worth)."""
    p = min(max(metric, 0.0), 1.0)
    return 2.0 * math.sqrt(max(p * (1.0 - p), 1.0 / examples) / examples)


@dataclass(frozen=True)
class Rescored:
    entry: Scored
    search_metric: float  # on the search's slice
    metric: float  # on the whole held-out slice
    examples: int
    vs_dense: PairedDifference  # against the dense teacher on the same examples


def contenders(ranked: Sequence[Scored], examples: int, limit: int = CONTENDERS
               ) -> list[Scored]:
    """The ranked entries within the proxy's noise of the best, at most ``limit``."""
    if not ranked:
        return []
    floor = ranked[0].metric - noise(ranked[0].metric, examples)
    return [e for e in ranked if e.metric >= floor][:limit]


def rescore(entries: Sequence[Scored], pool: ProxyEvaluator, machine: str) -> list[Rescored]:
    """``entries`` scored on ``pool`` (the whole held-out slice), most accurate first;
    ties go to the slower candidate, as in ``entries.ranked``."""
    if not entries:
        return []
    shape = entries[0].candidate.config.shape
    teacher = pool.result(Candidate(REFERENCE, 0, PruningConfig.dense(shape)))  # fp32
    out = []
    for e in entries:
        r = pool.result(e.candidate)
        out.append(Rescored(e, e.metric, float(r.score), len(r.preds),
                            paired_difference(pool.split.task.metric, r.preds, teacher.preds,
                                              r.labels)))
    return sorted(out, key=lambda x: (-x.metric, -x.entry.latency_ms[machine],
                                      x.entry.number))
