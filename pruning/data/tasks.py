"""Which task a ``--task`` string names, and loading its train or dev split.

Every loader yields the same ``Split`` so training, evaluation and latency profiling do not
care where text came from.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from tp_search.pruning.core.errors import TpError
from tp_search.pruning.data import bbc
from tp_search.pruning.data.generic import generic_spec, load_generic, split_files
from tp_search.pruning.data.readers import GLUE, GLUE_DIRS, RT_NAME, read_glue, read_rotten_tomatoes
from tp_search.pruning.data.spec import SPLITS, Split, TaskSpec

ACCEPTED = (f"{RT_NAME}, {bbc.BBC_NAME}, a GLUE task directory ({GLUE_DIRS}), glue:<task>:<dir>, "
            "a .csv/.tsv file with text[,text_pair],label columns, or a directory with "
            "train.csv and dev.csv (or validation, or .tsv) in that form")


def _glue_key(name: str) -> str | None:
    key = re.sub(r"[-_ ]", "", name.lower())
    return key if key in GLUE else None


# --------------------------------------------------------------------------- resolution

def _resolve(task: str) -> tuple[str, Any]:
    """Classify ``task`` as ("rt", None), ("bbc", None), ("glue", (key, dir)) or ("file", path);
    a "file" path is a CSV/TSV file or a directory of train and dev CSV/TSV files."""
    if task == RT_NAME:
        return "rt", None
    if task == bbc.BBC_NAME:
        return "bbc", None
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
        if key is not None:
            return "glue", (key, path)  # a GLUE-named directory keeps its GLUE columns
        if split_files(path) is not None:
            return "file", path
        if path.suffix.lower() in (".csv", ".tsv"):
            raise TpError(f"{path} is a directory, not a data file: pass the CSV/TSV file itself")
        raise TpError(f"cannot tell the GLUE task from directory name {path.name!r}, and it holds "
                      f"no train.csv/.tsv: name it one of {GLUE_DIRS}, pass glue:<task>:{path}, "
                      "or add train.csv and dev.csv")
    if path.suffix.lower() in (".csv", ".tsv"):
        if not path.is_file():
            raise TpError(f"data file not found: {path}: check the path")
        return "file", path
    if path.is_file():
        raise TpError(f"{path} is not a .csv or .tsv file: save it as CSV or TSV with "
                      "text[,text_pair],label columns")
    if "/" in task or "\\" in task:
        raise TpError(f"task directory not found: {task}: check the path")
    raise TpError(f"unknown task {task!r}: use {ACCEPTED}")


def _existing_dir(path: Path) -> Path:
    if not path.expanduser().is_dir():
        raise TpError(f"task directory not found: {path}: check the path")
    return path.expanduser()


def task_spec(task: str) -> TaskSpec:
    """The spec of ``task`` (reads generic CSV/TSV files, whose labels decide num_labels)."""
    kind, arg = _resolve(task)
    if kind == "rt":
        return TaskSpec(RT_NAME, ("text",), "category", 2, "accuracy", 128, ("rotten", "fresh"))
    if kind == "bbc":
        return bbc.BBC_SPEC
    if kind == "glue":
        return GLUE[arg[0]].spec
    return generic_spec(arg)


def load_task(task: str, split: str) -> Split:
    """Load ``split`` ("train" or "dev") of ``task``; see ``ACCEPTED`` for the task forms."""
    if split not in SPLITS:
        raise TpError(f"unknown split {split!r}: use train or dev")
    kind, arg = _resolve(task)
    if kind == "rt":
        texts, labels = read_rotten_tomatoes()[split]
        out = Split(list(texts), None, list(labels), task_spec(RT_NAME))
    elif kind == "bbc":
        root = bbc.find_bbc_dir().resolve()
        texts, labels = bbc.read_bbc_news(str(root), bbc.stamp(root))[split]
        out = Split(list(texts), None, list(labels), bbc.BBC_SPEC)
    elif kind == "glue":
        out = read_glue(*arg, split)
    else:
        out = load_generic(arg, split)
    if len(out) == 0:
        raise TpError(f"task {task} has no {split} examples: check the data source")
    return out
