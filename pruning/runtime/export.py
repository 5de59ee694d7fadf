"""The pruned encoder exported to ONNX, with its pruning configuration inside the graph.

The same ``PrunedBert.forward`` runs eager and exported: under ``torch.compiler.is_exporting``
it always carries the attention mask and computes each layer's kept counts and top-k size as
tensors (from every example's real length, or its scores), so one graph serves any length
up to the model's maximum and padded mixed-length batches. ``keep_input=True`` makes the
schedule a graph input instead (``schedule="topk"``: the keep fractions; ``"threshold"``:
LTP's thresholds): every layer from 1 on scores and selects, so one export (and one int8
quantization) evaluates any schedule of that policy — what the search needs.

Exports take seconds to minutes, so files are cached by a digest of everything that
decides the graph: weights, configuration, inputs, and the torch/onnx versions.
"""
from __future__ import annotations

import contextlib
import hashlib
import io
import json
import logging
import os
import warnings
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import onnx
import torch
from torch import Tensor, nn

from ..config import PruningConfig
from ..core.atomic import atomic_path
from ..core.errors import TpError
from ..model.encoder import PrunedBert

log = logging.getLogger("tp.runtime")

EXPORT_VERSION = 5  # bump when the export changes what a cached file holds (5: integer counts)
ONNX_FILE = "model.onnx"  # the exported graph in a deployed model directory


class ScheduleInput:
    """A configuration whose values are a tensor (a graph input): top-k keep fractions or
    thresholds."""

    def __init__(self, policy: str, values: Tensor) -> None:
        self.policy = policy
        self.keep = values if policy == "topk" else None
        self.thresholds = values if policy == "threshold" else None

    def prunes_at(self, layer: int) -> bool:
        return layer >= 1  # every layer may select; a no-op schedule keeps all


SCHEDULE_INPUT = {"topk": "keep", "threshold": "thresholds"}  # the input's name


class _Graph(nn.Module):
    """The encoder's forward with the inputs an ONNX graph takes."""

    def __init__(self, model: PrunedBert, cfg: PruningConfig | None, token_types: bool,
                 schedule: str = "topk") -> None:
        super().__init__()
        self.model, self.cfg, self.token_types = model, cfg, token_types
        self.schedule = schedule

    def forward(self, input_ids: Tensor, attention_mask: Tensor, *rest: Tensor) -> Tensor:
        token_type_ids = rest[0] if self.token_types else None
        cfg = ScheduleInput(self.schedule, rest[-1]) if self.cfg is None else self.cfg
        return self.model(input_ids, attention_mask, token_type_ids, pruning=cfg)


def input_names(model: PrunedBert, keep_input: bool, schedule: str = "topk") -> list[str]:
    names = ["input_ids", "attention_mask"]
    if model.embeddings.token_type is not None:
        names.append("token_type_ids")
    return names + ([SCHEDULE_INPUT[schedule]] if keep_input else [])


def numpy_feed(names: Sequence[str], batch: Mapping[str, Tensor],
               keep: Sequence[float] | None = None) -> dict[str, np.ndarray]:
    """The inputs an exported graph takes, from a batch of tensors: a missing attention mask
    is all ones, missing token types zeros, and ``keep`` the schedule of a keep-input graph."""
    feed: dict[str, np.ndarray] = {}
    for n in names:
        if n == "keep":
            if keep is None:
                raise ValueError("this graph takes the keep schedule per call: keep=...")
            feed[n] = np.asarray(keep, dtype=np.float64)  # as the encoder counts
        elif n == "thresholds":
            if keep is None:
                raise ValueError("this graph takes the thresholds per call: keep=...")
            feed[n] = np.asarray(keep, dtype=np.float32)  # as the scores compare
        elif n == "token_type_ids" and batch.get(n) is None:
            feed[n] = np.zeros(tuple(batch["input_ids"].shape), dtype=np.int64)
        elif n == "attention_mask" and batch.get(n) is None:
            feed[n] = np.ones(tuple(batch["input_ids"].shape), dtype=np.int64)
        else:
            feed[n] = batch[n].detach().cpu().numpy().astype(np.int64, copy=False)
    return feed


