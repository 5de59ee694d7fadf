"""Choosing on evidence: the plan's limits, the paired bootstrap, successive halving's
contenders, the ranking's ties, the held-out slice, checkpoint identity by content."""
from __future__ import annotations

import numpy as np
import pytest

from tp_search.pruning import ModelShape, PruningConfig, TpError
from tp_search.pruning.data.spec import Split, TaskSpec
from tp_search.pruning.measure.bootstrap import paired_difference
from tp_search.pruning.model.digest import checkpoint_digest
from tp_search.pruning.testing import make_tiny_checkpoint
from tp_search.search.selection.entries import Scored, best, pareto, ranked
from tp_search.search.selection.halving import contenders, noise
from tp_search.search.space.candidates import Candidate
from tp_search.search.space.planning import plan

SHAPE = ModelShape(4, 32, 4, 64)


def test_plan_divides_by_the_tail_and_keeps_the_margin_as_a_floor():
    assert plan(20, 90, 0.05).limit_ms == pytest.approx(19.0)  # a quiet machine: the margin
    wide = plan(20, 90, 0.05, tail=1.42, error=0.0)
    assert wide.limit_ms == pytest.approx(20 / 1.42)  # the Intel Xeon's dense p90/median
    both = plan(20, 90, 0.05, tail=1.2, error=0.1)
    assert both.limit_ms == pytest.approx(20 / (1.2 * 1.1))
    assert plan(20, 90, 0.05, tail=0.8).tail == 1.0  # a tail below 1 is noise, not speed


def test_paired_bootstrap_interval_and_verdict():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 400)
    a = y.copy()
    b = y.copy()
    b[:8] = 1 - b[:8]  # the reference misses 8 examples the candidate gets right
    d = paired_difference("accuracy", a, b, y, draws=500)
    assert d.diff == pytest.approx(0.02) and d.low <= d.diff <= d.high
    assert d.low > 0  # paired: the same examples, so a consistent gain is certain
    worse = paired_difference("accuracy", b, a, y, draws=500)
    assert not worse.within(1.0) and worse.within(4.0)
    assert "NOT shown within 1 point" in worse.verdict(1.0)
    with pytest.raises(ValueError):
        paired_difference("accuracy", a[:3], b, y)


def entry(n: int, metric: float, latency: float, backend: str = "torch",
          keep=(1, 0.5, 0.5, 0.5)) -> Scored:
    c = Candidate(backend, 0, PruningConfig.topk(SHAPE, keep))
    return Scored(n, "r", n, None, c, metric, "yes", None, {}, {"m": latency}, {"m": True},
                  1.0)


def test_ranking_ties_go_to_the_slower_schedule_but_one_model_counts_once():
    es = [entry(0, 0.90, 5.0, keep=(1, 0.3, 0.3, 0.3)), entry(1, 0.90, 8.0),
          entry(2, 0.90, 6.0, backend="ov"), entry(3, 0.80, 9.0, keep=(1, 1, 0.9, 0.9))]
    r = ranked(es, "m")
    # entries 1 and 2 are the same fp32 model (schedule, length): the faster one, on ov,
    # stands for both; among different schedules with equal proxy, the slower wins
    assert [e.number for e in r] == [2, 0, 3]
    assert best(es, "m").number == 2
    assert [e.number for e in pareto(es, "m")] == [0]


def test_contenders_are_the_entries_within_the_proxys_noise():
    es = [entry(i, m, 5.0 + i, keep=(1, 1 - i / 20, 0.5, 0.5))
          for i, m in enumerate([0.95, 0.94, 0.90, 0.70])]
    r = ranked(es, "m")
    n = 300
    picked = contenders(r, n)
    assert [e.number for e in picked] == [e.number for e in r
                                          if e.metric >= 0.95 - noise(0.95, n)]
    assert 0.70 not in [e.metric for e in picked] and len(contenders(r, n, limit=1)) == 1
    assert noise(0.95, 300) == pytest.approx(2 * np.sqrt(0.95 * 0.05 / 300))


def test_holdout_is_disjoint_and_nested():
    spec = TaskSpec("t", ("text",), "label", 2, "accuracy")
    s = Split([f"t{i}" for i in range(50)], None, [i % 2 for i in range(50)], spec)
    rest, held = s.holdout(10, seed=3)
    assert len(rest) == 40 and len(held) == 10
    assert not set(rest.texts) & set(held.texts) and set(rest.texts) | set(held.texts) == set(
        s.texts)
    assert held.subset(4, 3).texts == s.subset(10, 3).subset(4, 3).texts  # nested prefix
    with pytest.raises(TpError, match="cannot hold out"):
        s.holdout(50)


def test_a_changed_checkpoint_of_the_same_shape_is_another_checkpoint(tmp_path):
    a = make_tiny_checkpoint(tmp_path / "a", seed=1)
    b = make_tiny_checkpoint(tmp_path / "b", seed=2)  # same shape, same sizes
    assert sorted(f.stat().st_size for f in a.iterdir()) == sorted(
        f.stat().st_size for f in b.iterdir())
    assert checkpoint_digest(a) != checkpoint_digest(b)
    before = checkpoint_digest(a)
    make_tiny_checkpoint(tmp_path / "a", seed=3)  # retrained in place
    assert checkpoint_digest(a) != before
