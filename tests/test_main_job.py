"""The main job's promises on a tiny model: it measures before deploying (a table that
under-predicts is refitted, or the job stops with exit code 3: a measured miss is never
deployed), one run per directory (another --seq-len gets its own; nothing is
overwritten), a deployed model benches itself, and the proxy never reads a dev example."""
from __future__ import annotations

import csv
import json

import pytest

from tp_search.profiler import fingerprint
from tp_search.profiler.synthetic import synthetic_table
from tp_search.pruning import ModelShape
from tp_search.pruning.testing import make_tiny_checkpoint, random_sentences
from tp_search.search.search_cli import main

SHAPE = ModelShape(4, 32, 4, 64)


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    root = tmp_path_factory.mktemp("job")
    model = make_tiny_checkpoint(root / "model", layers=4)
    task = root / "task.csv"
    with open(task, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["text", "label"])
        for i, t in enumerate(random_sentences(120, seed=7, min_words=6, max_words=28)):
            w.writerow([t, int("good" in t or "great" in t)])
    return {"root": root, "model": model, "task": task}


def argv(env, results, *extra):
    return ["--backend", "torch", "--task", str(env["task"]), "--model", str(env["model"]),
            "--results", str(results), "--trials", "8", "--population", "4",
            "--eval-samples", "20", "--max-steps", "2", "--repeats", "5", "--refits", "1",
            "--format", "json", "-q", *extra]


def test_an_underpredicting_table_is_refitted_or_the_job_stops(env, tmp_path, capsys):
    """A table for this machine predicting the tiny model 5x faster than it runs, and a
    target at 0.4x its measured dense latency: every candidate is predicted within it, and
    none can run within it (on a tiny model even the most pruned schedule is far from 2.5x:
    embeddings, layer 0 and per-layer overheads stay). The closed loop measures the miss,
    refits the prediction from it (written back to the table), and the job stops with exit
    code 3 and a report instead of deploying what it measured to miss. (A target at the
    dense latency itself, as this test first had, let a pruned schedule meet it whenever the
    machine ran a little faster during the loop than during the test's own measurement.)"""
    import numpy as np

    from tp_search.pruning import from_pretrained
    from tp_search.pruning.measure import fixed_inputs, time_interleaved
    model = from_pretrained(env["model"])
    x = fixed_inputs(model, None, 32, 1)
    runs = time_interleaved({"d": lambda: model(x["input_ids"])}, repeats=40, warmup=5)
    measured = float(np.median(runs["d"]))
    results = tmp_path / "results"
    table = synthetic_table(SHAPE, max_len=64, ms_per_gmac=1.0, overhead_ms=0.001,
                            fp=fingerprint())
    from tp_search.profiler.predictor import Predictor
    scale = 0.2 * measured / Predictor(table).dense(32)
    table.entries = table.entries.assign(median_ms=table.entries.median_ms * scale)
    table.save(results)
    out = tmp_path / "run"
    rc = main(argv(env, results, "--latency-ms", f"{0.4 * measured:.4f}", "--seq-len", "32",
                   "--truncation", "none", "--out", str(out)))
    err = capsys.readouterr().err
    assert rc == 3, err
    assert "no candidate measured within" in err
    assert not (out / "model").exists()  # nothing deployed
    assert "STOPPED" in (out / "report.md").read_text()
    assert json.loads((out / "summary.json").read_text())["status"] == "stopped"
    assert "measured.csv" in {p.name for p in (out / "search").iterdir()}
    refit = json.loads(table.paths(results)[1].read_text())["calibration"]["b1-t1"]["refit"]
    assert refit["correction"] > 1.3  # the error (>= 1 / 0.2 on dense) found by measuring


def slow_table(env, results):
    """A MACs-proportional table slow enough that the real tiny model meets any target it
    sets, so a search happens and the measurement agrees."""
    synthetic_table(SHAPE, max_len=64, ms_per_gmac=80000, overhead_ms=0.04,
                    fp=fingerprint()).save(results)


def test_two_seq_lens_in_one_runs_root_keep_both_models(env, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    results = tmp_path / "results"
    slow_table(env, results)
    base = argv(env, results, "--latency-ms", "80", "--truncation", "none",
                "--cache", str(tmp_path / "cache"))
    assert main([*base, "--seq-len", "32"]) == 0
    first = json.loads(capsys.readouterr().out)
    assert main([*base, "--seq-len", "24"]) == 0
    second = json.loads(capsys.readouterr().out)
    a, b = first["model_dir"], second["model_dir"]
    assert a != b  # a run of its own
    runs = sorted(p.name for p in (tmp_path / "runs").iterdir() if p.name != "cache")
    assert len(runs) == 2
    for d, seq in ((a, 32), (b, 24)):
        info = json.loads((tmp_path / d / "deployment.json").read_text())
        assert info["seq_len"] == seq
    # an explicit --out holding the first run, asked with other settings: refused, intact
    first_dir = tmp_path / a.rsplit("/model", 1)[0]
    before = (first_dir / "model" / "model.safetensors").stat().st_mtime_ns
    assert main([*base, "--seq-len", "16", "--out", str(first_dir)]) == 1
    err = capsys.readouterr().err
    assert "holds a run with other settings" in err and "seq_len: 32 there, 16 now" in err
    assert (first_dir / "model" / "model.safetensors").stat().st_mtime_ns == before

    # the deployed model benches itself with no flag but --model
    from tp_search.pruning.bench_cli import main as bench
    rc = bench(["--model", str(tmp_path / a), "--repeats", "2", "--warmup", "0",
                "--eval-samples", "8", "--format", "json", "-q"])
    r = json.loads(capsys.readouterr().out)
    assert rc == 0 and r["task"] == str(env["task"]) and r["workload"]["seq_len"] == 32
    assert r["backends"] == ["torch"] and r["latency_ms"]["pruned"]["median_ms"] > 0


def test_the_proxy_never_reads_a_dev_example(env, tmp_path, monkeypatch):
    from tp_search.pruning.data import load_task
    from tp_search.search.run import run_search
    from tp_search.search.scoring import proxy
    from tp_search.search.search_settings import SearchSettings
    results = tmp_path / "results"
    slow_table(env, results)
    seen: set[str] = set()
    for name in ("evaluate", "evaluate_runner"):
        real = getattr(proxy, name)

        def spy(model, split, *a, real=real, **k):
            seen.update(split.texts)
            return real(model, split, *a, **k)
        monkeypatch.setattr(proxy, name, spy)
    run_search(SearchSettings(latency_ms=80, task=str(env["task"]), model=str(env["model"]),
                              results=str(results), seq_len=32, backends=("torch",),
                              truncation=(0,), trials=8, population=4, eval_samples=20,
                              repeats=3, out=str(tmp_path / "s"), progress=False,
                              always_search=True))
    dev = set(load_task(str(env["task"]), "dev").texts)
    train = set(load_task(str(env["task"]), "train").texts)
    assert seen and seen <= train and not seen & dev
