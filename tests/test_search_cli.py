"""tp-search end to end on a tiny model and synthetic latency tables (in-process main(argv))."""
import csv
import json

import pandas as pd
import pytest

from tp_search.search.scoring import proxy
from tp_search.profiler import fingerprint
from tp_search.profiler.synthetic import fake_fingerprint, synthetic_table
from tp_search.pruning import ModelShape, PruningConfig
from tp_search.pruning.testing import make_tiny_checkpoint, random_sentences
from tp_search.search.search_cli import main

SHAPE = ModelShape(4, 32, 4, 64)  # make_tiny_checkpoint(layers=4)
FILES = ("trials.csv", "pareto.csv", "pareto.png", "best_config.json", "report.md",
         "machines.csv", "summary.json", "study.db")


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    root = tmp_path_factory.mktemp("search")
    model = make_tiny_checkpoint(root / "model", layers=4)
    task = root / "task.csv"
    texts = random_sentences(80, seed=3)
    with open(task, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["text", "label", "split"])
        for i, t in enumerate(texts):
            w.writerow([t, (i * 7) % 3 % 2, "dev" if i % 2 else "train"])
    results = root / "results"
    table = synthetic_table(SHAPE, max_len=64, ms_per_gmac=2000, overhead_ms=0.001)
    table.save(results)
    other = synthetic_table(SHAPE, max_len=64, ms_per_gmac=1200, overhead_ms=0.001,
                            fp=fake_fingerprint("other-machine"))
    other.save(results)
    return {"model": model, "task": task, "results": results, "machine": table.machine_id,
            "other": other.machine_id}


def args(env, out, *extra, machine=None):
    return ["--task", str(env["task"]), "--model", str(env["model"]),
            "--machine", machine or env["machine"], "--results", str(env["results"]),
            "--eval-samples", "40", "--population", "8", "--out", str(out), "-q",
            "--search-only", "--truncation", "none", *extra]


def count_evaluations(monkeypatch):
    calls = []
    real = proxy.evaluate

    def counting(*a, **k):
        calls.append(k.get("pruning"))
        return real(*a, **k)
    monkeypatch.setattr(proxy, "evaluate", counting)
    return calls


def test_outputs_and_constraint(env, tmp_path, monkeypatch, capsys):
    calls = count_evaluations(monkeypatch)
    out = tmp_path / "run"
    assert main(args(env, out, "--latency-ms", "4.5", "--trials", "24", "--format", "json")) == 0
    summary = json.loads(capsys.readouterr().out)
    for name in FILES:
        assert (out / name).is_file(), name
    assert (out / "pareto.png").read_bytes()[:4] == b"\x89PNG"
    df = pd.read_csv(out / "trials.csv")
    assert len(df) == 24 and df["number"].tolist() == list(range(24))
    assert (df["seed"] == 0).all() and df["sampler_seed"].notna().all()
    assert (df["seq_len"] == 64).all() and (df["target_ms"] == 4.5).all()
    feasible = df[df["feasible"]]
    assert (feasible["latency_ms"] <= 4.5).all() and feasible["metric"].notna().all()
    over = df[df["latency_ms"] > 4.5]
    assert len(over) > 0 and over["metric"].isna().all() and not over["feasible"].any()
    assert (over["evaluated"] == "skipped").all()
    # infeasible trials are never evaluated: one call per distinct evaluated config + dense
    assert len(calls) == (df["evaluated"] == "yes").sum() + 1
    assert calls[0].is_dense
    best = PruningConfig.load(out / "best_config.json")
    m = best.meta
    assert best.method == "search" and m["machine_id"] == env["machine"]
    assert m["target_ms"] == 4.5 and m["workload"]["seq_len"] == 64
    assert m["workload"]["batch"] == 1 and m["workload"]["threads"] == 1
    assert m["predicted_latency_ms"] <= 4.5 and m["seed"] == 0
    assert m["proxy_metric"]["value"] == feasible["metric"].max()
    assert m["expected_latency_ms_dev"] < m["predicted_latency_ms"]
    pareto = pd.read_csv(out / "pareto.csv")
    assert len(pareto) >= 1 and (pareto["latency_ms"] <= 4.5).all()
    assert pareto["metric"].is_monotonic_increasing
    report = (out / "report.md").read_text()
    for text in ("**Workload**: one input of 64 real tokens", "<= 4.5 ms", "Dense model",
                 "Nearest alternatives", "padded to 64", "another machine", "seed 0"):
        assert text in report, text
    assert summary["status"] == "searched" and summary["stats"]["complete"] == 24
    assert summary["seeds"]["seed"] == 0 and summary["workload"]["seq_len"] == 64
    assert len(pd.read_csv(out / "machines.csv")) == 1
    assert json.loads((out / "summary.json").read_text())["study"] == summary["study"]


