"""Search space round trip, the fastest-schedule DP, the constraint check and the objective."""
import itertools
import random

import optuna
import pytest

from tp_search.profiler.predictor import Predictor
from tp_search.profiler.synthetic import synthetic_table
from tp_search.pruning import ModelShape, PruningConfig, TpError
from tp_search.search import Checker, Objective, SearchSpace, expected_latency, fastest, keep_key
from tp_search.search.space.candidates import Candidate
from tp_search.search.space.workload import Workload

W64 = Workload("max", 64)  # one input of 64 real tokens


def cand(cfg):
    return Candidate("torch", 0, cfg)
from tp_search.search.space.candidates import prune_param, ratio_param

SHAPE = ModelShape(6, 64, 4, 128)
optuna.logging.set_verbosity(optuna.logging.WARNING)


@pytest.fixture(scope="module")
def pred():
    return Predictor(synthetic_table(SHAPE, max_len=64, ms_per_gmac=2000, overhead_ms=0.001))


def random_params(space, rng):
    params = {}
    for l in space.layers:
        params[prune_param(l)] = rng.random() < 0.5
        if params[prune_param(l)]:
            params[ratio_param(l)] = rng.uniform(space.min_ratio, space.max_ratio)
    return params


@pytest.mark.parametrize("layers", [(), (2, 4), (1,)])
def test_round_trip(layers):
    space = SearchSpace(SHAPE, layers)
    rng = random.Random(0)
    for _ in range(200):
        cfg = space.to_config(random_params(space, rng))
        assert cfg.method == "search" and cfg.keep[0] == 1.0
        assert all(b <= a for a, b in zip(cfg.keep, cfg.keep[1:]))
        assert min(cfg.keep) >= space.floor
        assert all(not cfg.prunes_at(l) for l in range(SHAPE.num_layers) if l not in space.layers)
        back = space.to_config(space.to_params(cfg))
        assert back.keep == cfg.keep
    dense = space.to_params(PruningConfig.dense(SHAPE))
    assert space.to_config(dense).is_dense


def test_floor_and_out_of_space():
    space = SearchSpace(SHAPE, min_ratio=0.2, floor=0.05)
    deep = space.chain()  # every layer at the smallest ratio, clamped at the floor
    assert deep.keep == (1.0, 0.2, 0.05, 0.05, 0.05, 0.05)
    assert space.to_config(space.to_params(deep)).keep == deep.keep
    with pytest.raises(TpError, match="not a candidate layer"):
        SearchSpace(SHAPE, (2, 3)).to_params(PruningConfig.topk(SHAPE, [1, 0.5, 0.5, 0.5, 0.5, 0.5]))
    with pytest.raises(TpError, match="outside the search range"):
        space.to_params(PruningConfig.topk(SHAPE, [1, 0.99, 0.99, 0.99, 0.99, 0.99]))
    with pytest.raises(TpError, match="layer 0 never prunes"):
        SearchSpace(SHAPE, (0, 1))
    with pytest.raises(TpError, match="0 < min <= max < 1"):
        SearchSpace(SHAPE, min_ratio=0.9, max_ratio=0.5)


def test_define_by_run_is_conditional():
    space = SearchSpace(SHAPE)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    for _ in range(30):
        t = study.ask()
        cfg = space.suggest(t)
        study.tell(t, 0.0)
        for l in space.layers:
            assert (ratio_param(l) in t.params) == bool(t.params[prune_param(l)])
        assert space.to_config(t.params).keep == cfg.keep


def test_fastest_matches_brute_force(pred):
    space = SearchSpace(SHAPE)
    c, ms = fastest(space, {"torch": pred}, W64)
    cfg = c.config
    brute = min(pred.predict(space.chain(c), 64) for r in range(len(space.layers) + 1)
                for c in itertools.combinations(space.layers, r))
    assert ms == pytest.approx(brute)
    assert ms == pytest.approx(pred.predict(cfg, 64)) and ms < pred.dense(64)
    rng = random.Random(1)  # nothing in the space is faster
    assert all(pred.predict(space.to_config(random_params(space, rng)), 64) >= ms - 1e-9
               for _ in range(300))


