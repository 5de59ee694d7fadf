"""The deployed file stands alone: ``RUN/model/model.onnx`` and the saved tokenizer, run with
plain onnxruntime or OpenVINO in a process that never imports tp-search, give the logits
``tp_search.load`` gives. The snippets are the README's, line for line."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

from tp_search import pruning
from tp_search.pruning import PruningConfig
from tp_search.pruning.testing import make_tiny_checkpoint

TEXTS = ["a good film with a great plot", "dull"]

ONNXRUNTIME = '''
import onnxruntime as ort
from transformers import AutoTokenizer

tok = AutoTokenizer.from_pretrained(path)
session = ort.InferenceSession(f"{path}/model.onnx", providers=["CPUExecutionProvider"])
enc = tok(texts, padding=True, truncation=True, return_tensors="np")
names = [i.name for i in session.get_inputs()]
logits = session.run(None, {k: enc[k].astype("int64") for k in names})[0]
'''

OPENVINO = '''
import openvino as ov
from transformers import AutoTokenizer

tok = AutoTokenizer.from_pretrained(path)
compiled = ov.Core().compile_model(f"{path}/model.onnx", "CPU",
                                   {"INFERENCE_PRECISION_HINT": "f32"})
enc = tok(texts, padding=True, truncation=True, return_tensors="np")
feed = {i.get_any_name(): enc[i.get_any_name()].astype("int64") for i in compiled.inputs}
logits = compiled(feed)[compiled.output(0)]
'''

RUNNER = '''
import json, sys
path, texts = sys.argv[1], json.loads(sys.argv[2])
{snippet}
assert not any(m.split(".")[0] == "tp_search" for m in sys.modules), "tp_search was imported"
print(json.dumps(logits.tolist()))
'''


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    mp = pytest.MonkeyPatch()
    mp.setenv("TP_SEARCH_CACHE", str(tmp_path_factory.mktemp("onnx")))
    ckpt = make_tiny_checkpoint(tmp_path_factory.mktemp("m") / "m", layers=3, noise=0.1)
    yield pruning.from_pretrained(ckpt)
    mp.undo()


def plain(snippet: str, path, tmp_path) -> torch.Tensor:
    proc = subprocess.run([sys.executable, "-c", RUNNER.format(snippet=snippet), str(path),
                           json.dumps(TEXTS)], capture_output=True, text=True, cwd=tmp_path,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return torch.tensor(json.loads(proc.stdout.strip().splitlines()[-1]))


@pytest.mark.parametrize("backend,snippet", [("ort", ONNXRUNTIME), ("ov", ONNXRUNTIME),
                                             ("ov", OPENVINO)])
def test_deployed_file_runs_without_tp_search(model, tmp_path, backend, snippet):
    cfg = PruningConfig.topk(model.shape, [1, 0.6, 0.3])
    path = pruning.deploy(model, cfg, backend, tmp_path / "model", max_len=16)
    d = pruning.load(path)
    enc = d.tokenizer(TEXTS, padding=True, truncation=True, return_tensors="pt")
    ours = d(enc["input_ids"], enc["attention_mask"], enc.get("token_type_ids"))
    theirs = plain(snippet, path, tmp_path)
    assert theirs.shape == ours.shape
    assert (theirs - ours).abs().max() <= 1e-4


def test_the_snippets_are_the_readmes():
    """What this file runs is what the README tells a user to run."""
    from pathlib import Path
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    for snippet in (ONNXRUNTIME, OPENVINO):
        assert snippet.strip() in readme
