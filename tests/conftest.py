from pathlib import Path

import pytest
import torch

from tp_search.pruning.testing import make_tiny_checkpoint

torch.set_num_threads(1)


@pytest.fixture(scope="session")
def tiny_ckpt(tmp_path_factory):
    return make_tiny_checkpoint(tmp_path_factory.mktemp("tiny") / "model")


@pytest.fixture(scope="session")
def tiny_bertmodel_ckpt(tmp_path_factory):
    """A checkpoint without a classification head (like all-MiniLM-L6-v2)."""
    return make_tiny_checkpoint(tmp_path_factory.mktemp("tinybase") / "model", num_labels=None)


# Shared by the data-loading tests (test_glue, test_generic_tasks, test_task_errors, test_batching).


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


@pytest.fixture
def sst2(tmp_path: Path) -> Path:
    d = tmp_path / "SST-2"
    write(d / "train.tsv", "sentence\tlabel\na great film \t1\nawful \"acting\t0\n"
          "it 's fine\t1\nnull\t0\n")
    write(d / "dev.tsv", "sentence\tlabel\ngood\t1\nbad\t0\n")
    return d


@pytest.fixture(autouse=True)
def short_calibration_window(monkeypatch):
    """Tables built in tests calibrate in a short window, not the 20 s a real machine gets
    (tests check what is computed, never how long the window was)."""
    from tp_search.profiler.build_settings import BuildSettings
    init = BuildSettings.__init__

    def short(self, *a, calibration_window_s: float = 0.2, **k):
        init(self, *a, calibration_window_s=calibration_window_s, **k)
    monkeypatch.setattr(BuildSettings, "__init__", short)