def sha256(path: Path) -> str:
    """The file's digest (a deployed artefact is checked against it on load)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def cache_dir(path: Path | None = None) -> Path:
    return Path(path or os.environ.get("TP_SEARCH_CACHE")
                or Path.home() / ".cache" / "tp-search" / "onnx")


def digest(model: PrunedBert, cfg: PruningConfig | None, keep_input: bool,
           schedule: str = "topk") -> str:
    h = hashlib.sha1()
    for name, t in model.state_dict().items():
        h.update(name.encode())
        h.update(t.detach().cpu().contiguous().numpy().tobytes())
    cfg_d = None if cfg is None else {k: v for k, v in cfg.to_dict().items() if k != "meta"}
    inp = (keep_input if schedule == "topk" else f"{keep_input}:{schedule}")
    h.update(json.dumps({"cfg": cfg_d, "keep_input": inp, "family": model.config.family,
                         "torch": torch.__version__, "onnx": onnx.__version__,
                         "export": EXPORT_VERSION}, sort_keys=True).encode())
    return h.hexdigest()[:16]


def export_onnx(model: PrunedBert, cfg: PruningConfig | None, path: Path,
                keep_input: bool = False, schedule: str = "topk") -> Path:
    """Write ``model`` under ``cfg`` (None with ``keep_input``) as an ONNX file."""
    if cfg is not None and keep_input:
        raise ValueError("keep_input graphs take their schedule per call, not a cfg")
    model = model.eval().cpu()
    names = input_names(model, keep_input, schedule)
    n = min(16, model.config.max_len)
    ids = torch.randint(5, max(6, model.config.vocab_size), (2, n))
    mask = torch.ones_like(ids)
    mask[1, n // 2:] = 0
    args: list[Tensor] = [ids, mask]
    if "token_type_ids" in names:
        args.append(torch.zeros_like(ids))
    if keep_input and schedule == "topk":
        args.append(torch.linspace(1.0, 0.5, model.config.num_layers, dtype=torch.float64))
    elif keep_input:
        args.append(torch.linspace(0.0, 0.06, model.config.num_layers, dtype=torch.float32))
    batch = torch.export.Dim("batch")
    seq = torch.export.Dim("sequence", min=2, max=model.config.max_len)
    tokens = {0: batch, 1: seq}
    rest = ((tokens,) if "token_type_ids" in names else ()) + (({},) if keep_input else ())
    # positional, as forward(input_ids, attention_mask, *rest) takes them; no varargs at all
    # (DistilBERT, no keep input) means no third entry
    dynamic = (tokens, tokens, rest) if rest else (tokens, tokens)
    graph = _Graph(model, None if keep_input else (cfg or model.pruning),
                   "token_type_ids" in names, schedule)
    return export_module(graph, tuple(args), names, ["logits"], dynamic, Path(path))


def export_module(module: nn.Module, args: tuple[Tensor, ...], names: list[str],
                  outputs: list[str], dynamic: Any, path: Path) -> Path:
    """``torch.onnx.export`` (dynamo) of any module of the encoder, atomically and quietly;
    the profiler exports per-layer graphs with it."""
    with atomic_path(path) as tmp, _quiet():
        try:
            torch.onnx.export(module, args, str(tmp), dynamo=True, external_data=False,
                              input_names=names, output_names=outputs,
                              dynamic_shapes=dynamic)
        except Exception as e:  # the exporter raises many kinds; one line for the user
            raise TpError(f"ONNX export failed ({type(e).__name__}: "
                          f"{str(e).strip().splitlines()[0] if str(e).strip() else ''}); "
                          "use --backend torch") from None
    return path


def exported(model: PrunedBert, cfg: PruningConfig | None, keep_input: bool = False,
             cache: Path | None = None, schedule: str = "topk") -> Path:
    """The cached export of ``model`` under ``cfg`` (exported now if missing)."""
    cfg = None if keep_input else (cfg or model.pruning)
    path = cache_dir(cache) / f"{digest(model, cfg, keep_input, schedule)}.onnx"
    if not path.is_file():
        log.info("exporting the encoder to ONNX (%s)%s", path.name,
                 f", {SCHEDULE_INPUT[schedule]} as an input" if keep_input else "")
        export_onnx(model, cfg, path, keep_input, schedule)
    return path


@contextlib.contextmanager
def _quiet() -> Any:
    """The exporter prints progress to stdout and logs warnings (about torchvision, training
    mode ...): none of it concerns a tp-search user."""
    loggers = [logging.getLogger(n) for n in ("torch.onnx", "torch._export", "torch.export",
                                               "onnxscript", "onnx_ir", "torch._dynamo")]
    levels = [lg.level for lg in loggers]
    try:
        for lg in loggers:
            lg.setLevel(logging.ERROR)
        with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        for lg, lv in zip(loggers, levels):
            lg.setLevel(lv)
