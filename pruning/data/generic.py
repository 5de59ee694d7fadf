"""Any CSV/TSV as a task: one file with text[,text_pair],label[,split] columns, or a directory
holding train.(csv|tsv) next to dev.(csv|tsv) or validation.(csv|tsv) with those columns.

Labels are inferred over all rows of the task together, so train and dev share one mapping:
integers -> classes 0..max; other numbers -> regression; anything else -> sorted string ids.
Every problem with the files is a one-line TpError naming the file, the row and the fix.
"""
from __future__ import annotations

import csv
import functools
import logging
import zlib
from pathlib import Path

import numpy as np
import pandas as pd

from tp_search.pruning.core.errors import TpError
from tp_search.pruning.data.files import read_table, require
from tp_search.pruning.data.spec import SPLITS, Split, TaskSpec

log = logging.getLogger("tp")

Part = tuple[tuple[str, ...], tuple[str, ...] | None, tuple]  # texts, pairs, labels
GenericParts = dict[str, Part]
SPLIT_VALUES = {"train": "train", "dev": "dev", "validation": "dev", "val": "dev"}
_EXTS = (".csv", ".tsv")
_DEV_STEMS = ("dev", "validation")
_NEEDED = ("text", "label")


def _row(mask: pd.Series | np.ndarray) -> int:
    """The spreadsheet row of the first True (the header is row 1)."""
    return int(np.asarray(mask).argmax()) + 2


def _read_rows(path: Path, fix_columns: str = "add it or fix the header") -> pd.DataFrame:
    """One file's rows, with text (and text_pair) filled in and a label on every row."""
    df = read_table(path, "\t" if path.suffix.lower() == ".tsv" else ",", csv.QUOTE_MINIMAL)
    require(df, _NEEDED, path, fix_columns)
    if len(df) == 0:
        raise TpError(f"{path} has a header but no rows: add examples below the header")
    for col in ("text", "text_pair"):
        if col in df.columns:
            empty = df[col].str.strip() == ""
            if empty.any():
                raise TpError(f"empty text in column {col!r} of {path} (row {_row(empty)}): "
                              "fill it in or drop the row")
    raw = df["label"].str.strip()
    if (raw == "").any():
        raise TpError(f"unparseable label '' in column 'label' of {path} (row {_row(raw == '')}): "
                      "fill in every label")
    return df.assign(label=raw)


def _infer_labels(frames: list[tuple[Path, pd.Series]]
                  ) -> tuple[list[list], int, str, tuple[str, ...]]:
    """Per-frame label lists, num_labels, metric and label names, inferred over all frames."""
    nums = [pd.to_numeric(raw, errors="coerce") for _, raw in frames]
    names: tuple[str, ...] = ()
    if not any(n.isna().any() for n in nums) and all((n == n.round()).all() for n in nums):
        for (path, raw), n in zip(frames, nums):
            if (n < 0).any():
                raise TpError(f"unparseable label {raw[n < 0].iloc[0]!r} in column 'label' of "
                              f"{path}: integer labels must be 0..k-1")
        labels: list[list] = [[int(v) for v in n] for n in nums]
        num_labels, metric = max(max(ls) for ls in labels) + 1, "accuracy"
        num_labels = max(num_labels, 2)  # a single class 0 is still classification
    elif not any(n.isna().any() for n in nums):
        labels, num_labels, metric = [[float(v) for v in n] for n in nums], 1, "pearson_spearman"
    else:
        names = tuple(sorted(set().union(*(set(raw) for _, raw in frames))))
        ids = {name: i for i, name in enumerate(names)}
        labels = [[ids[v] for v in raw] for _, raw in frames]
        num_labels, metric = len(names), "accuracy"
    return labels, num_labels, metric, names


def _part(df: pd.DataFrame, labels: list, mask: np.ndarray | None = None) -> Part:
    sel = np.ones(len(df), dtype=bool) if mask is None else mask
    texts = tuple(df["text"].to_numpy()[sel])
    pairs = tuple(df["text_pair"].to_numpy()[sel]) if "text_pair" in df.columns else None
    return texts, pairs, tuple(np.array(labels, dtype=object)[sel])


def _spec(name: str, df: pd.DataFrame, num_labels: int, metric: str,
          names: tuple[str, ...]) -> TaskSpec:
    cols = ("text", "text_pair") if "text_pair" in df.columns else ("text",)
    return TaskSpec(name, cols, "label", num_labels, metric, 128, names)


def _dev_only_labels(train: pd.Series, dev: pd.Series) -> tuple[str, int] | None:
    """The first dev string label never seen in train, with its row, or None."""
    unseen = ~dev.isin(set(train))
    return (dev[unseen].iloc[0], _row(unseen)) if unseen.any() else None


# --------------------------------------------------------------------------- one file

