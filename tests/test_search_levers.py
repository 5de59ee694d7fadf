"""The search over every lever: backends, truncation, workloads and the percentile rule."""
from __future__ import annotations

import csv
import json

import numpy as np
import pandas as pd
import pytest

from tp_search.profiler.synthetic import fake_fingerprint, synthetic_table
from tp_search.pruning import ModelShape, PruningConfig, TpError
from tp_search.pruning.measure.timing import Timing
from tp_search.pruning.testing import make_tiny_checkpoint, random_sentences
from tp_search.search.search_cli import main
from tp_search.search.selection.verify import Measurement
from tp_search.search.run import run_search
from tp_search.search.search_settings import SearchSettings
from tp_search.search.space.workload import Workload

SHAPE = ModelShape(4, 32, 4, 64)


# ---- workloads ---------------------------------------------------------------------------

def test_max_workload_is_one_length():
    w = Workload("max", 128)
    assert w.request_lengths() == [128] and w.length() == 128 and w.length(64) == 64


def test_dev_workload_percentile_length_and_batching():
    lengths = tuple(range(1, 101))  # 1..100 tokens
    w = Workload("dev", 64, percentile=90, dev_lengths=lengths)
    assert w.length() == 64  # p90 of 1..100 capped at 64
    assert Workload("dev", 128, percentile=50, dev_lengths=lengths).length() == 50
    assert Workload("dev", 128, percentile=90, dev_lengths=lengths).length(32) == 32
    b = Workload("dev", 128, batch=4, percentile=100, dev_lengths=(3, 9, 5, 1, 7, 2))
    assert b.request_lengths() == [9, 7]  # a request is padded to its longest input
    with pytest.raises(TpError, match="--percentile"):
        Workload("max", 64, percentile=0)
    with pytest.raises(TpError, match="unknown --workload"):
        Workload("p99", 64)


def test_prediction_at_percentile_is_percentile_of_predictions():
    from tp_search.profiler import Predictor
    pred = Predictor(synthetic_table(SHAPE, max_len=64, ms_per_gmac=2000))
    rng = np.random.default_rng(0)
    lengths = tuple(int(n) for n in rng.integers(3, 64, 200))
    cfg = PruningConfig.topk(SHAPE, [1, 0.5, 0.3, 0.3])
    for q in (50, 90, 99):
        w = Workload("dev", 64, percentile=q, dev_lengths=lengths)
        per_request = [pred.predict(cfg, n) for n in lengths]
        assert w.predict(pred, cfg) == pytest.approx(
            np.percentile(per_request, q, method="inverted_cdf"))


def test_target_is_judged_at_the_percentile_not_the_median():
    samples = np.array([9.0] * 80 + [12.0] * 20)  # median 9 ms, p90 12 ms
    t = Timing.of(samples)

    def measured(q: float) -> Measurement:
        return Measurement({"chosen": t, "dense": t}, {"chosen": float(np.percentile(samples, q)),
                                                     "dense": 0.0}, q, 9.0, 20.0, 10.0, 100,
                           "max")
    assert t.median_ms <= 10.0
    assert not measured(90).meets_target  # a median under target, one request in five over
    assert measured(50).meets_target


# ---- the search over backends and truncation -----------------------------------------------

@pytest.fixture(scope="module")
def env(tmp_path_factory):
    root = tmp_path_factory.mktemp("levers")
    model = make_tiny_checkpoint(root / "model", layers=4)
    task = root / "task.csv"
    with open(task, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["text", "label", "split"])
        for i, t in enumerate(random_sentences(80, seed=3, min_words=2, max_words=40)):
            w.writerow([t, (i * 7) % 3 % 2, "dev" if i % 2 else "train"])
    results = root / "results"
    fp = fake_fingerprint("lever-machine")
    synthetic_table(SHAPE, max_len=64, ms_per_gmac=2000, overhead_ms=0.001, fp=fp).save(results)
    synthetic_table(SHAPE, max_len=64, ms_per_gmac=600, overhead_ms=0.001, fp=fp,
                    backend="ort-int8").save(results)
    return {"model": model, "task": task, "results": results,
            "machine": fp.machine_id}


