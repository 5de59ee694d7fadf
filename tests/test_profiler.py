"""Profiler: fingerprint, table I/O, interpolation, lookup rules, resume, CLI errors."""
import json

import pandas as pd
import pytest
import torch

from tp_search.profiler import Predictor, find_table, fingerprint, load_predictor
from tp_search.profiler.build import BuildSettings, build_table
from tp_search.profiler.calibration import random_schedule
from tp_search.profiler.profile_cli import main as profile_main
from tp_search.profiler.grid import MeasureSettings
from tp_search.profiler.table import LatencyTable, default_grid, parse_grid
from tp_search.profiler.synthetic import fake_fingerprint, synthetic_table
from tp_search.pruning import ModelShape, PruningConfig, TpError, random_model
from tp_search.pruning.macs import dense_macs, schedule_macs

SHAPE = ModelShape(6, 384, 12, 1536)
FAST = MeasureSettings(min_repeats=1, max_repeats=1, point_budget_s=0.0, warmup=0, retries=0)


def tiny_arch():
    return dict(num_layers=2, hidden_size=32, num_heads=4, intermediate_size=64)


def test_fingerprint_stable_and_hardware_only():
    a, b = fingerprint(), fingerprint(threads=2)
    assert a.machine_id == b.machine_id  # threads are not part of the id
    assert a.machine_id.endswith(a.hardware_hash) and len(a.hardware_hash) == 6
    other_torch = fake_fingerprint(torch="9.9")
    assert other_torch.machine_id == fake_fingerprint().machine_id  # torch is not hardware
    assert fake_fingerprint("Other CPU").machine_id != fake_fingerprint().machine_id


def test_grid_and_parse():
    g = default_grid(512)
    assert g[0] == 1 and g[-1] == 512 and g == sorted(set(g))
    gaps = [b - a for a, b in zip(g, g[1:])]
    assert max(gaps[:8]) <= 2 and gaps[:-1] == sorted(gaps[:-1])  # dense where it bends
    assert default_grid(100)[-1] == 100 and max(default_grid(100)) == 100
    assert parse_grid("4,8,2", 16) == [1, 2, 4, 8, 16]
    with pytest.raises(TpError, match="above --max-len"):
        parse_grid("1,600", 512)
    with pytest.raises(TpError, match="comma-separated"):
        parse_grid("a,b", 512)


def test_interpolation_between_grid_points():
    t = synthetic_table(SHAPE, max_len=64)
    xs, ys = t.component("finish", 1, 1)
    p = Predictor(t)
    i = xs.index(20)  # grid has 20 and 24: 22 lies halfway
    assert p._lut["finish"][22] == pytest.approx((ys[i] + ys[i + 1]) / 2)
    n = torch.tensor([22.0], requires_grad=True)
    v = p.torch_cost("finish", n)
    assert float(v.detach()) == pytest.approx(p._lut["finish"][22])
    v.sum().backward()
    assert float(n.grad) == pytest.approx((ys[i + 1] - ys[i]) / 4)


def test_predictor_monotone_in_tokens():
    p = Predictor(synthetic_table(SHAPE, max_len=128))
    dense = [p.dense(n) for n in range(1, 129)]
    assert all(b >= a for a, b in zip(dense, dense[1:]))
    keeps = [1, 1, 0.8, 0.6, 0.4, 0.2]
    cfg = PruningConfig.topk(SHAPE, keeps)
    assert p.predict(cfg, 128) < p.dense(128)
    more = PruningConfig.topk(SHAPE, [min(1, k * 1.2) for k in keeps])
    assert p.predict(more, 128) >= p.predict(cfg, 128)
    with pytest.raises(TpError, match="outside the latency table"):
        p.predict(cfg, 200)


def test_torch_latency_matches_lookup_at_integer_counts():
    p = Predictor(synthetic_table(SHAPE, max_len=128))
    cfg = PruningConfig.topk(SHAPE, [1, 1, 0.5, 0.5, 0.25, 0.25])
    kept = torch.tensor(cfg.kept_counts(128), dtype=torch.float64)
    assert float(p.torch_latency(128, kept)) == pytest.approx(p.predict(cfg, 128), rel=1e-9)


