"""Generic CSV/TSV files and task directories loaded as tasks."""
from __future__ import annotations

import logging
import zlib
from pathlib import Path

import pytest
from conftest import write

from tp_search.pruning.data import load_task, task_spec
from tp_search.pruning.core.errors import TpError


def test_csv_int_labels_and_crc32_split(tmp_path: Path):
    texts = [f"review number {i}" for i in range(60)]
    f = write(tmp_path / "reviews.csv", "text,label\n" + "".join(f'"{t}",{i % 3}\n' for i, t in enumerate(texts)))
    train, dev = load_task(str(f), "train"), load_task(str(f), "dev")
    expect_dev = [t for t in texts if zlib.crc32(t.encode("utf-8")) % 10 == 0]
    assert dev.texts == expect_dev and len(train) + len(dev) == 60
    assert set(train.texts).isdisjoint(dev.texts)
    assert (train.task.num_labels, train.task.metric, train.task.name) == (3, "accuracy", "reviews")
    assert load_task(str(f), "dev").texts == dev.texts  # deterministic


def test_csv_pairs_string_labels_and_split_column(tmp_path: Path):
    f = write(tmp_path / "nli.csv", "text,text_pair,label,split\n"
              "a cat,an animal,yes,train\n\"x, y\",z,no,train\nq,r,yes,dev\ns,t,maybe,validation\n")
    train, dev = load_task(str(f), "train"), load_task(str(f), "dev")
    assert train.texts == ["a cat", "x, y"] and train.pairs == ["an animal", "z"]
    assert train.task.label_names == ("maybe", "no", "yes")
    assert train.labels == [2, 1] and dev.labels == [2, 0]
    assert train.task.text_cols == ("text", "text_pair")


def test_tsv_float_labels_are_regression(tmp_path: Path):
    f = write(tmp_path / "scores.tsv", "text\tlabel\tsplit\na\t0.5\ttrain\nb\t1\tdev\n")
    split = load_task(str(f), "train")
    assert split.labels == [0.5] and split.task.num_labels == 1
    assert split.task.metric == "pearson_spearman"


# --------------------------------------------------------------------------- task directories

def test_task_directory_shares_one_label_mapping(tmp_path: Path):
    d = tmp_path / "my_reviews"
    write(d / "train.csv", "text,label\ngreat,pos\n\"bad, really\",neg\nfine,pos\n")
    write(d / "dev.csv", "text,label\nok,pos\nawful,neg\n")
    train, dev = load_task(str(d), "train"), load_task(str(d), "dev")
    assert train.texts == ["great", "bad, really", "fine"] and dev.texts == ["ok", "awful"]
    assert train.task.label_names == ("neg", "pos")
    assert train.labels == [1, 0, 1] and dev.labels == [1, 0]
    spec = task_spec(str(d))
    assert (spec.name, spec.num_labels, spec.metric, spec.text_cols) == \
        ("my_reviews", 2, "accuracy", ("text",))


def test_task_directory_validation_tsv_pairs_and_integer_labels(tmp_path: Path):
    d = tmp_path / "pairs"
    write(d / "train.tsv", "text\ttext_pair\tlabel\na\tb\t0\nc\td\t1\n")
    write(d / "validation.tsv", "text\ttext_pair\tlabel\ne\tf\t2\n")
    train, dev = load_task(str(d), "train"), load_task(str(d), "dev")
    assert train.pairs == ["b", "d"] and dev.pairs == ["f"] and dev.labels == [2]
    assert train.task.num_labels == 3  # inferred over both files
    assert train.task.text_cols == ("text", "text_pair")


def test_glue_named_directory_keeps_glue_behaviour(tmp_path: Path):
    d = tmp_path / "SST-2"
    write(d / "train.csv", "text,label\na,1\n")
    write(d / "dev.csv", "text,label\nb,0\n")
    with pytest.raises(TpError, match="data file not found: .*train.tsv"):
        load_task(str(d), "train")


def test_dev_only_string_label_in_one_file_is_a_warning(tmp_path: Path, caplog):
    caplog.set_level(logging.WARNING)  # CLI tests run in-process may have raised the level
    f = write(tmp_path / "warn.csv", "text,label,split\na,yes,train\nb,no,dev\n")
    assert load_task(str(f), "dev").labels == [0]
    assert "label 'no' occurs only in dev rows" in caplog.text