def fake_int8(backend: str, policy: str = "topk"):
    """Stands in for the ONNX Runtime int8 graph: the PyTorch encoder with a per-call
    schedule, slightly perturbed so int8 metrics are not fp32's."""
    from tp_search import pruning
    model = pruning.from_pretrained(FAKE["model"])
    from tp_search.pruning.runtime.torch_backend import TorchRunner
    runner = TorchRunner(model)
    FAKE["calls"] = []

    def run(batch, keep=None):
        FAKE["calls"].append((batch["input_ids"].shape[1], tuple(keep)))
        return runner(batch, keep) + 0.01
    return run


FAKE: dict = {}


def settings(env, out, **kw) -> SearchSettings:
    return SearchSettings(**{"latency_ms": 3.0, "task": str(env["task"]),
                             "model": str(env["model"]), "machines": (env["machine"],),
                             "results": str(env["results"]), "eval_samples": 40,
                             "population": 8, "trials": 30, "out": str(out),
                             "progress": False, "measure": False, **kw})


def test_search_over_backends_and_truncation(env, tmp_path):
    FAKE["model"] = env["model"]
    r = run_search(settings(env, tmp_path / "run"), runner_for=fake_int8)
    assert r.space.backends == ("torch", "ort-int8")  # every backend with a table
    assert r.space.lengths == (0, 48, 32, 24, 16)  # none, 3/4 ... 1/4 of 64
    df = pd.read_csv(tmp_path / "run" / "trials.csv")
    assert set(df["backend"]) == {"torch", "ort-int8"} and df["max_len"].nunique() > 1
    # int8 candidates were evaluated by the int8 runner, truncated to their max_len
    lens = {n for n, _ in FAKE["calls"]}
    assert lens and max(lens) <= 64 and min(lens) <= 16
    # every backend's dense and truncation-only points are reported
    levers = pd.read_csv(tmp_path / "run" / "levers.csv")
    assert len(levers) == 2 * 5 and set(levers["lever"]) == {"dense", "truncation"}
    # fp32 and feasible levers are scored; an infeasible int8 point is not (n/a: no choice
    # would use it, and it costs a whole evaluation on its runtime)
    assert (levers["metric"].notna() == ((levers.backend == "torch") | levers.feasible)).all()
    dense_t = levers[(levers.backend == "torch") & (levers.max_len == 0)].iloc[0]
    assert dense_t["metric"] == pytest.approx(r.dense_metric)
    pareto = pd.read_csv(tmp_path / "run" / "pareto.csv")
    assert {"backend", "max_len"} <= set(pareto.columns) and (pareto["latency_ms"] <= 3.0).all()
    best = PruningConfig.load(tmp_path / "run" / "best_config.json")
    dep = best.meta["deployment"]
    assert dep["backend"] == r.primary.backend and dep["max_len"] == r.primary.max_len
    assert dep["precision"] == ("int8" if dep["backend"] == "ort-int8" else "fp32")
    report = (tmp_path / "run" / "report.md").read_text()
    assert "Each lever alone" in report and "backend: **" in report


def test_backend_restriction_and_missing_table(env, tmp_path, capsys):
    r = run_search(settings(env, tmp_path / "a", backends=("torch",), truncation=(0,),
                            latency_ms=4.5))
    assert r.space.backends == ("torch",) and r.space.lengths == (0,)
    assert r.primary.backend == "torch" and r.primary.max_len == 0
    rc = main(["--latency-ms", "3", "--search-only", "--task", str(env["task"]), "--model",
               str(env["model"]), "--machine", env["machine"], "--results",
               str(env["results"]), "--backend", "ort", "--out", str(tmp_path / "b"), "-q"])
    err = capsys.readouterr().err
    assert rc == 1 and "no latency table" in err and "--backend ort" in err


