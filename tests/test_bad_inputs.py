"""Every CLI against a list of bad inputs: non-zero exit, one line naming the problem, no
traceback, and nothing written.

Each case runs ``main(argv)`` in-process (tiny model, tiny data) and compares the files
under the case's directory before and after: a refused command leaves no trace.
"""
from __future__ import annotations

import csv
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import pytest

from tp_search.profiler.profile_cli import main as profile_main
from tp_search.profiler.synthetic import fake_fingerprint, synthetic_table
from tp_search.pruning import PruningConfig
from tp_search.pruning.bench_cli import main as bench_main
from tp_search.pruning.testing import make_tiny_checkpoint, random_sentences
from tp_search.pruning.train_cli import main as train_main
from tp_search.search.search_cli import main as search_main

MAINS = {"tp-bench": bench_main, "tp-profile": profile_main, "tp-search": search_main,
         "tp-train": train_main}


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> dict[str, Path | str]:
    """A tiny checkpoint, a tiny task and a latency table for its shape (another 'machine')."""
    root = tmp_path_factory.mktemp("world")
    ckpt = make_tiny_checkpoint(root / "model", layers=4)  # room to prune: a real search
    task = root / "task.csv"
    with task.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["text", "label"])
        for i, t in enumerate(random_sentences(60, seed=3, min_words=3)):
            w.writerow([t, i % 2])
    from tp_search import pruning
    shape = pruning.from_pretrained(ckpt, tokenizer=False).shape
    table = synthetic_table(shape, max_len=64, fp=fake_fingerprint("bad-inputs"), ms_per_gmac=2000,
                            overhead_ms=0.001)  # compute-bound: pruning pays
    table.save(root / "results")
    from tp_search.profiler import Predictor
    from tp_search.search.scoring.objective import fastest
    from tp_search.search.space.candidates import SearchSpace
    from tp_search.search.space.workload import Workload
    pred = Predictor(table)  # a target between the fastest schedule and dense: a real search
    target = (pred.dense(64) + fastest(SearchSpace(shape), {"torch": pred},
                                       Workload("max", 64))[1]) / 2
    other = PruningConfig.topk(pruning.random_model("minilm-l6").shape, [1, 1, .5, .5, .3, .3])
    other.save(root / "other_shape.json")
    return {"ckpt": ckpt, "task": task, "results": root / "results",
            "machine": table.machine_id, "other_config": root / "other_shape.json",
            "target": f"{target:.6f}"}


# ---- setups: make a bad thing inside the case directory, return its path ---------------

def corrupt_weights(d: Path, w: dict) -> Path:
    m = d / "model"
    _copy_model(w["ckpt"], m)
    (m / "model.safetensors").write_bytes(b"\x10\x00\x00")
    return m


def corrupt_config(d: Path, w: dict) -> Path:
    m = d / "model"
    _copy_model(w["ckpt"], m)
    (m / "config.json").write_text("{ not json")
    return m


def incomplete_config(d: Path, w: dict) -> Path:
    m = d / "model"
    _copy_model(w["ckpt"], m)
    (m / "config.json").write_text(json.dumps({"model_type": "bert"}))
    return m


def unsupported_family(d: Path, w: dict) -> Path:
    m = d / "model"
    _copy_model(w["ckpt"], m)
    cfg = json.loads((m / "config.json").read_text())
    (m / "config.json").write_text(json.dumps({**cfg, "model_type": "gpt2"}))
    return m


def no_weights(d: Path, w: dict) -> Path:
    m = d / "model"
    _copy_model(w["ckpt"], m)
    (m / "model.safetensors").unlink()
    return m


def malformed_config(d: Path, w: dict) -> Path:
    (d / "cfg.json").write_text('{"format": "tp-search/pruning-config", "version": 1')
    return d / "cfg.json"


def foreign_config(d: Path, w: dict) -> Path:
    (d / "cfg.json").write_text(json.dumps({"hello": 1}))
    return d / "cfg.json"