def test_table_roundtrip_and_lookup_rules(tmp_path, caplog):
    t = synthetic_table(SHAPE, combos=((1, 1), (8, 2)))
    t.save(tmp_path)
    here = fake_fingerprint()
    back = find_table(SHAPE, results=tmp_path, current=here)
    assert back.combos() == [(1, 1), (8, 2)]
    pd.testing.assert_frame_equal(back.entries.sort_values(["batch", "threads", "component", "n"])
                                  .reset_index(drop=True),
                                  pd.read_csv(t.paths(tmp_path)[0]))
    # another machine's table is never used silently ...
    with pytest.raises(TpError, match="no latency table .* on this machine.*--machine"):
        find_table(SHAPE, results=tmp_path, current=fake_fingerprint("Other CPU"))
    # ... unless named on purpose
    assert find_table(SHAPE, machine=t.machine_id, results=tmp_path,
                      current=fake_fingerprint("Other CPU")).machine_id == t.machine_id
    # another torch version: used, with a warning
    with caplog.at_level("WARNING"):
        find_table(SHAPE, results=tmp_path, current=fake_fingerprint(torch="9.9"))
    assert "torch" in caplog.text
    with pytest.raises(TpError, match="no entries for batch 4"):
        load_predictor(SHAPE, machine=t.machine_id, batch=4, results=tmp_path)


def test_corrupt_table_is_reported(tmp_path):
    t = synthetic_table(SHAPE)
    t.save(tmp_path)
    t.paths(tmp_path)[1].write_text("{broken")
    with pytest.raises(TpError, match="unreadable"):
        LatencyTable.load(t.paths(tmp_path)[1])


def test_random_schedules_cover_requested_range():
    import random
    rng = random.Random(0)
    for _ in range(20):
        cfg = random_schedule(SHAPE, 128, rng)
        r = dense_macs(128, SHAPE) / schedule_macs(128, cfg.kept_counts(128), SHAPE)
        assert 1.2 <= r <= 8.0 and not cfg.prunes_at(0)


def test_build_resumes_after_interruption(tmp_path, monkeypatch):
    model = random_model(tiny_arch())
    fp = fake_fingerprint()
    s = BuildSettings(max_len=12, grid=[1, 2, 4, 8, 12], measure=FAST, calibration_configs=2)
    import tp_search.profiler.build as build
    real = build.measure_grid
    seen = []

    def interrupted(timers, b, t, grid, ms, done, on_point, progress=None):
        def stop_after_two(n, rows):
            on_point(n, rows)
            seen.append(n)
            if len(seen) == 2:
                raise KeyboardInterrupt
        real(timers, b, t, grid, ms, done, stop_after_two, progress)

    monkeypatch.setattr(build, "measure_grid", interrupted)
    with pytest.raises(KeyboardInterrupt):
        build_table(model, fp, tmp_path, s)
    csv_path, json_path = LatencyTable(model.shape, fp.to_dict(), "cpu", pd.DataFrame(),
                                       []).paths(tmp_path)
    assert not csv_path.exists() and not json_path.exists()  # no half-written table
    partial = csv_path.with_suffix(".partial.csv")
    assert sorted(pd.read_csv(partial).n.unique()) == [1, 2]

    measured = []
    monkeypatch.setattr(build, "measure_grid", lambda timers, b, t, grid, ms, done, on, p=None:
                        (measured.extend(n for n in grid if n not in done),
                         real(timers, b, t, grid, ms, done, on, p)))
    table = build_table(model, fp, tmp_path, s)
    assert measured == [4, 8, 12]  # the two finished points were reused
    assert table.combos() == [(1, 1)] and not partial.exists()
    assert json.loads(json_path.read_text())["calibration"]["b1-t1"]["points"] > 0
    # a rerun with nothing new to do measures nothing
    measured.clear()
    build_table(model, fp, tmp_path, s, existing=LatencyTable.load(json_path))
    assert measured == []


def test_cli_builds_and_validates_tiny_table(tmp_path, monkeypatch, capsys):
    import tp_search.pruning.model.checkpoint as checkpoint  # tp-profile imports it when it runs
    monkeypatch.setattr(checkpoint, "random_model", lambda arch: random_model(tiny_arch()))
    rc = profile_main(["--arch", "bert-base", "--max-len", "8", "--grid", "1,2,4,8",
                       "--point-budget", "0", "--min-repeats", "1", "--quiet-wait", "0", "--out", str(tmp_path),
                       "--validate", "--samples", "2", "--seq-len", "8", "--format", "json",
                       "-q"])
    assert rc == 0
    out = json.loads(capsys.readouterr().out)
    v = out["validation"][0]
    assert v["samples"] == 2 and 0 <= v["within_10pct"] <= 1
    d = tmp_path / "machines" / out["machine_id"]
    assert (d / "machine.json").is_file()
    name = "bert-L2-H32-A4-F64"
    for f in (f"{name}.csv", f"{name}.json", f"{name}-validate-b1-t1-n8.csv",
              f"{name}-validate-b1-t1-n8.json"):
        assert (d / f).is_file(), f
    assert len(pd.read_csv(d / f"{name}-validate-b1-t1-n8.csv")) == 2


