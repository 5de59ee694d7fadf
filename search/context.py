"""Resolving a search's inputs once: task, dev subset, proxy model, workload, latency
predictors per machine and backend, and the space (backends, truncation lengths).

Also the study's identity (what makes two runs the same study), derived from the resolved
inputs rather than from the command line.
"""
from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from tp_search.profiler import fingerprint, load_predictor
from tp_search.pruning.measure.calibration_data import calibration_batches
from tp_search.pruning.measure.memory import check_fits
from tp_search.pruning.config import ModelShape
from tp_search.pruning.data import load_task, real_lengths, task_spec
from tp_search.pruning.data.spec import holdout_size
from tp_search.pruning.runtime import REFERENCE, get_backend, names, spec, why_unavailable
from tp_search.pruning.core.errors import TpError
from tp_search.pruning.model.digest import checkpoint_digest
from tp_search.pruning.model.checkpoint import (
    DEFAULT_MODEL,
    default_model_dir,
    encoder_config,
    from_pretrained,
    read_hf_config,
    resolve_model_dir,
)

from tp_search.search.scoring.objective import Predictors
from tp_search.search.scoring.kept_counts import KeptCounts
from tp_search.search.scoring.proxy import ProxyEvaluator, RunnerFor
from tp_search.search.search_settings import TRUNCATION, SearchSettings
from tp_search.search.space.candidates import SearchSpace
from tp_search.search.space.workload import Workload, dev_requests

log = logging.getLogger("tp.search")


@dataclass
class Context:
    """Everything a search needs, loaded once."""

    task_name: str
    split: Any  # the search's proxy slice: held-out train examples every trial is scored on
    pool: Any  # all held-out train examples (the slice is a subset): contenders re-scored
    dev: Any  # the fixed dev subset whose inputs make the dev workload's requests
    lengths: list[int]  # the dev subset's real lengths, truncated to seq_len
    model: Any  # the proxy model
    model_dir: Path
    proxy_dir: Path
    dense_dir: Path  # the model scored (and deployed) for candidates that prune nothing
    shape: ModelShape
    seq_len: int
    workload: Workload
    predictors: Predictors  # [machine][backend]
    space: SearchSpace
    evaluator: ProxyEvaluator
    here_id: str | None
    counts: KeptCounts  # per-request kept counts of threshold candidates


def model_shape(path: Path) -> tuple[ModelShape, int]:
    c = encoder_config(read_hf_config(path), 2)
    return c.shape, c.max_len


def prepare(s: SearchSettings, runner_for: RunnerFor | None = None) -> Context:
    """Resolve ``s``; ``runner_for(precision)`` builds the runner that evaluates non-fp32
    candidates (the ONNX Runtime int8 graph)."""

    if s.latency_ms <= 0:
        raise TpError(f"--latency-ms {s.latency_ms}: the target must be positive")
    if s.min_macs_reduction is not None and s.min_macs_reduction < 1:
        raise TpError(f"--macs-reduction {s.min_macs_reduction}: a reduction is a ratio >= 1")
    if s.device.startswith("cuda"):
        if not torch.cuda.is_available():
            raise TpError("--device cuda: no CUDA device visible to torch; use --device cpu")
    spec = task_spec(s.task)
    model_dir = resolve_model_dir(s.model)
    proxy_dir = resolve_model_dir(s.proxy_model) if s.proxy_model else model_dir
    model = from_pretrained(proxy_dir, num_labels=spec.num_labels).to(s.device)
    archs = read_hf_config(proxy_dir).get("architectures") or []
    if not any("ForSequenceClassification" in a for a in archs):
        log.warning("%s has no classification head for %s: the proxy metric is that of a "
                    "freshly initialised head (chance level); fine-tune first (tp-train) "
                    "and pass the result as --model/--proxy-model", proxy_dir, spec.name)
    shape = model.shape
    if proxy_dir != model_dir:
        mshape, _ = model_shape(model_dir)
        if mshape != shape:
            raise TpError(f"--proxy-model has {shape.describe()} but --model has "
                          f"{mshape.describe()}: the proxy must have the model's shape")
    positions = model.config.max_len
    seq_len = s.seq_len or min(spec.max_len, positions)
    if seq_len > positions:
        raise TpError(f"--seq-len {seq_len} exceeds the model's {positions} positions")
    check_fits(shape, s.batch, seq_len)
    split, pool = proxy_slices(s.task, s.holdout, s.eval_samples, s.seed)
    dev = load_task(s.task, "dev").subset(spec.budget.eval_samples, s.seed)
    lengths = real_lengths(model.tokenizer, dev, seq_len)
    workload = Workload(s.workload, seq_len, s.batch, s.percentile,
                        dev_requests(lengths, seq_len))
    predictors = load_predictors(s, shape, workload.length())
    backends = tuple(b for b in names() if any(b in p for p in predictors.values())
                     and runs_here(b, s.backends))
    space = SearchSpace(shape, tuple(s.layers), s.min_ratio, s.max_ratio, s.floor,
                        backends=backends, lengths=truncation_lengths(s.truncation, seq_len),
                        policies=tuple(s.policies),
                        ref_length=float(np.mean(workload.request_lengths())))
    try:
        here = fingerprint(s.device).machine_id
    except Exception:  # fingerprinting is informative only here
        here = None
    evaluator = ProxyEvaluator(model, split, seq_len, s.eval_batch, s.device,
                               runner_for or onnx_runners(model, s, seq_len))
    dense_dir = resolve_model_dir(s.dense_model) if s.dense_model else proxy_dir
    if dense_dir != proxy_dir:
        dense = from_pretrained(dense_dir, num_labels=spec.num_labels).to(s.device)
        if dense.shape != shape:
            raise TpError(f"--dense-model has {dense.shape.describe()} but the proxy model "
                          f"has {shape.describe()}: both must have the model's shape")
        evaluator.dense = ProxyEvaluator(dense, split, seq_len, s.eval_batch, s.device,
                                         runner_for or onnx_runners(dense, s, seq_len))
    return Context(spec.name, split, pool, dev, lengths, model, model_dir, proxy_dir, dense_dir,
                   shape, seq_len, workload, predictors, space, evaluator, here,
                   KeptCounts(evaluator, workload, s.seed))