@functools.lru_cache(maxsize=8)
def read_generic(path_str: str, mtime_ns: int) -> tuple[TaskSpec, GenericParts]:
    """Parse a text[,text_pair],label[,split] file once (cache keyed on mtime).

    Without a split column dev is the rows whose text has crc32 % 10 == 0 (deterministic).
    """
    path = Path(path_str)
    df = _read_rows(path)
    (labels,), num_labels, metric, names = _infer_labels([(path, df["label"])])
    if "split" in df.columns:
        which = df["split"].str.strip().str.lower()
        bad = ~which.isin(SPLIT_VALUES)
        if bad.any():
            raise TpError(f"unknown split value {df['split'][bad].iloc[0]!r} in column 'split' of "
                          f"{path} (row {_row(bad)}): use train, dev or validation")
        is_dev = (which.map(SPLIT_VALUES) == "dev").to_numpy()
    else:
        is_dev = np.array([zlib.crc32(t.encode("utf-8")) % 10 == 0 for t in df["text"]], dtype=bool)
    if names and is_dev.any() and (~is_dev).any():
        unseen = _dev_only_labels(df["label"][~is_dev], df["label"][is_dev])
        if unseen:
            log.warning("label %r occurs only in dev rows of %s: the model never trains on it",
                        unseen[0], path)
    parts = {"train": _part(df, labels, ~is_dev), "dev": _part(df, labels, is_dev)}
    return _spec(path.stem, df, num_labels, metric, names), parts


def _empty_hint(path: Path, split: str) -> str:
    """How to give a single file some ``split`` rows."""
    if "split" in read_table(path, "\t" if path.suffix.lower() == ".tsv" else ",",
                             csv.QUOTE_MINIMAL).columns:
        return f"mark some rows {split} in its split column"
    return ("add a split column (train/dev) or more rows (without one, dev is the ~10% of rows "
            "whose text hashes there)")


# --------------------------------------------------------------------------- a directory

def split_files(root: Path) -> tuple[Path, Path] | None:
    """(train file, dev file) of a task directory; None when it holds neither."""
    def one(stems: tuple[str, ...]) -> Path | None:
        found = [root / f"{s}{e}" for s in stems for e in _EXTS if (root / f"{s}{e}").exists()]
        if len(found) > 1:
            raise TpError(f"{root} holds both {found[0].name} and {found[1].name}: "
                          "keep one of them")
        return found[0] if found else None

    train, dev = one(("train",)), one(_DEV_STEMS)
    if train is None and dev is None:
        return None
    if dev is None:
        raise TpError(f"{root} has {train.name} but no dev.csv/.tsv or validation.csv/.tsv: "
                      "add one, or pass a single file with a split column")
    if train is None:
        raise TpError(f"{root} has {dev.name} but no train.csv or train.tsv: add one")
    return train, dev


@functools.lru_cache(maxsize=8)
def read_generic_dir(root_str: str, train_str: str, dev_str: str,
                     mtimes: tuple[int, int]) -> tuple[TaskSpec, GenericParts]:
    """Parse a task directory's train and dev files once (cache keyed on their mtimes)."""
    root, paths = Path(root_str), (Path(train_str), Path(dev_str))
    fix = f"add it or fix the header (a GLUE directory: pass glue:<task>:{root})"
    frames = [_read_rows(p, fix) for p in paths]
    train, dev = frames
    if ("text_pair" in train.columns) != ("text_pair" in dev.columns):
        missing = paths[0] if "text_pair" not in train.columns else paths[1]
        require(frames[paths.index(missing)], ("text_pair",), missing)
    for path, df, role in zip(paths, frames, SPLITS):
        if "split" in df.columns:
            other = df["split"].str.strip().str.lower().map(SPLIT_VALUES) != role
            if other.any():
                raise TpError(f"{path} has split value {df['split'][other].iloc[0]!r} "
                              f"(row {_row(other)}) but holds the {role} rows: "
                              "drop its split column")
    labels, num_labels, metric, names = _infer_labels(
        [(p, df["label"]) for p, df in zip(paths, frames)])
    if names:
        unseen = _dev_only_labels(train["label"], dev["label"])
        if unseen:
            raise TpError(f"label {unseen[0]!r} in {paths[1]} (row {unseen[1]}) never occurs in "
                          f"{paths[0]}: add training examples with it or fix the label")
    parts = {"train": _part(train, labels[0]), "dev": _part(dev, labels[1])}
    return _spec(root.name, train, num_labels, metric, names), parts


# --------------------------------------------------------------------------- entry points

def _parsed(source: Path) -> tuple[TaskSpec, GenericParts]:
    if source.is_dir():
        files = split_files(source)
        if files is None:
            raise TpError(f"{source} holds no train.csv or train.tsv: add train and dev files")
        train, dev = (f.resolve() for f in files)
        return read_generic_dir(str(source.resolve()), str(train), str(dev),
                                (train.stat().st_mtime_ns, dev.stat().st_mtime_ns))
    return read_generic(str(source.resolve()), source.stat().st_mtime_ns)


def generic_spec(source: Path) -> TaskSpec:
    """The spec of a CSV/TSV file or task directory (reads it: labels decide num_labels)."""
    return _parsed(source)[0]


def load_generic(source: Path, split: str) -> Split:
    """``split`` of a CSV/TSV file or task directory; an empty split is a TpError with the fix."""
    spec, parts = _parsed(source)
    texts, pairs, labels = parts[split]
    if not texts:
        raise TpError(f"{source} has no {split} examples: {_empty_hint(source, split)}")
    return Split(list(texts), None if pairs is None else list(pairs), list(labels), spec)
