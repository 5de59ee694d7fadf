"""The main job end to end on a tiny model and tiny data: profile -> finetune -> distill ->
search -> train -> measure, then a rerun that reuses every finished stage."""
import csv
import json

import pytest

from tp_search import pruning
from tp_search.profiler import fingerprint, load_predictor
from tp_search.profiler.synthetic import synthetic_table
from tp_search.pruning import ModelShape
from tp_search.pruning.testing import make_tiny_checkpoint, random_sentences
from tp_search.search.search_cli import main
from tp_search.search.scoring.objective import fastest
from tp_search.search.pipeline.main_job import PipelineSettings
from tp_search.search.pipeline.profiling import ensure_tables
from tp_search.search.search_settings import SearchSettings
from tp_search.search.space.candidates import SearchSpace
from tp_search.search.space.workload import Workload

SHAPE = ModelShape(4, 32, 4, 64)


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    root = tmp_path_factory.mktemp("pipe")
    model = make_tiny_checkpoint(root / "model", layers=4)
    task = root / "task.csv"
    with open(task, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["text", "label"])
        for i, t in enumerate(random_sentences(120, seed=7, min_words=6, max_words=28)):
            w.writerow([t, int("good" in t or "great" in t)])
    return {"root": root, "model": model, "task": task, "results": root / "results"}


def test_profile_stage_measures_a_missing_table(env, tmp_path, monkeypatch):
    from tp_search.profiler import build_settings
    monkeypatch.setattr(build_settings.MeasureSettings, "__init__",
                        _fast_measure_init(build_settings.MeasureSettings.__init__))
    s = SearchSettings(latency_ms=1.0, results=str(tmp_path / "res"), backends=("torch",))
    ensure_tables(s, SHAPE, 16)
    pred = load_predictor(SHAPE, results=tmp_path / "res")
    assert pred.max_len == 16 and pred.table.combos() == [(1, 1)]
    assert pred.table.machine_id == fingerprint().machine_id
    v = pred.table.calibration["b1-t1"]["validation"]  # a new table validates itself
    assert v["samples"] == 4 and v["median_abs_error"] >= 0


def test_pipeline_end_to_end_and_resume(env, tmp_path, capsys):
    # A MACs-proportional table for this machine, so pruning pays off for the tiny model
    # (measured, a hidden-32 model is all per-call overhead and never gets faster); slow
    # enough that the target it sets is one the real tiny model meets when measured.
    synthetic_table(SHAPE, max_len=64, ms_per_gmac=80000, overhead_ms=0.04,
                    fp=fingerprint()).save(env["results"])
    pred = load_predictor(SHAPE, results=env["results"])
    lo = fastest(SearchSpace(SHAPE), {"torch": pred}, Workload("max", 32))[1]
    target = round(lo + 0.6 * (pred.dense(32) - lo), 4)
    out = tmp_path / "run"
    argv = ["--latency-ms", str(target), "--backend", "torch", "--task", str(env["task"]), "--model",
            str(env["model"]), "--results", str(env["results"]), "--seq-len", "32",
            "--trials", "10", "--population", "6", "--eval-samples", "30", "--max-steps", "3",
            "--cache", str(tmp_path / "cache"), "--out", str(out), "--repeats", "5",
            "--format", "json", "-q", "--truncation", "none"]  # truncation alone would win
    assert main(argv) == 0  # and a candidate that prunes nothing is not trained
    summary = json.loads(capsys.readouterr().out)
    names = [st["name"] for st in summary["stages"]]
    assert names == ["profile", "finetune", "distill", "search", "train", "measure"]
    for f in ("summary.json", "report.md", "stages.json", "search/best_config.json",
              "search/trials.csv", "model/pruning_config.json", "model/model.safetensors"):
        assert (out / f).is_file(), f
    assert summary["target_ms"] == target and summary["workload"]["seq_len"] == 32
    assert summary["config"]["method"] == "top"
    assert 0.0 <= summary["dev_metric"] <= 1.0 and summary["measured"]["chosen_ms"]["median_ms"] > 0
    model = pruning.load(out / "model")  # the deployed model loads and runs
    assert model.pruning.policy == "topk"
    assert "Measured latency" in (out / "report.md").read_text()
    # 2. the same command again: every stage is reused, nothing is retrained
    assert main(argv) == 0
    again = json.loads(capsys.readouterr().out)
    status = {st["name"]: st["status"] for st in again["stages"]}
    assert status["finetune"] == status["distill"] == "reused"
    # the search stage resumes its study but its closed loop measures the contenders again:
    # on a noisy machine another contender can win (about 1 run in 7 here), and a changed
    # choice is trained anew; the same choice must be reused, never retrained
    if again["config"] == summary["config"]:
        assert status["train"] == "reused"
    else:
        assert status["train"] == "ran"


