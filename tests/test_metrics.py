"""Classification and regression metrics: accuracy, F1, MCC, correlations, compute/primary."""
from __future__ import annotations

import pytest
from scipy import stats

from tp_search.pruning.data import metrics
from tp_search.pruning.core.errors import TpError


def test_classification_metrics_match_hand_computed_values():
    preds, labels = [1, 1, 1, 0, 0], [1, 1, 0, 1, 0]  # tp=2 fp=1 fn=1 tn=1
    assert metrics.accuracy(preds, labels) == pytest.approx(3 / 5)
    assert metrics.f1(preds, labels) == pytest.approx(2 * 2 / (2 * 2 + 1 + 1))
    assert metrics.matthews_corrcoef(preds, labels) == pytest.approx((2 * 1 - 1 * 1) / (3 * 3 * 2 * 2) ** 0.5)
    assert metrics.matthews_corrcoef([0, 1, 2, 0], [0, 1, 2, 0]) == pytest.approx(1.0)
    assert metrics.matthews_corrcoef([1, 1, 1], [0, 1, 0]) == 0.0  # constant predictor
    assert metrics.f1([0, 0], [1, 0]) == 0.0


def test_correlations_match_scipy_with_ties():
    preds, labels = [0.1, 0.4, 0.4, 2.0, 3.5, 3.5], [1.0, 2.0, 2.0, 2.0, 5.0, 4.0]
    assert metrics.pearson(preds, labels) == pytest.approx(stats.pearsonr(preds, labels)[0])
    assert metrics.spearman(preds, labels) == pytest.approx(stats.spearmanr(preds, labels)[0])
    assert metrics.pearson([1, 2, 3], [2, 4, 6]) == pytest.approx(1.0)


def test_compute_and_primary_follow_glue_conventions():
    assert set(metrics.compute("f1", [1, 0], [1, 1])) == {"accuracy", "f1"}
    assert set(metrics.compute("pearson_spearman", [1.0, 2.0, 3.0], [1.0, 3.0, 2.0])) == {"pearson", "spearman"}
    assert metrics.compute("matthews", [1, 0], [1, 0]) == {"matthews": 1.0}
    assert [metrics.primary(m) for m in ("accuracy", "f1", "matthews", "pearson_spearman")] == \
        ["accuracy", "f1", "matthews", "pearson"]
    with pytest.raises(TpError, match="unknown metric 'bleu'"):
        metrics.compute("bleu", [1], [1])