def proxy_slices(task: str, holdout: int | None = None, eval_samples: int | None = None,
                 seed: int = 0) -> tuple[Any, Any]:
    """(the search's slice, the whole held-out pool) of ``task``'s train split: the
    examples the main job's training never saw (``TrainSettings.holdout``, same seed)."""
    spec = task_spec(task)
    train = load_task(task, "train")
    held = holdout_size(spec, len(train), holdout)
    _, pool = train.holdout(held, seed)
    return pool.subset(min(eval_samples or spec.budget.eval_samples, held), seed), pool


def runs_here(backend: str, asked: tuple[str, ...]) -> bool:
    """Candidates are scored with their own numerics, so their backend must run here; one
    asked for by name that cannot is an error, one that merely has a table is skipped."""
    why = why_unavailable(backend)
    if why is None:
        return True
    if backend in asked:
        raise TpError(f"--backend {backend} cannot run on this machine, so its candidates "
                      f"cannot be scored: {why}")
    log.info("%s has a latency table but cannot run here (%s): not searched", backend, why)
    return False


def onnx_runners(model: Any, s: SearchSettings, seq_len: int) -> RunnerFor:
    """Candidates of other numerics run ``model``'s keep-input graph on their own backend
    (one export per model, one quantization per backend); a backend that quantizes
    statically is calibrated on the task's train examples."""
    def runner_for(backend: str, policy: str = "topk") -> Any:
        b = get_backend(backend)
        calib = (calibration_batches(model.tokenizer, load_task(s.task, "train"), seq_len)
                 if b.calibrated else None)
        return b.build(model, None, threads=s.eval_threads or s.threads, keep_input=True,
                       calibration=calib, schedule=policy)
    return runner_for


def load_predictors(s: SearchSettings, shape: ModelShape, length: int) -> Predictors:
    """Each machine's predictor per backend. Asked-for backends (``--backend``) must have a
    table on every machine; by default every backend with a table on some machine is used."""
    asked = s.backends or names()
    for b in asked:
        spec(b)  # an unknown name is one line naming the known ones
    out: dict[str, dict[str, Any]] = {}
    for m in (s.machines or (None,)):
        found: dict[str, Any] = {}
        for b in asked:
            try:
                p = load_predictor(shape, s.device, m, s.threads, s.batch, s.results, b)
            except TpError:
                if s.backends or b == REFERENCE:  # asked for, or the reference: say why
                    raise
                continue
            p.dense(length)  # a TpError naming the table's range if the workload is off it
            found[b] = p
        machine = next(iter(found.values())).machine_id
        out.setdefault(machine, found)
    return out


def truncation_lengths(asked: tuple[int, ...] | None, seq_len: int) -> tuple[int, ...]:
    """Max lengths to search (0: no truncation). Default: TRUNCATION fractions of the
    workload's length, multiples of 8, at least 16 tokens."""
    if asked is None:
        asked = tuple(max(16, int(f * seq_len) // 8 * 8) for f in TRUNCATION)
    bad = [n for n in asked if n < 0 or n > seq_len]
    if bad:
        raise TpError(f"--truncation {bad[0]}: a max length must be in 1..{seq_len} (the "
                      "workload's length), or 0 for none")
    return tuple(sorted({0 if n in (0, seq_len) else n for n in asked},
                        key=lambda n: (n != 0, -n)))


def model_label(path: Path) -> str:
    try:
        if path == default_model_dir():
            return DEFAULT_MODEL
    except TpError:
        pass
    return path.resolve().name


def dir_digest(path: Path) -> str:
    """A checkpoint's identity: the sha256 of its config and weight files' bytes (two
    students of one shape differ here, not in their sizes)."""
    return checkpoint_digest(path)


def split_digest(split: Any) -> str:
    h = hashlib.sha1()
    for t, p, y in zip(split.texts, split.pairs or [None] * len(split), split.labels):
        h.update(f"{t}\x00{p}\x00{y}\x01".encode())
    return h.hexdigest()[:12]


def identity(s: SearchSettings, ctx: Context) -> dict[str, Any]:
    """What makes two runs the same study (not the trial count: it may grow on resume)."""
    return {"task": ctx.task_name, "data": split_digest(ctx.split),
            "model": dir_digest(ctx.model_dir), "proxy_model": dir_digest(ctx.proxy_dir),
            "dense_model": dir_digest(ctx.dense_dir),
            "seq_len": ctx.seq_len, "workload": ctx.workload.to_dict(), "batch": s.batch,
            "threads": s.threads,
            "device": s.device, "machines": list(ctx.predictors), "latency_ms": s.latency_ms,
            "min_macs_reduction": s.min_macs_reduction, "eval_samples": len(ctx.split),
            "holdout": len(ctx.pool), "percentile": s.percentile, "margin": s.margin,
            "seed": s.seed, "population": s.population, "space": ctx.space.to_dict()}