def test_checker_and_expected_latency(pred):
    space = SearchSpace(SHAPE)
    target = 0.7 * pred.dense(64)
    chk = Checker({"m": {"torch": pred}}, target, W64, min_macs_reduction=1.5)
    for cfg in (space.chain(), space.chain(()), space.chain((5,))):
        c = chk(cand(cfg))
        lat_ok = c.latency_ms["m"] <= target
        assert c.constraints[0] == pytest.approx(c.latency_ms["m"] - target)
        assert c.feasible["m"] == (lat_ok and c.macs_reduction >= 1.5)
    assert not chk(cand(space.chain(()))).any_feasible  # dense: neither constraint
    cfg = space.chain((2,))
    lengths = [5, 5, 20, 64]
    exp = expected_latency(pred, cfg, lengths)
    assert exp == pytest.approx(sum(pred.predict(cfg, n) for n in lengths) / 4)
    assert expected_latency(pred, cfg, [65]) is None  # off the table


def test_objective_never_evaluates_infeasible_and_caches(pred):
    space = SearchSpace(SHAPE)
    target = 0.6 * pred.dense(64)
    calls = []

    def evaluator(cfg):
        calls.append(keep_key(cfg.keep))
        return sum(cfg.keep) / len(cfg.keep)

    obj = Objective(space, Checker({"m": {"torch": pred}}, target, W64), evaluator)
    study = optuna.create_study(directions=["maximize", "minimize"],
                                sampler=optuna.samplers.NSGAIISampler(seed=0, population_size=8))
    fast = fastest(space, {"torch": pred}, W64)[0].config
    for _ in range(3):  # the same configuration three times: evaluated once
        study.enqueue_trial(space.to_params(fast))
    study.optimize(obj, n_trials=60)
    attrs = [t.user_attrs["tp"] for t in study.trials]
    for a in attrs:
        if a["latency_ms"]["m"] > target:
            assert a["evaluated"] == "skipped" and a["metric"] is None
        else:
            assert a["metric"] is not None
    assert sorted(calls) == sorted(a["keep_key"] for a in attrs if a["evaluated"] == "yes")
    assert len(calls) == len(set(calls)) == obj.evaluations
    assert obj.cache_hits >= 2 and obj.skipped == sum(a["metric"] is None for a in attrs) > 0
    assert all(t.constraints["latency"] == pytest.approx(t.user_attrs["tp"]["latency_ms"]["m"]
                                                         - target) for t in study.trials)


def test_work_study_compaction_keeps_the_elite(pred):
    from tp_search.search.study.record import Entry
    from tp_search.search.study.working_study import WorkStudy
    space = SearchSpace(SHAPE)
    obj = Objective(space, Checker({"m": {"torch": pred}}, 0.6 * pred.dense(64), W64),
                    lambda cfg: sum(cfg.keep) / len(cfg.keep))
    work = WorkStudy(space, seed=0, population=8, limit=40)
    best = []
    for i in range(120):
        t = work.ask()
        values = obj(t)
        ft = work.tell(t, values)
        assert ft.values == list(values)
        best.append(values[0])
        assert len(work.study.get_trials(deepcopy=False)) < 40
    assert work.compactions >= 2
    kept = max(t.values[0] for t in work.study.get_trials(deepcopy=False) if t.values)
    assert kept == max(best)  # elitism survives the rebuilds
    entries = [Entry("r", i, {}, (0.5, 1.0), {"keep": [1.0] * 6}) for i in range(3)]
    work.migrate(entries)  # other runs' trials join the current generation
    assert sum(t.values == [0.5, 1.0] for t in work.study.get_trials(deepcopy=False)) >= 3
    t = work.ask()  # a migration while a trial runs never swaps the study under it
    before = work.compactions
    work.migrate([Entry("s", i, {}, (0.4, 1.0), {"keep": [1.0] * 6}) for i in range(40)])
    assert work.compactions == before
    ft = work.tell(t, obj(t))
    assert ft.number == t.number and work.compactions == before + 1