def test_resume_runs_only_missing_trials(env, tmp_path, capsys):
    out = tmp_path / "run"
    base = args(env, out, "--latency-ms", "4.5")
    assert main(base + ["--trials", "5"]) == 0
    first = pd.read_csv(out / "trials.csv")
    assert main(base + ["--trials", "8"]) == 0
    second = pd.read_csv(out / "trials.csv")
    assert len(second) == 8 and not second.duplicated(["run", "index"]).any()
    assert second["number"].is_unique
    cols = ["run", "index", "keep", "metric"]
    pd.testing.assert_frame_equal(second[cols].head(5), first[cols])
    assert second["run"].nunique() == 2 and second["sampler_seed"].nunique() == 2
    assert main(base + ["--trials", "8"]) == 0  # nothing left to do
    assert len(pd.read_csv(out / "trials.csv")) == 8


def test_infeasible_target(env, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(args(env, out, "--latency-ms", "1")) == 3
    err = capsys.readouterr().err.strip()
    assert "below the fastest achievable latency: 3.211 ms" in err and len(err.splitlines()) == 1
    assert not out.exists()
    assert main(args(env, out, "--latency-ms", "6", "--flops-reduction", "50")) == 3
    assert "largest MACs reduction" in capsys.readouterr().err


def test_dense_already_meets_target(env, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(args(env, out, "--latency-ms", "50")) == 0
    cfg = PruningConfig.load(out / "best_config.json")
    assert cfg.policy == "none" and cfg.meta["predicted_latency_ms"] <= 50
    assert not (out / "trials.csv").exists() and not (out / "study.db").exists()
    assert "already meets the target" in (out / "report.md").read_text()


def test_flops_constraint(env, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(args(env, out, "--latency-ms", "6", "--flops-reduction", "2",
                     "--trials", "16")) == 0
    df = pd.read_csv(out / "trials.csv")
    assert (df.loc[df["feasible"], "macs_reduction_workload"] >= 2).all()
    best = PruningConfig.load(out / "best_config.json")
    assert best.meta["macs_reduction"]["workload"] >= 2


def test_several_machines(env, tmp_path, capsys):
    out = tmp_path / "run"
    machines = f"{env['machine']},{env['other']}"
    assert main(args(env, out, "--latency-ms", "4.0", "--trials", "20",
                     machine=machines)) == 0
    df = pd.read_csv(out / "trials.csv")
    lat = {env["machine"]: "latency_ms", env["other"]: f"latency_ms@{env['other']}"}
    for m, col in lat.items():
        cfg = PruningConfig.load(out / f"best_config.{m}.json")
        assert cfg.meta["machine_id"] == m and cfg.meta["predicted_latency_ms"] <= 4.0
        row = df[df["number"] == cfg.meta["trial"]].iloc[0]
        assert row[col] == pytest.approx(cfg.meta["predicted_latency_ms"])
    mt = pd.read_csv(out / "machines.csv")
    assert mt["machine"].tolist() == [env["machine"], env["other"]]
    assert "## Machines" in (out / "report.md").read_text()


def test_measured_miss_is_reported(env, tmp_path, capsys):
    """A table for this machine that predicts far too fast: the measurement exposes it, the
    refitted predictions rule every candidate out, and the search stops with exit code 3
    and a report of what it measured (never a configuration measured to miss as a choice)."""
    results = tmp_path / "results"
    table = synthetic_table(SHAPE, max_len=64, ms_per_gmac=20, overhead_ms=0.00001,
                            fp=fingerprint("cpu"))
    table.save(results)
    out = tmp_path / "run"
    argv = args(env, out, "--latency-ms", "0.05", "--trials", "8", "--repeats", "3",
                "--format", "json")
    argv[argv.index("--results") + 1] = str(results)
    argv[argv.index("--machine"):argv.index("--machine") + 2] = []
    assert main(argv) == 3
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "no candidate measured within 0.05 ms" in err
    assert "nothing is deployable" in (out / "report.md").read_text()
    measured = pd.read_csv(out / "measured.csv")
    assert len(measured) >= 1 and not measured.meets_target.any()
    assert (measured.error_pct < 0).all()  # the table predicted far too fast
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "missed"
    refit = json.loads(table.paths(results)[1].read_text())
    assert refit["calibration"]["b1-t1"]["refit"]["correction"] > 1  # written back


@pytest.mark.parametrize("bad", [[], ["--latency-ms", "-1"], ["--latency-ms", "x"],
                                 ["--latency-ms", "5", "--trials", "0"],
                                 ["--latency-ms", "5", "--format", "xml"],
                                 ["--latency-ms", "5", "--layers", "a,b"]])
def test_usage_errors(bad, capsys):
    with pytest.raises(SystemExit) as e:
        main(bad)
    assert e.value.code == 2


def test_unknown_machine_is_one_line(env, tmp_path, capsys):
    assert main(args(env, tmp_path / "run", "--latency-ms", "5", machine="nope-1")) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "no latency table" in err and "nope-1" in err