def test_dev_workload_plans_for_the_percentile_request(env, tmp_path):
    kw = dict(backends=("torch",), truncation=(0,), trials=12, latency_ms=4.5)
    worst = run_search(settings(env, tmp_path / "max", **kw))
    dev = run_search(settings(env, tmp_path / "dev", workload="dev", **kw))
    assert dev.workload.length() < worst.workload.length() == 64  # real inputs are shorter
    assert dev.primary.dense_ms < worst.primary.dense_ms
    summary = json.loads((tmp_path / "dev" / "summary.json").read_text())
    assert summary["workload"]["kind"] == "dev" and summary["workload"]["percentile"] == 90


def test_int8_candidates_run_the_onnx_runtime_graph(env, tmp_path, monkeypatch):
    """Without a stand-in: int8 candidates are evaluated by the quantized keep-input graph,
    one export for every schedule."""
    monkeypatch.setenv("TP_SEARCH_CACHE", str(tmp_path / "onnx"))
    r = run_search(settings(env, tmp_path / "run", truncation=(0, 32), trials=16))
    df = pd.read_csv(tmp_path / "run" / "trials.csv")
    int8 = df[(df["backend"] == "ort-int8") & df["metric"].notna()]
    assert len(int8) > 0 and r.space.backends == ("torch", "ort-int8")
    assert len(list((tmp_path / "onnx").glob("*-int8c.onnx"))) == 1


def test_candidates_that_prune_nothing_are_scored_with_the_dense_model(env, tmp_path):
    """The levers alone deploy the teacher, not the distilled student: they are scored with
    ``dense_model``, pruning candidates with the proxy model."""
    from tp_search.pruning import from_pretrained
    from tp_search.pruning.measure.accuracy import evaluate
    from tp_search.search.context import proxy_slices
    other = make_tiny_checkpoint(tmp_path / "teacher", layers=4, seed=7)
    common = dict(backends=("torch",), truncation=(0, 32))
    r = run_search(settings(env, tmp_path / "run", dense_model=str(other), **common))
    levers = pd.read_csv(tmp_path / "run" / "levers.csv")
    split, _ = proxy_slices(str(env["task"]), eval_samples=40)  # the held-out slice
    teacher, proxy = from_pretrained(other), from_pretrained(env["model"])
    for row in levers.itertuples():
        n = row.max_len or 64
        assert row.metric == pytest.approx(evaluate(teacher, split, n).score)
    assert r.dense_metric == pytest.approx(evaluate(teacher, split, 64).score)
    trials = pd.read_csv(tmp_path / "run" / "trials.csv").dropna(subset=["metric"])
    pruned = trials[trials["keep"].str.split(",").map(lambda k: any(float(x) < 1 for x in k))]
    assert len(pruned)
    t = pruned.iloc[0]
    cfg = PruningConfig.topk(SHAPE, [float(x) for x in t["keep"].split(",")])
    assert t["metric"] == pytest.approx(
        evaluate(proxy, split, int(t["max_len"]) or 64, pruning=cfg).score)
    # scores from this model differ, so the test can tell who scored what
    assert evaluate(teacher, split, 64).score != evaluate(proxy, split, 64).score


def test_an_infeasible_int8_lever_is_not_scored():
    """A lever alone is scored when it may be chosen (feasible), when it is fp32 (one PyTorch
    evaluation per length serves every fp32 backend) or when it is the dense reference; an
    infeasible int8 point would cost a whole evaluation on its runtime for nothing."""
    from types import SimpleNamespace
    from tp_search.search.space.candidates import Candidate
    from tp_search.search.study.session import scored
    dense = PruningConfig.dense(SHAPE)
    no, yes = SimpleNamespace(any_feasible=False), SimpleNamespace(any_feasible=True)
    int8, fp32 = Candidate("ort-int8", 32, dense), Candidate("torch", 32, dense)
    assert not scored(int8, no, 3)
    assert scored(int8, yes, 3) and scored(fp32, no, 3) and scored(int8, no, 0)
