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
