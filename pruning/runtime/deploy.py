"""The deployed model directory, and loading it.

``RUN/model`` holds everything a user needs: the PyTorch weights in the family's own
Hugging Face layout (config.json, model.safetensors — the reference, and what every other
backend's file was exported from), the tokenizer (its ``model_max_length`` is the input
truncation the search chose), ``pruning_config.json``, the chosen backend's own artefact
(``model.onnx``; for OpenVINO int8 also ``model.xml``/``model.bin``) and ``deployment.json``:
which backend runs it, with which options and precision, for which task, metric, maximum
length and thread count, and the sha256 of every artefact (checked on load).

``load(path)`` runs the chosen backend; ``load(path, backend="torch")`` the PyTorch
reference of the same model. A directory without ``deployment.json`` (any checkpoint, any
training stage's output) loads as the PyTorch encoder, as it always did.
"""
from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any, Mapping

import torch
from torch import Tensor

from ..config import ModelShape, PruningConfig
from ..core.atomic import atomic_path
from ..core.errors import TpError
from ..model.checkpoint import load as load_checkpoint
from ..model.checkpoint import save
from ..model.encoder import EncoderConfig, PrunedBert
from . import REFERENCE, get_backend, names
from .base import Feeds, Runner
from .export import sha256

DEPLOYMENT = "deployment.json"
FORMAT = "tp-search/deployment"
VERSION = 2  # 2: task, metric, seq_len and per-backend artefact records


def deploy(model: PrunedBert, cfg: PruningConfig, backend: str, path: str | Path,
           max_len: int = 0, threads: int = 1, *, task: str | None = None,
           metric: str | None = None, seq_len: int | None = None,
           calibration: Feeds | None = None) -> Path:
    """Write the model directory for ``backend``, atomically; ``max_len``: inputs are
    truncated to it by the saved tokenizer (0: the model's own limit); ``seq_len``: the
    longest input the workload sends; ``calibration``: train batches for a backend that
    quantizes statically."""
    b = get_backend(backend)
    model.set_pruning(cfg)
    tok = copy.deepcopy(model.tokenizer)  # the caller's tokenizer keeps its own limit
    if tok is not None and max_len:
        tok.model_max_length = max_len
    manifest: dict[str, Any] = {
        "format": FORMAT, "version": VERSION, "backend": backend, "precision": b.precision,
        "description": b.description(), "max_len": max_len, "threads": threads,
        "task": task, "metric": metric, "seq_len": seq_len or model.config.max_len,
        "num_labels": model.config.num_labels, "key": b.key(threads),
        "torch_version": torch.__version__.split("+")[0]}
    path = Path(path)
    with atomic_path(path) as tmp:
        save(model, tmp, tokenizer=tok)
        manifest.update(b.write_artefact(model, cfg, tmp, threads, calibration))
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
    if not isinstance(d, dict) or d.get("format") != FORMAT or d.get("backend") not in names():
        raise TpError(f"{f}: not a tp-search deployment manifest; redeploy the model")
    return d


def checked_file(directory: Path, info: Mapping[str, Any], kind: str) -> Path:
    """The artefact ``info[kind]`` names, after checking it exists and matches its digest."""
    entry = info.get(kind) or {}
    f = Path(directory) / entry.get("file", "")
    if not entry.get("file") or not f.is_file():
        raise TpError(f"{directory} names backend {info['backend']} but has no "
                      f"{entry.get('file') or kind + ' file'}; redeploy the model")
    for key, target in (("sha256", f), ("weights_sha256", f.with_suffix(".bin"))):
        if key in entry and (not target.is_file() or sha256(target) != entry[key]):
            raise TpError(f"{target} does not match its deployment.json (corrupt or "
                          "replaced); redeploy the model")
    return f


class DeployedModel:
    """A deployed model on its backend, called like ``PrunedBert``: ``model(input_ids,
    attention_mask, token_type_ids)`` -> logits. ``reference`` is the PyTorch encoder
    every artefact was exported from; ``runner`` the backend's runner."""

    def __init__(self, path: Path, info: dict[str, Any], reference: PrunedBert) -> None:
        self.path, self.info, self.reference = path, info, reference
        self.backend, self.max_len = info["backend"], int(info.get("max_len") or 0)
        self.runner: Runner = get_backend(self.backend).load_artefact(path, info, reference)

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
    chosen = backend or (info["backend"] if info else REFERENCE)
    if chosen == REFERENCE:
        return reference
    if info is None or info["backend"] != chosen:
        have = info["backend"] if info else f"{REFERENCE} (no {DEPLOYMENT})"
        raise TpError(f"{p} is deployed for {have}, not {chosen}: load it with backend="
                      f"{have.split()[0]!r} or {REFERENCE!r}, or redeploy for {chosen}")
    return DeployedModel(p, info, reference)


def load_runner(path: str | Path) -> Runner:
    """The deployed directory's runner on its own backend (the reference encoder's runner
    for a PyTorch deployment)."""
    d = load(path)
    if isinstance(d, DeployedModel):
        return d.runner
    return get_backend(REFERENCE).build(d, d.pruning, threads=1)
