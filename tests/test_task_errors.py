"""Bad task names and bad CSV/TSV/GLUE input fail with one-line TpErrors."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import write

from tp_search.pruning.data import load_task
from tp_search.pruning.core.errors import TpError


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
