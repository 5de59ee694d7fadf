"""tp-train command line: the stage chain through output directories, and clear failures."""
import json

import pandas as pd
import pytest

from tp_search import pruning
from tp_search.pruning import PruningConfig
from tp_search.pruning.testing import make_tiny_checkpoint, random_sentences
from tp_search.pruning.train_cli import main

FAST = ["--max-steps", "3", "--batch-size", "8", "--max-len", "32", "-q"]


@pytest.fixture(scope="module")
def chain(tmp_path_factory):
    d = tmp_path_factory.mktemp("cli")
    ckpt = make_tiny_checkpoint(d / "ckpt", layers=2)
    texts = random_sentences(48, seed=2, min_words=3, max_words=15)
    pd.DataFrame({"text": texts, "label": [int("fun" in t) for t in texts]}).to_csv(
        d / "task.csv", index=False)
    task = str(d / "task.csv")
    assert main(["finetune", "--model", str(ckpt), "--task", task, "--out", str(d / "ft"),
                 *FAST]) == 0
    assert main(["distill", "--teacher", str(d / "ft"), "--task", task, "--out", str(d / "ds"),
                 *FAST]) == 0
    return d, task


def test_stage_chain_writes_models_and_metrics(chain, capsys):
    d, task = chain
    shape = pruning.load(d / "ds" / "model").shape
    PruningConfig.topk(shape, [1, 0.5]).save(d / "best_config.json")
    capsys.readouterr()
    rc = main(["prune", "--method", "top", "--config", str(d / "best_config.json"),
               "--teacher", str(d / "ft"), "--model", str(d / "ds"), "--task", task,
               "--out", str(d / "top"), "--bins", "4", *FAST])
    assert rc == 0
    out = capsys.readouterr().out
    assert "prune-top" in out and str(d / "top" / "model") in out
    cfg = pruning.load(d / "top" / "model").pruning
    assert cfg.policy == "topk" and cfg.method == "top"
    assert main(["prune", "--method", "ltp", "--teacher", str(d / "ft"), "--model",
                 str(d / "ds" / "model"), "--task", task, "--out", str(d / "ltp"), *FAST]) == 0
    m = json.loads((d / "ltp" / "metrics.json").read_text())
    assert m["pruning"]["policy"] == "threshold" and m["settings"]["max_steps"] == 3
    # a finished stage is reused: the second run is instant and changes nothing
    before = (d / "ltp" / "metrics.json").read_text()
    assert main(["prune", "--method", "ltp", "--teacher", str(d / "ft"), "--model",
                 str(d / "ds"), "--task", task, "--out", str(d / "ltp"), *FAST]) == 0
    assert (d / "ltp" / "metrics.json").read_text() == before


@pytest.mark.parametrize("args, message", [
    (["prune", "--method", "magic"], "unknown --method 'magic'"),
    (["prune", "--method", "top", "--model", "{ds}"], "needs --teacher"),
    (["distill", "--teacher", "{d}/missing"], "not found"),
    (["prune", "--method", "top", "--teacher", "{ft}", "--model", "{ds}", "--config",
      "{d}/other.json"], "made for a model with 6 layers"),
    (["prune", "--method", "ltp", "--teacher", "{ft}", "--model", "{ds}", "--bins", "4"],
     "--bins does not apply to --method ltp"),
    (["prune", "--method", "top", "--teacher", "{ft}", "--model", "{ds}"], "needs --config"),
])
def test_bad_input_is_one_line_and_exit_1(chain, capsys, args, message):
    d, task = chain
    PruningConfig.topk(pruning.ModelShape(6, 384, 12, 1536), [1, 1, .6, .4, .3, .2]).save(
        d / "other.json")
    fill = {"d": str(d), "ft": str(d / "ft"), "ds": str(d / "ds")}
    argv = [a.format(**fill) for a in args] + ["--task", task, "--out", str(d / "bad")]
    capsys.readouterr()
    assert main(argv) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("tp-train: error: ") and message in err and "\n" not in err


def test_usage_errors_exit_2(capsys):
    with pytest.raises(SystemExit) as e:
        main(["prune"])  # --method is required
    assert e.value.code == 2
    with pytest.raises(SystemExit) as e:
        main(["finetune", "--max-steps", "0"])
    assert e.value.code == 2