def test_dev_reductions_match_macs_report():
    from collections import Counter

    from tp_search.pruning import macs_report
    from tp_search.pruning.macs import reductions as dev_reductions
    lengths = [5, 9, 9, 30, 64, 64, 64, 17]
    for cfg in (SearchSpace(SHAPE).chain(), SearchSpace(SHAPE).chain((3,)),
                PruningConfig.topk(SHAPE, [1, 0.9, 0.5, 0.5, 0.3, 0.3])):
        ref = macs_report(cfg, lengths, 64)
        padded, real = dev_reductions(cfg, Counter(lengths), 64)
        assert padded == pytest.approx(ref.reduction_padded)
        assert real == pytest.approx(ref.reduction_real)


def test_threshold_family_holds_ltps_ramp_and_round_trips():
    """slope 1 is LTP's theta * l / L, slope 0 one threshold for every layer, layer 0 never
    prunes; a family member's parameters are read back from its thresholds."""
    from tp_search.search.space.candidates import SLOPE_RANGE, THETA_RANGE
    space = SearchSpace(SHAPE, policies=("threshold",), ref_length=100.0)
    L = SHAPE.num_layers
    ramp = space.thresholds(2.0, 1.0)
    assert ramp[0] == 0 and ramp == pytest.approx([0.02 * l / L for l in range(L)], abs=1e-8)
    flat = space.thresholds(2.0, 0.0)
    assert flat[0] == 0 and flat[1:] == pytest.approx([0.02] * (L - 1), abs=1e-8)
    lo, hi = space.aggressive().thresholds, space.thresholds(THETA_RANGE[0], 1.0)
    rng = random.Random(3)
    for _ in range(20):
        theta = THETA_RANGE[0] * (THETA_RANGE[1] / THETA_RANGE[0]) ** rng.random()
        slope = rng.uniform(*SLOPE_RANGE)
        t = space.thresholds(theta, slope)
        assert all(a >= b for a, b in zip(lo, t)) and all(a <= b for a, b in zip(hi, t))
        cand = space.to_candidate({"theta": theta, "slope": slope})
        back = space.to_candidate(space.candidate_params(cand))
        assert back.config.thresholds == pytest.approx(t, rel=1e-5, abs=1e-7)


def test_threshold_family_start_layer_leaves_earlier_layers_plain_and_round_trips():
    """start = s: layers before s have threshold 0 (a plain, fused layer: no scoring cost),
    layers from s on follow the family; start is a searched parameter read back from the
    first non-zero threshold."""
    from tp_search.search.space.candidates import START, THETA_RANGE
    space = SearchSpace(SHAPE, policies=("threshold",), ref_length=100.0)
    L = SHAPE.num_layers
    assert space.starts == tuple(range(1, L))
    t = space.thresholds(2.0, 0.5, start=2)
    assert t[:2] == (0.0, 0.0) and all(x > 0 for x in t[2:])
    assert t[2:] == pytest.approx(space.thresholds(2.0, 0.5)[2:])
    cfg = space.threshold_config(2.0, 0.5, 2)
    assert not cfg.prunes_at(1) and cfg.prunes_at(2)
    for start in space.starts:
        cand = space.to_candidate({"theta": 1.3, "slope": 0.4, START: start})
        params = space.candidate_params(cand)
        assert params[START] == start
        back = space.to_candidate(params)
        assert back.config.thresholds == pytest.approx(cand.config.thresholds, rel=1e-5,
                                                       abs=1e-7)
        agg = space.aggressive(start).thresholds
        assert all(a >= b for a, b in zip(agg, cand.config.thresholds))
    # a trial recorded before start existed reads back as LTP's own (every layer prunes)
    old = space.to_candidate({"theta": 1.3, "slope": 0.4})
    assert all(x > 0 for x in old.config.thresholds[1:])
    with pytest.raises(TpError, match="start layer"):
        space.thresholds(THETA_RANGE[0], 1.0, start=L)
