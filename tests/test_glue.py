"""GLUE task directories (SST-2, CoLA, STS-B, MNLI) read by load_task."""
from __future__ import annotations

from pathlib import Path

from conftest import write

from tp_search.pruning.data import load_task, metrics, task_spec


def test_sst2_directory(sst2: Path):
    train = load_task(str(sst2), "train")
    assert train.texts == ["a great film ", 'awful "acting', "it 's fine", "null"]  # stray quote, "null" kept
    assert train.labels == [1, 0, 1, 0] and train.pairs is None
    spec = train.task
    assert (spec.name, spec.num_labels, spec.metric, spec.max_len) == ("sst2", 2, "accuracy", 128)
    assert load_task(str(sst2), "dev").labels == [1, 0]
    # glue:<task>:<dir> works whatever the directory is called
    other = sst2.rename(sst2.parent / "my_data")
    assert load_task(f"glue:SST-2:{other}", "dev").texts == ["good", "bad"]


def test_cola_without_header(tmp_path: Path):
    d = tmp_path / "cola"
    write(d / "train.tsv", "gj04\t1\t\tThe sailors rode the breeze.\ngj04\t0\t*\tThe more books.\n")
    write(d / "dev.tsv", "gj04\t1\t\tHe left.\n")
    train = load_task(str(d), "train")
    assert train.texts == ["The sailors rode the breeze.", "The more books."]
    assert train.labels == [1, 0]
    assert (train.task.metric, metrics.primary(train.task.metric)) == ("matthews", "matthews")


def test_stsb_regression_pairs(tmp_path: Path):
    d = tmp_path / "STS-B"
    header = "index\tgenre\tfilename\tyear\told_index\tsource1\tsource2\tsentence1\tsentence2\tscore\n"
    write(d / "train.tsv", header + "0\tmain\tf\t2012\t1\tnone\tnone\tA plane.\tAn air plane.\t5.000\n"
          "1\tmain\tf\t2012\t4\tnone\tnone\tA man.\tA dog.\t0.5\n")
    write(d / "dev.tsv", header + "0\tmain\tf\t2012\t1\tnone\tnone\tA.\tB.\t2.25\n")
    train = load_task(str(d), "train")
    assert train.pairs == ["An air plane.", "A dog."]
    assert train.labels == [5.0, 0.5]
    assert (train.task.num_labels, train.task.metric) == (1, "pearson_spearman")
    assert train.task.is_regression


def test_mnli_uses_dev_matched_and_label_names(tmp_path: Path):
    d = tmp_path / "MNLI"
    header = "index\tsentence1\tsentence2\tgold_label\n"
    write(d / "train.tsv", header + "0\ta\tb\tcontradiction\n1\tc\td\tentailment\n2\te\tf\tneutral\n")
    write(d / "dev_matched.tsv", header + "0\ta\tb\tneutral\n")
    assert load_task(str(d), "train").labels == [2, 0, 1]
    assert load_task(str(d), "dev").labels == [1]
    assert task_spec(str(d)).num_labels == 3
