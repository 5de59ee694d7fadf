import json

import pytest

from tp_search.pruning import ModelShape, PruningConfig, TpError, kept_counts, macs_report
from tp_search.pruning.macs import dense_macs, layer_macs, schedule_macs

SHAPE = ModelShape(6, 384, 12, 1536)


def test_roundtrip(tmp_path):
    cfg = PruningConfig.topk(SHAPE, [1, 1, 0.7, 0.5, 0.4, 0.3], method="search",
                             machine="m1", target_ms=20.0)
    cfg.save(tmp_path / "c.json")
    back = PruningConfig.load(tmp_path / "c.json")
    assert back == cfg and back.meta["machine"] == "m1"
    thr = PruningConfig.threshold(SHAPE, [0, 0.01, 0.01, 0.02, 0.02, 0.03])
    assert PruningConfig.from_dict(thr.to_dict()) == thr


@pytest.mark.parametrize("keep,msg", [
    ([1, 1, 0.7], "needs 6 keep fractions"),
    ([1, 1, 0.5, 0.7, 0.4, 0.3], "non-increasing"),
    ([1, 1, 0.7, 0.5, 0.4, 0.0], r"must be in \(0, 1\]"),
    ([1, 1.2, 0.7, 0.5, 0.4, 0.3], r"must be in \(0, 1\]"),
])
def test_invalid_keep(keep, msg):
    with pytest.raises(TpError, match=msg):
        PruningConfig.topk(SHAPE, keep)


def test_invalid_files(tmp_path):
    p = tmp_path / "c.json"
    p.write_text("{not json")
    with pytest.raises(TpError, match="invalid JSON"):
        PruningConfig.load(p)
    p.write_text(json.dumps({"policy": "topk"}))
    with pytest.raises(TpError, match="not a tp-search pruning configuration"):
        PruningConfig.load(p)
    d = PruningConfig.topk(SHAPE, [1] * 6).to_dict()
    d["version"] = 99
    p.write_text(json.dumps(d))
    with pytest.raises(TpError, match="unsupported configuration version"):
        PruningConfig.load(p)
    d["version"] = 1
    d["policy"] = "random"
    p.write_text(json.dumps(d))
    with pytest.raises(TpError, match="unknown pruning policy"):
        PruningConfig.load(p)
    with pytest.raises(TpError, match="not found"):
        PruningConfig.load(tmp_path / "missing.json")


def test_kept_counts_rounding():
    assert kept_counts([1, 0.5, 0.25], 10) == [10, 5, 3]
    assert kept_counts([0.01], 10) == [1]  # CLS always survives
    assert kept_counts([0.7], 10) == [7]  # no float fuzz (0.7*10 = 7.000000000000001)


def test_prunes_at():
    cfg = PruningConfig.topk(SHAPE, [1, 1, 0.7, 0.7, 0.4, 0.4])
    assert [cfg.prunes_at(l) for l in range(6)] == [False, False, True, False, True, False]
    assert PruningConfig.topk(SHAPE, [1] * 6).is_dense


def test_macs_formula_matches_hand_count():
    s = ModelShape(1, 4, 2, 8)
    # 3*N*d^2 + 2*N^2*d + H*N^2 + N'*d^2 + 2*N'*d*f with N=3, N'=2
    assert layer_macs(3, 2, s) == 3 * 3 * 16 + 2 * 9 * 4 + 2 * 9 + 2 * 16 + 2 * 2 * 4 * 8
    assert schedule_macs(3, [3], s) == dense_macs(3, s)


def test_macs_report_both_baselines():
    dense = PruningConfig.dense(SHAPE)
    r = macs_report(dense, [20, 40], max_len=128)
    assert r.reduction_real == pytest.approx(1.0)
    assert r.reduction_padded > 4  # short inputs vs 128 padding
    pruned = PruningConfig.topk(SHAPE, [1, 1, 0.5, 0.5, 0.25, 0.25])
    p = macs_report(pruned, [20, 40], max_len=128)
    assert 1.2 < p.reduction_real < 3 and p.reduction_padded > p.reduction_real
    with pytest.raises(ValueError):
        macs_report(PruningConfig.threshold(SHAPE, [0.1] * 6), [20], 128)


def test_counts_reduction_states_truncation_against_the_untruncated_inputs():
    from tp_search.pruning.macs import counts_reduction
    s = ModelShape(4, 32, 4, 64)
    reqs = [(16, [16, 16, 8, 8]), (10, [10, 10, 10, 10])]  # inputs cut to 16 tokens
    assert counts_reduction(s, reqs) == pytest.approx(
        (dense_macs(16, s) + dense_macs(10, s)) / (
            sum(schedule_macs(n, k, s) for n, k in reqs)))
    cut = counts_reduction(s, reqs, dense_lengths=[40, 10])  # the first was 40 before
    assert cut > counts_reduction(s, reqs)
    assert counts_reduction(s, [(10, [10] * 4)], [10]) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="one length per request"):
        counts_reduction(s, reqs, [40])