def csv_file(rows: list[list[str]], encoding: str = "utf-8") -> Callable[[Path, dict], Path]:
    def make(d: Path, w: dict) -> Path:
        p = d / "data.csv"
        with p.open("w", newline="", encoding=encoding) as f:
            csv.writer(f).writerows(rows)
        return p
    return make


def non_utf8_csv(d: Path, w: dict) -> Path:
    p = d / "data.csv"
    p.write_bytes(b"text,label\n" + "caf\xe9 tr\xe8s bon,1\n".encode("latin-1") * 30)
    return p


def unreadable_csv(d: Path, w: dict) -> Path:
    p = csv_file([["text", "label"]] + [["good film", "1"]] * 30)(d, w)
    p.chmod(0)
    return p


def a_file(d: Path, w: dict) -> Path:
    (d / "file").write_text("x")
    return d / "file"


def _copy_model(src: Path, dst: Path) -> None:
    dst.mkdir(parents=True)
    for f in Path(src).iterdir():
        (dst / f.name).write_bytes(f.read_bytes())


HEADER_ONLY = csv_file([["text", "label"]])
EMPTY_TEXT = csv_file([["text", "label"]] + [["good film", "1"], ["", "0"]] * 20)
def unknown_dev_label(d: Path, w: dict) -> Path:
    """A task directory whose dev.csv has a label train.csv never uses."""
    task = d / "mytask"
    task.mkdir()
    csv_file([["text", "label"]] + [["good film", "pos"], ["bad film", "neg"]] * 15)(task, w)
    (task / "data.csv").rename(task / "train.csv")
    csv_file([["text", "label"], ["fine film", "meh"], ["good film", "pos"]])(task, w)
    (task / "data.csv").rename(task / "dev.csv")
    return task


@dataclass
class Case:
    cli: str
    argv: list[str]  # {ckpt} {task} {results} {machine} {target} {out} {bad} ... filled in
    expect: str  # a regular expression the one error line must match
    setup: Callable[[Path, dict], Path] | None = None  # makes {bad}
    id: str = ""
    marks: list = field(default_factory=list)

    def __post_init__(self) -> None:
        self.id = self.id or f"{self.cli}:{self.expect[:30]}"


TINY = ["--model", "{ckpt}", "--task", "{task}"]
SEARCH = ["--latency-ms", "{target}", "--search-only", "--truncation", "none", *TINY,
          "--machine", "{machine}",
          "--results", "{results}", "--out", "{out}", "--eval-samples", "8"]
PIPELINE = ["--latency-ms", "{target}", *TINY, "--machine", "{machine}", "--results",
            "{results}", "--out", "{out}", "--max-steps", "1"]  # the main job: checked first
BENCH = [*TINY, "--seq-len", "16", "--repeats", "1", "--warmup", "0", "--eval-samples", "4",
         "--out", "{out}/report.json"]
PROFILE = ["--model", "{ckpt}", "--max-len", "8", "--grid", "1,8", "--out", "{out}"]
TRAIN = ["finetune", *TINY, "--out", "{out}", "--max-steps", "1"]
ROOT_ONLY = pytest.mark.skipif(os.geteuid() == 0, reason="root reads unreadable files")