@pytest.mark.parametrize("argv,msg", [
    (["--arch", "gpt-5"], "invalid choice"),
    (["--batch", "0"], "positive integers"),
    (["--threads", "x"], "comma-separated integers"),
])
def test_cli_usage_errors(argv, msg, capsys):
    with pytest.raises(SystemExit) as e:
        profile_main(argv)
    assert e.value.code == 2 and msg in capsys.readouterr().err


def test_cli_input_errors(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    assert profile_main(["--arch", "minilm-l6", "--out", str(blocker / "sub"), "-q"]) == 1
    assert "cannot create it" in capsys.readouterr().err
    assert profile_main(["--arch", "minilm-l6", "--grid", "1,2,x", "--out", str(tmp_path)]) == 1
    assert "expected comma-separated token counts" in capsys.readouterr().err
    assert profile_main(["--arch", "minilm-l6", "--max-len", "9999"]) == 1
    assert "exceeds the model's 512 positions" in capsys.readouterr().err


def test_sweeps_split_repeats_and_persist_each_point_once():
    from tp_search.profiler.grid import measure_grid
    from tp_search.pruning.runtime import REFERENCE, get_backend
    model = random_model(tiny_arch())
    got: dict[int, list[dict]] = {}
    s = MeasureSettings(min_repeats=2, max_repeats=2, point_budget_s=0.0, warmup=0, retries=0,
                        sweeps=2)
    timers = get_backend(REFERENCE).component_timers(model, 1)
    measure_grid(timers, 1, 1, [1, 3, 5], s, {3}, lambda n, rows: got.setdefault(n, rows))
    assert sorted(got) == [1, 5]  # the done point is skipped
    assert all(r["repeats"] == 2 for rows in got.values() for r in rows)  # 1 per sweep x 2
    assert MeasureSettings().sweeps_for(1) == 1 and MeasureSettings().sweeps_for(2) > 1


def test_force_remeasures_only_the_requested_combos(tmp_path):
    model = random_model(tiny_arch())
    fp = fake_fingerprint()
    base = dict(max_len=8, grid=[1, 4, 8], measure=FAST, calibration_configs=1)
    t1 = build_table(model, fp, tmp_path, BuildSettings(threads=[1], **base))
    before = t1.entries.copy()
    both = build_table(model, fp, tmp_path, BuildSettings(threads=[2], **base), existing=t1)
    assert both.combos() == [(1, 1), (1, 2)]
    again = build_table(model, fp, tmp_path, BuildSettings(threads=[2], force=True, **base),
                        existing=LatencyTable.load(both.paths(tmp_path)[1]))
    assert again.combos() == [(1, 1), (1, 2)] and set(again.calibration) == {"b1-t1", "b1-t2"}
    def rows(df):
        return df.sort_values(["component", "n"]).reset_index(drop=True)
    pd.testing.assert_frame_equal(rows(again.entries[again.entries.threads == 1]), rows(before),
                                  check_dtype=False, rtol=1e-3)  # stored rounded


def test_calibration_lengths_stay_within_budget():
    from tp_search.profiler.calibration import calibration_lengths
    pred = Predictor(synthetic_table(SHAPE, max_len=512))
    assert calibration_lengths(pred, 512, 1e9) == [32, 64, 128, 256, 512]  # octaves to the top
    low = calibration_lengths(pred, 512, 0.0)  # nothing affordable: the floor
    assert low == [8, 16, 32]
    mid = calibration_lengths(pred, 512, 1.0)
    assert len(mid) >= 3 and low[-1] <= mid[-1] <= 512


def test_recalibrate_keeps_the_grid_and_refits(tmp_path, capsys):
    from tp_search.pruning.testing import make_tiny_checkpoint
    make_tiny_checkpoint(tmp_path / "m")
    base = ["--model", str(tmp_path / "m"), "--max-len", "8", "--grid", "1,4,8", "--out",
            str(tmp_path / "r"), "--min-repeats", "1", "--point-budget", "0", "--quiet-wait", "0"]
    assert profile_main(base + ["--format", "json"]) == 0
    path = next((tmp_path / "r" / "machines").glob("*/*.json"))
    if path.name == "machine.json":
        path = next(p for p in path.parent.glob("*.json") if p.name != "machine.json")
    before = LatencyTable.load(path)
    # without --max-len: the table's own length bounds the calibration, not the 512 default
    assert profile_main(["--model", str(tmp_path / "m"), "--out", str(tmp_path / "r"),
                         "--recalibrate", "--quiet-wait", "0"]) == 0
    after = LatencyTable.load(path)
    pd.testing.assert_frame_equal(after.entries, before.entries)
    assert after.calibration["b1-t1"]["lengths"] and \
        after.calibration["b1-t1"]["grid_seconds"] == before.calibration["b1-t1"]["grid_seconds"]
    assert profile_main(base + ["--recalibrate", "--threads", "2"]) == 1
    assert "no batch 1 x threads 2" in capsys.readouterr().err


def test_pruning_layers_get_their_own_calibration_ratio():
    """When the pruning layers' parts are off by another factor than the rest (an exported
    backend's small graphs compiled unlike the whole model), the fit finds both factors,
    and the predictor applies them: pruned schedules come out right, not just dense ones."""
    import numpy as np

    from tp_search.profiler.calibration_fit import fit
    shape = ModelShape(4, 32, 2, 64)
    table = synthetic_table(shape, max_len=128, ms_per_gmac=5000, overhead_ms=0.02)
    pred = Predictor(table)
    truth = {32: 1.10, 64: 1.05, 128: 0.95}  # per length, for the layers that do not prune
    dense = PruningConfig.dense(shape)
    cfgs = [dense, PruningConfig.topk(shape, [1, .5, .5, .25]),
            PruningConfig.topk(shape, [1, 1, .6, .3])]
    rows = []
    for n in truth:
        for cfg in cfgs:
            raw, pruned = pred.raw_parts(n, cfg.kept_counts(n),
                                         [cfg.prunes_at(l) for l in range(4)])
            rows.append((raw, pruned, n, truth[n] * (raw - pruned) + 1.3 * pruned))
    x, p, n, y = (np.array(v, dtype=float) for v in zip(*rows))
    cal = fit(x, y, n, p)
    assert cal["model"] == "per-kind" and cal["prune_ratio"] == pytest.approx(1.3)
    assert cal["fit_max_abs_error"] < 1e-9 < cal["per_length_max_abs_error"]
    table.calibration["b1-t1"] = cal
    pred = Predictor(table)
    cfg = PruningConfig.topk(shape, [1, .7, .4, .4])
    raw, pruned = Predictor(synthetic_table(shape, max_len=128, ms_per_gmac=5000,
                                            overhead_ms=0.02)).raw_parts(
        64, cfg.kept_counts(64), [cfg.prunes_at(l) for l in range(4)])
    assert pred.predict(cfg, 64) == pytest.approx(1.05 * (raw - pruned) + 1.3 * pruned)
    kept = torch.tensor([float(k) for k in cfg.kept_counts(64)], dtype=torch.float64)
    assert float(pred.torch_latency(64, kept)) == pytest.approx(pred.predict(cfg, 64), rel=1e-6)


def test_calibration_level_is_its_window_not_the_grid_reference():
    """The reference pass runs slower beside long passes than beside the grid's components
    on some CPUs (Intel AMX host: x1.14-1.51), so rescaling full passes to the grid's
    reference level under-predicted them by that factor: the calibrated prediction of a
    full pass must not depend on the grid reference it is given."""
    from tp_search.profiler.calibration import calibrate
    model = random_model(tiny_arch()).eval()
    table = synthetic_table(model.shape, max_len=16, ms_per_gmac=5000, overhead_ms=0.02)
    s = BuildSettings(max_len=16, grid=[1, 2, 4, 8, 16], measure=FAST, calibration_configs=2,
                      calibration_window_s=0.2)
    cals = [calibrate(model, Predictor(table), s, 1, reference_ms=r) for r in (1e-3, 1e3)]
    for cal in cals:
        assert cal["reference"]["ms"] == cal["reference"]["window_ms"]
        assert cal["reference"]["level"] == "window"
    preds = []
    dense = PruningConfig.dense(model.shape)
    for cal in cals:
        t = synthetic_table(model.shape, max_len=16, ms_per_gmac=5000, overhead_ms=0.02)
        t.calibration["b1-t1"] = cal
        preds.append(Predictor(t).predict(dense, 16))
    # the old code made these differ by a factor of 1e6; timing noise alone stays small
    assert 0.2 < preds[0] / preds[1] < 5
