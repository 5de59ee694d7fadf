"""The deployed model directory, and loading it.

``RUN/model`` holds everything a user needs: the PyTorch weights in the family's own
Hugging Face layout (config.json, model.safetensors — the reference, and what the ONNX
file was exported from), the tokenizer (its ``model_max_length`` is the input truncation
the search chose), ``pruning_config.json``, and for ONNX Runtime backends ``model.onnx``
(fp32 or int8) plus ``deployment.json`` saying which backend runs it.

``pruning.load(path)`` runs the chosen backend; ``pruning.load(path, backend="torch")`` the
PyTorch reference of the same model. A directory without ``deployment.json`` (any
checkpoint, any training stage's output) loads as the PyTorch encoder, as it always did.
"""
from __future__ import annotations

import copy
import json
import shutil
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from tp_search.pruning.config import ModelShape, PruningConfig
from tp_search.pruning.core.errors import TpError
from tp_search.pruning.core.atomic import atomic_path
from tp_search.pruning.model.checkpoint import load as load_checkpoint
from tp_search.pruning.model.checkpoint import save
from tp_search.pruning.model.encoder import EncoderConfig, PrunedBert
from tp_search.pruning.runtime import BACKENDS, get_backend

DEPLOYMENT = "deployment.json"
ONNX = "model.onnx"
FORMAT = "tp-search/deployment"


def deploy(model: PrunedBert, cfg: PruningConfig, backend: str, path: str | Path,
           max_len: int = 0, threads: int = 1) -> Path:
    """Write the model directory for ``backend``, atomically; ``max_len``: inputs are
    truncated to it by the saved tokenizer (0: the model's own limit)."""
    b = get_backend(backend)
    model.set_pruning(cfg)
    tok = copy.deepcopy(model.tokenizer)  # the caller's tokenizer keeps its own limit
    if tok is not None and max_len:
        tok.model_max_length = max_len
    manifest: dict[str, Any] = {"format": FORMAT, "version": 1, "backend": backend,
                                "precision": b.precision, "max_len": max_len,
                                "threads": threads, **{"key": b.key(threads)},
                                "torch": torch.__version__.split("+")[0]}
    path = Path(path)
    with atomic_path(path) as tmp:
        save(model, tmp, tokenizer=tok)
        if backend != "torch":
            from tp_search.pruning.runtime.ort_backend import sha256  # backend-specific: only for ONNX deployments
            src = b.file(model, cfg)
            shutil.copyfile(src, tmp / ONNX)
            manifest["onnx"] = {"file": ONNX, "sha256": sha256(tmp / ONNX)}
        (tmp / DEPLOYMENT).write_text(json.dumps(manifest, indent=2) + "\n")
    return path


def manifest(path: Path) -> dict[str, Any] | None:
    f = Path(path) / DEPLOYMENT
    if not f.is_file():
        return None
    try:
        d = json.loads(f.read_text())
    except json.JSONDecodeError as e:
        raise TpError(f"{f}: invalid JSON ({e.msg}); redeploy the model") from None
    if not isinstance(d, dict) or d.get("format") != FORMAT or d.get("backend") not in BACKENDS:
        raise TpError(f"{f}: not a tp-search deployment manifest; redeploy the model")
    return d


class DeployedModel:
    """A deployed ONNX model, called like ``PrunedBert``: ``model(input_ids, attention_mask,
    token_type_ids)`` -> logits. ``reference`` is the PyTorch encoder it was exported from."""

    def __init__(self, path: Path, info: dict[str, Any], reference: PrunedBert) -> None:
        from tp_search.pruning.runtime.export import input_names  # deployed ONNX: onnx and onnxruntime needed
        from tp_search.pruning.runtime.ort_backend import OrtRunner, sha256
        onnx_file = path / info.get("onnx", {}).get("file", ONNX)
        if not onnx_file.is_file():
            raise TpError(f"{path} names backend {info['backend']} but has no {ONNX}; "
                          "redeploy the model")
        if info.get("onnx", {}).get("sha256") not in (None, sha256(onnx_file)):
            raise TpError(f"{onnx_file} does not match its deployment.json (corrupt or "
                          "replaced); redeploy the model")
        self.path, self.info, self.reference = path, info, reference
        self.backend, self.max_len = info["backend"], int(info.get("max_len") or 0)
        self.runner = OrtRunner(onnx_file, self.backend, info["precision"],
                                input_names(reference, False), int(info.get("threads", 1)))

    @property
    def tokenizer(self) -> Any:
        return self.reference.tokenizer

    @property
    def pruning(self) -> PruningConfig:
        return self.reference.pruning

    @property
    def shape(self) -> ModelShape:
        return self.reference.shape

    @property
    def config(self) -> EncoderConfig:
        return self.reference.config

    def __call__(self, input_ids: Tensor, attention_mask: Tensor | None = None,
                 token_type_ids: Tensor | None = None) -> Tensor:
        return self.runner({"input_ids": input_ids, "attention_mask": attention_mask,
                            "token_type_ids": token_type_ids})

    def describe(self) -> dict[str, Any]:
        return self.runner.describe() | {"max_len": self.max_len, "path": str(self.path)}


def load(path: str | Path, backend: str | None = None, device: str = "cpu"
         ) -> PrunedBert | DeployedModel:
    """A model directory ready for inference on its deployed backend (or ``backend``)."""
    p = Path(path)
    if not p.is_dir():
        raise TpError(f"model directory {p} not found")
    info = manifest(p)
    reference = load_checkpoint(p, device)
    chosen = backend or (info["backend"] if info else "torch")
    if chosen == "torch":
        return reference
    if info is None or info["backend"] != chosen:
        have = info["backend"] if info else "torch (no deployment.json)"
        raise TpError(f"{p} is deployed for {have}, not {chosen}: load it with backend="
                      f"{have.split()[0]!r} or 'torch', or redeploy for {chosen}")
    return DeployedModel(p, info, reference)