CASES = [
    # unknown device, every CLI
    Case("tp-bench", [*BENCH, "--device", "tpu"], r"unknown device 'tpu'"),
    Case("tp-profile", [*PROFILE, "--device", "tpu"], r"unknown device 'tpu'"),
    Case("tp-search", [*SEARCH, "--device", "tpu"], r"unknown device 'tpu'"),
    Case("tp-train", [*TRAIN, "--device", "tpu"], r"unknown device 'tpu'"),
    # missing and corrupt model directories
    Case("tp-bench", [*BENCH, "--model", "{out}/nope"], r"directory not found", id="bench-missing-model"),
    Case("tp-bench", [*BENCH, "--model", "{bad}"], r"unreadable weights", corrupt_weights),
    Case("tp-bench", [*BENCH, "--model", "{bad}"], r"invalid JSON", corrupt_config),
    Case("tp-bench", [*BENCH, "--model", "{bad}"], r"lacks 'vocab_size'", incomplete_config),
    Case("tp-bench", [*BENCH, "--model", "{bad}"], r"has no model weights", no_weights),
    Case("tp-bench", [*BENCH, "--model", "{bad}"], r"model_type 'gpt2'", unsupported_family),
    Case("tp-profile", [*PROFILE, "--model", "{bad}"], r"unreadable weights", corrupt_weights),
    Case("tp-search", [*SEARCH, "--model", "{bad}"], r"invalid JSON", corrupt_config),
    Case("tp-train", [*TRAIN, "--model", "{bad}"], r"unreadable weights", corrupt_weights),
    Case("tp-train", ["distill", "--teacher", "{out}/nope", "--task", "{task}", "--out",
                      "{out}/d"], r"directory not found", id="train-missing-teacher"),
    # malformed and mismatched pruning configurations
    Case("tp-bench", [*BENCH, "--config", "{bad}"], r"invalid JSON", malformed_config),
    Case("tp-bench", [*BENCH, "--config", "{bad}"], r"not a tp-search pruning configuration",
         foreign_config),
    Case("tp-bench", [*BENCH, "--config", "{other_config}"], r"made for a model with 6 layers"),
    Case("tp-bench", [*BENCH, "--keep", "1,0.5,0.5"], r"needs 4 keep fractions"),
    Case("tp-bench", [*BENCH, "--keep", "0.5,0.9,0.9,0.9"], r"non-increasing"),
    Case("tp-bench", [*BENCH, "--keep", "1,x,1,1"], r"--keep '1,x,1,1'"),
    Case("tp-train", ["prune", "--method", "top", "--config", "{other_config}", "--teacher",
                      "{ckpt}", "--model", "{ckpt}", "--task", "{task}", "--out", "{out}/p"],
         r"made for a model with 6 layers", id="train-mismatched-config"),
    Case("tp-train", ["prune", "--method", "top", "--teacher", "{ckpt}", "--model", "{ckpt}",
                      "--task", "{task}", "--out", "{out}/p"], r"needs --config",
         id="train-no-config"),
    # CSV edge cases
    Case("tp-train", [*TRAIN, "--task", "{bad}"], r"no (train|dev|)\s*(examples|rows)|header",
         HEADER_ONLY, id="csv-header-only"),
    Case("tp-train", [*TRAIN, "--task", "{bad}"], r"empty text", EMPTY_TEXT, id="csv-empty-text"),
    Case("tp-train", [*TRAIN, "--task", "{bad}"], r"'meh'.*never occurs", unknown_dev_label,
         id="csv-unknown-dev-label"),
    Case("tp-train", [*TRAIN, "--task", "{bad}"], r"UTF-8|utf-8", non_utf8_csv, id="csv-non-utf8"),
    Case("tp-bench", [*BENCH, "--task", "{bad}"], r"cannot read|permission|Permission",
         unreadable_csv, id="csv-unreadable", marks=[ROOT_ONLY]),
    Case("tp-search", [*SEARCH, "--task", "{out}/missing.csv"], r"data file not found",
         id="search-missing-task"),
    # numeric flags out of range
    Case("tp-bench", [*BENCH, "--batch", "0"], r"--batch: expected a positive integer"),
    Case("tp-bench", [*BENCH, "--seq-len", "100000"], r"exceeds the model's 64 positions"),
    Case("tp-bench", [*BENCH, "--batch", "100000000", "--seq-len", "64"],
         r"lower --batch or --seq-len", id="bench-beyond-memory"),
    Case("tp-profile", [*PROFILE, "--batch", "100000000"], r"lower --batch or --max-len",
         id="profile-beyond-memory"),
    Case("tp-profile", [*PROFILE, "--max-len", "0"], r"--max-len: expected a positive integer"),
    Case("tp-profile", [*PROFILE, "--grid", "1,x"], r"--grid '1,x'"),
    Case("tp-profile", [*PROFILE, "--out", "{bad}/results"], r"--out .*cannot create", a_file),
    Case("tp-search", [*SEARCH, "--latency-ms", "0"], r"--latency-ms: expected a positive"),
    Case("tp-search", [*SEARCH, "--trials", "0"], r"--trials: expected a positive integer"),
    Case("tp-search", [*SEARCH, "--latency-ms", "1e-9"], r"below the fastest achievable",
         id="search-infeasible"),
    Case("tp-search", ["--latency-ms", "{target}", *TINY, "--machine", "{machine}", "--results",
                       "{results}", "--out", "{out}", "--margin", "0.9"], r"--margin 0.9",
         id="search-margin"),
    Case("tp-search", [*SEARCH, "--machine", "no-such-machine"],
         r"no latency table .* no-such-machine"),
    Case("tp-train", [*TRAIN, "--lr", "-1"], r"--lr must be positive"),
    Case("tp-train", [*TRAIN, "--max-len", "100000"], r"exceeds"),
    # the main job refuses bad flags before any stage runs
    Case("tp-search", [*PIPELINE, "--seq-len", "100000"], r"--seq-len 100000 exceeds the "
         r"model's 64 positions", id="pipeline-seq-len"),
    Case("tp-search", [*PIPELINE, "--out", "{bad}"], r"--out .* is a file", a_file,
         id="pipeline-out-file"),
    Case("tp-search", [*PIPELINE, "--train-max-len", "100000"], r"--train-max-len 100000 "
         r"exceeds", id="pipeline-train-max-len"),
    Case("tp-search", [*PIPELINE, "--percentile", "150"], r"--percentile 150 must be in",
         id="pipeline-percentile"),
    Case("tp-search", [*PIPELINE, "--truncation", "100"], r"--truncation 100: a max length",
         id="pipeline-truncation"),
    Case("tp-search", [*PIPELINE, "--rank-weight", "-1"], r"--rank-weight -1",
         id="pipeline-rank-weight"),
    Case("tp-search", [*PIPELINE, "--backend", "tpu"], r"unknown backend 'tpu'",
         id="pipeline-backend"),
    Case("tp-search", [*PIPELINE, "--holdout", "100000"], r"cannot hold out 100000",
         id="pipeline-holdout"),
    Case("tp-search", [*PIPELINE, "--holdout", "5", "--eval-samples", "9"],
         r"--eval-samples 9 is more than the 5 held-out", id="pipeline-eval-samples"),
    Case("tp-search", [*PIPELINE, "--layers", "9"], r"candidate layer 9 is out of range",
         id="pipeline-layers"),
    Case("tp-search", [*PIPELINE, "--machine", "no-such-machine"], r"--machine no-such-machine",
         id="pipeline-machine"),
    # unreachable storage
    Case("tp-search", [*SEARCH, "--storage", "postgresql://u:pw@127.0.0.1:9/db"],
         r"cannot (open|connect|reach)", id="search-unreachable-storage"),
    Case("tp-search", [*SEARCH, "--storage", "mysql+nodriver://x/y"],
         r"storage|--storage", id="search-bad-storage-url"),
]


def _files(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


@pytest.mark.parametrize("case", [pytest.param(c, id=c.id, marks=c.marks) for c in CASES])
def test_bad_input_is_one_line_nonzero_and_writes_nothing(case, world, tmp_path, capsys):
    bad = case.setup(tmp_path, world) if case.setup else tmp_path / "unused"
    out = tmp_path / "out"
    values = {**{k: str(v) for k, v in world.items()}, "out": str(out), "bad": str(bad)}
    argv = [a.format(**values) for a in case.argv] + ["-q"]
    before = _files(tmp_path)
    try:
        rc = MAINS[case.cli](argv)
    except SystemExit as e:  # argparse usage errors
        rc = e.code
    err = capsys.readouterr().err
    os.chmod(bad, 0o644) if bad.exists() and case.setup is unreadable_csv else None
    lines = [line for line in err.splitlines() if line.strip()]
    assert rc not in (0, None), f"exit code {rc}; stderr: {err}"
    assert "Traceback" not in err
    assert len(lines) == 1, f"expected one line, got:\n{err}"
    assert lines[0].startswith(f"{case.cli}") and "error:" in lines[0]
    assert re.search(case.expect, lines[0]), lines[0]
    assert _files(tmp_path) == before, "a refused command wrote files"