def test_pipeline_ltp_trains_and_deploys_thresholds(env, tmp_path, capsys):
    """--method ltp on the dev workload: a threshold candidate is searched, trained with
    LTP from its thresholds, deployed and measured request by request; its MACs are stated
    against the dense model on the untruncated inputs."""
    synthetic_table(SHAPE, max_len=64, ms_per_gmac=80000, overhead_ms=0.04,
                    fp=fingerprint()).save(env["results"])
    pred = load_predictor(SHAPE, results=env["results"])
    out = tmp_path / "run"
    argv = ["--latency-ms", f"{0.8 * pred.dense(32):.4f}", "--backend", "torch", "--task",
            str(env["task"]), "--model", str(env["model"]), "--results", str(env["results"]),
            "--seq-len", "32", "--workload", "dev", "--method", "ltp", "--trials", "8",
            "--population", "4", "--eval-samples", "30", "--max-steps", "3", "--cache",
            str(tmp_path / "cache"), "--out", str(out), "--repeats", "5", "--format", "json",
            "-q"]
    assert main(argv) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["config"]["policy"] == "threshold"
    assert pruning.load(out / "model").pruning.policy == "threshold"
    m = summary["measured"]
    assert m["workload"] == "dev" and len(m["per_request"]) > 1
    assert summary["macs_reduction"]["real_lengths"] >= 1.0  # never more work than dense


def test_default_run_directory_names_only_what_differs(env, tmp_path, monkeypatch):
    """The command with no settings beyond task and model runs in the plain default
    directory; another setting adds a digest of it (the main job's model is never reused
    for it)."""
    from tp_search.search.pipeline import main_job
    from tp_search.search.search_cli import build_parser, pipeline_from_args
    monkeypatch.chdir(tmp_path)
    seen = []

    class Claimed(Exception):
        pass

    def claim(run_dir, identity, explicit):
        seen.append(run_dir)
        raise Claimed

    monkeypatch.setattr(main_job.runs, "claim", claim)
    base = ["--latency-ms", "5", "--task", str(env["task"]), "--model", str(env["model"]),
            "--results", str(env["results"])]
    for extra in ([], ["--seq-len", "16"]):
        with pytest.raises(Claimed):
            main_job.run_pipeline(pipeline_from_args(build_parser().parse_args(base + extra)))
    plain, other = seen
    assert plain.name.endswith("-5ms") and other.name.startswith(plain.name + "-s")


def test_pipeline_no_train_and_bad_method(env, tmp_path, capsys):
    from tp_search.search.pipeline.main_job import run_pipeline
    s = SearchSettings(latency_ms=1.0, task=str(env["task"]), model=str(env["model"]),
                       results=str(env["results"]), seq_len=32)
    with pytest.raises(pruning.TpError, match="unknown --method"):
        run_pipeline(PipelineSettings(search=s, method="magic"))
    assert main(["--latency-ms", "5", "--model", str(tmp_path / "missing"), "-q"]) == 1
    assert "directory not found" in capsys.readouterr().err


def _fast_measure_init(orig):
    def init(self, *a, **k):
        orig(self, *a, **k)
        self.min_repeats, self.point_budget_s, self.warmup, self.retries = 3, 0.0, 1, 0
    return init
