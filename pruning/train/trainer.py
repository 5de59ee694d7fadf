"""The training loop every stage shares: optimizer, schedule, checkpoints, resume, outputs.

A stage (fine-tune, distill, ToP, LTP) only says how to compute a step's loss and which
pruning configuration its model ends with; this module does the rest the same way for all:

* AdamW with a linear warm-up/decay schedule (extra parameter groups, e.g. gates or
  Lagrange multipliers, can keep a constant learning rate or be maximised);
* length-bucketed, dynamically padded batches, shuffled per epoch from ``seed + epoch``;
* a checkpoint (model, stage state, optimizer, scheduler, step, RNG state) written
  atomically every ``checkpoint_every`` steps, at epoch ends and on Ctrl-C, from which a
  rerun of the same command continues with bit-identical results;
* at the end: dev evaluation with the physical (token-dropping) encoder, the model
  directory ``out/model`` and ``out/metrics.json``. A finished stage is reused, not
  retrained, unless ``force``.
"""
from __future__ import annotations

import json
import logging
import math
import shutil
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import torch
from torch import Tensor, nn
from tqdm.auto import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

from tp_search.pruning.measure.accuracy import EvalResult, evaluate
from tp_search.pruning.config import PruningConfig
from tp_search.pruning.data import batches
from tp_search.pruning.core.errors import TpError
from tp_search.pruning.core.atomic import atomic_write_text
from tp_search.pruning.core.cpu import resolve_precision
from tp_search.pruning.core.versions import library_versions
from tp_search.pruning.model.checkpoint import save
from tp_search.pruning.train.stage_inputs import Data, check_settings, load_data, stage_out
from tp_search.pruning.train.latency import LatencyModel, predicted_latency
from tp_search.pruning.train.train_settings import CHECKPOINT, METRICS, MODEL, TrainSettings, finished
from tp_search.pruning.train.stage import Stage, StepResult, to_device
from tp_search.pruning.train.state import atomic_torch_save, rng_state, seed_everything, set_rng_state

log = logging.getLogger("tp.train")

# Called after every optimizer step with the step count (tests use it to interrupt a run).
STEP_HOOK: Callable[[int], None] | None = None


def _linear_schedule(warmup: int, total: int) -> Callable[[int], float]:
    def f(step: int) -> float:
        if step < warmup:
            return (step + 1) / max(1, warmup)
        return max(0.0, (total - step) / max(1, total - warmup))
    return f


class _Running:
    """Running loss (EMA) and training accuracy for the progress bar."""

    def __init__(self, regression: bool) -> None:
        self.regression, self.loss = regression, None
        self.correct = self.seen = 0

    def add(self, res: StepResult, labels: Tensor) -> None:
        lv = float(res.loss.detach())
        self.loss = lv if self.loss is None else 0.95 * self.loss + 0.05 * lv
        if not self.regression:
            self.correct += int((res.logits.detach().argmax(-1).cpu() == labels).sum())
            self.seen += len(labels)

    def reset_metric(self) -> None:
        self.correct = self.seen = 0

    def postfix(self, res: StepResult) -> dict[str, str]:
        post = {"loss": f"{self.loss:.4f}"}
        if self.seen:
            post["acc"] = f"{self.correct / self.seen:.3f}"
        post.update({k: f"{v:.3g}" for k, v in res.logs.items()})
        return post


class Trainer:
    """Runs one stage to completion in ``out``, resuming from its checkpoint if present."""

    def __init__(self, stage: Stage, settings: TrainSettings, data: Data, out: Path) -> None:
        self.stage, self.s, self.data, self.out = stage, settings, data, out
        self.model = stage.model
        self.tok = self.model.tokenizer
        if self.tok is None:
            raise TpError("the model has no tokenizer; train from a checkpoint directory")
        limit = self.model.config.max_len
        if data.max_len > limit:
            raise TpError(f"max_len {data.max_len} exceeds the model's {limit} position "
                          f"embeddings: pass --max-len {limit} or less")
        n = len(data.train)
        self.precision = resolve_precision(settings.precision)
        self.steps_per_epoch = math.ceil(n / settings.batch_size)
        self.total = settings.max_steps or max(1, math.ceil(settings.epochs * self.steps_per_epoch))

    # ---- optimizer -----------------------------------------------------------------
    def _optimizer(self) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LambdaLR]:
        s = self.s
        if s.freeze_word_embeddings:
            self.model.embeddings.word.weight.requires_grad_(False)
        decay, no_decay = [], []
        for name, p in self.model.named_parameters():
            if p.requires_grad:
                (no_decay if p.ndim < 2 else decay).append(p)
        groups: list[dict[str, Any]] = [
            {"params": decay, "weight_decay": s.weight_decay, "scheduled": True},
            {"params": no_decay, "weight_decay": 0.0, "scheduled": True}]
        for g in self.stage.param_groups():
            groups.append({"weight_decay": 0.0, "scheduled": False, **g})
        opt = torch.optim.AdamW(groups, lr=s.lr)
        main = _linear_schedule(int(s.warmup_ratio * self.total), self.total)
        sched = torch.optim.lr_scheduler.LambdaLR(
            opt, [main if g["scheduled"] else (lambda _: 1.0) for g in groups])
        return opt, sched

    # ---- checkpoints ---------------------------------------------------------------
    def _save(self, step: int, rng: dict[str, Any]) -> None:
        extra = self.stage.extra()
        atomic_torch_save({
            "step": step, "model": self.model.state_dict(),
            "extra": None if extra is None else extra.state_dict(),
            "stage": self.stage.state(), "optimizer": self.opt.state_dict(),
            "scheduler": self.sched.state_dict(), "rng": rng,
            "settings": self.s.signature(), "train_time_s": self.train_time,
        }, self.out / CHECKPOINT)

    def _resume(self) -> int:
        path = self.out / CHECKPOINT
        if not path.is_file():
            return 0
        try:
            ck = torch.load(path, map_location=self.s.device, weights_only=False)
        except Exception as e:
            raise TpError(f"{path}: unreadable checkpoint ({type(e).__name__}); delete it or "
                          "rerun with --force") from None
        mine = self.s.signature()
        diff = [k for k in mine if ck["settings"].get(k) != mine[k]]
        if diff:
            k = diff[0]
            raise TpError(f"{self.out} holds an unfinished run with different settings "
                          f"({k}: {ck['settings'].get(k)!r} there, {mine[k]!r} now); rerun with "
                          "the same flags to resume, or --force to start over")
        self.model.load_state_dict(ck["model"])
        extra = self.stage.extra()
        if extra is not None:
            extra.load_state_dict(ck["extra"])
        self.stage.load_state(ck["stage"])
        self.opt.load_state_dict(ck["optimizer"])
        self.sched.load_state_dict(ck["scheduler"])
        set_rng_state(ck["rng"])
        self.train_time = float(ck.get("train_time_s", 0.0))
        log.info("%s: resuming from step %d/%d (%s)", self.stage.name, ck["step"], self.total,
                 path)
        return int(ck["step"])

    # ---- training ------------------------------------------------------------------
    def _epoch_batches(self, epoch: int) -> Iterator[dict[str, Tensor]]:
        return batches(self.tok, self.data.train, self.data.max_len, self.s.batch_size,
                       shuffle=True, seed=self.s.seed * 100003 + epoch, bucket=True)

    def train(self) -> None:
        s = self.s
        self.train_time = 0.0
        self.model.to(s.device).train()
        if self.stage.extra() is not None:
            self.stage.extra().to(s.device)
        self.opt, self.sched = self._optimizer()
        step = self._resume()
        running = _Running(self.data.spec.is_regression)
        self._in_update = False
        rng: dict[str, Any] | None = None  # RNG at the start of an unfinished step
        with logging_redirect_tqdm(), tqdm(total=self.total, initial=step, desc=self.stage.name,
                                           disable=not s.progress, dynamic_ncols=True) as bar:
            try:
                while step < self.total:
                    epoch, skip = divmod(step, self.steps_per_epoch)
                    for i, batch in enumerate(self._epoch_batches(epoch)):
                        if i < skip:
                            continue
                        rng = rng_state()
                        res = self._step(to_device(batch, s.device), step)
                        step, rng = step + 1, None
                        running.add(res, batch["labels"])
                        bar.set_postfix(running.postfix(res), refresh=False)
                        bar.update(1)
                        epoch_end = i == self.steps_per_epoch - 1
                        if step % s.checkpoint_every == 0 or epoch_end or step == self.total:
                            self._save(step, rng_state())
                        if STEP_HOOK is not None:
                            STEP_HOOK(step)
                        if step >= self.total:
                            break
                        if epoch_end:
                            self._epoch_eval(epoch)
                            running.reset_metric()
            except KeyboardInterrupt:
                if not self._in_update:  # a half-applied optimizer step is not worth keeping
                    self._save(step, rng if rng is not None else rng_state())
                    log.info("%s: interrupted at step %d; checkpoint saved, rerun to resume",
                             self.stage.name, step)
                raise

    def _step(self, batch: dict[str, Tensor], step: int) -> StepResult:
        t0 = time.perf_counter()
        with torch.autocast(self.s.device.split(":")[0], dtype=torch.bfloat16,
                            enabled=self.precision == "bf16"):
            res = self.stage.step(batch, step, self.total)
        res.loss = res.loss.float()
        if not torch.isfinite(res.loss):
            raise TpError(f"{self.stage.name}: loss became {res.loss.item()} at step {step}; "
                          "lower --lr")
        res.loss.backward()
        self._in_update = True
        if self.s.grad_clip:
            nn.utils.clip_grad_norm_([p for p in self.model.parameters() if p.grad is not None],
                                     self.s.grad_clip)
        self.opt.step()
        self.stage.after_update(step)
        self.sched.step()
        self.opt.zero_grad(set_to_none=True)
        self._in_update = False
        self.train_time += time.perf_counter() - t0
        return res

    def _epoch_eval(self, epoch: int) -> None:
        r = evaluate(self.model, self.data.dev, self.data.max_len, batch_size=64,
                     pruning=self.stage.pruning_config(), device=self.s.device)
        self.model.train()
        log.info("%s: epoch %d dev %s %.4f", self.stage.name, epoch + 1, r.primary, r.score)

    # ---- outputs -------------------------------------------------------------------
    def finish(self, extra_settings: dict[str, Any], latency: LatencyModel | None = None
               ) -> dict[str, Any]:
        cfg = self.stage.pruning_config()
        self.model.eval()
        self.model.set_pruning(cfg)
        r = evaluate(self.model, self.data.dev, self.data.max_len, batch_size=64,
                     pruning=cfg, device=self.s.device, progress=self.s.progress)
        metrics = build_metrics(self.stage, self.s, self.data, r, cfg, self.total,
                                self.steps_per_epoch, self.train_time, latency)
        metrics["train_precision"] = self.precision
        metrics.update(self.stage.extra_metrics())
        metrics["settings"].update(extra_settings)
        self.model.to("cpu")
        save(self.model, self.out / MODEL)
        atomic_write_text(self.out / METRICS, json.dumps(metrics, indent=2, default=float) + "\n")
        (self.out / CHECKPOINT).unlink(missing_ok=True)
        log.info("%s: dev %s %.4f, MACs reduction %.2fx (real lengths) / %.2fx (padded to %d);"
                 " wrote %s", self.stage.name, r.primary, r.score,
                 metrics["macs"]["reduction_real"], metrics["macs"]["reduction_padded"],
                 self.data.max_len, self.out)
        return metrics


def build_metrics(stage: Stage, s: TrainSettings, data: Data, r: EvalResult,
                  cfg: PruningConfig, total: int, steps_per_epoch: int, train_time: float,
                  latency: LatencyModel | None = None) -> dict[str, Any]:
    kept = np.array(r.kept, dtype=float) if r.kept else np.zeros((0, 0))
    m: dict[str, Any] = {
        "stage": stage.name, "task": data.spec.name, "metric": r.metrics,
        "primary": r.primary, "score": r.score, "dev_examples": len(r.lengths),
        "macs": r.macs(cfg, data.max_len).to_dict(),
        "mean_length": float(np.mean(r.lengths)) if r.lengths else 0.0,
        "mean_kept": kept.mean(0).round(3).tolist() if kept.size else [],
        "pruning": cfg.to_dict(),
        "steps": total, "epochs": total / steps_per_epoch, "train_time_s": round(train_time, 1),
        "seed": s.seed, "settings": asdict(s),
        "environment": {**library_versions(torch), "threads": torch.get_num_threads()},
    }
    lat = predicted_latency(cfg, r, latency, s.threads, s.seq_len or data.max_len)
    if lat:
        m["latency"] = lat
    return m


def run_stage(make_stage: Callable[[Data], Stage], settings: TrainSettings, stage_name: str,
              extra_settings: dict[str, Any] | None = None,
              latency: LatencyModel | None = None) -> Path:
    """Build the stage (unless already finished), train it, write its outputs; return ``out``.

    ``latency`` (optional) adds the final model's predicted latency to metrics.json.
    """
    out = stage_out(settings, stage_name)
    if finished(out) and not settings.force:
        log.info("%s: %s already finished; reusing it (--force retrains)", stage_name, out)
        _warn_if_settings_differ(out, settings, stage_name)
        return out
    if settings.force:
        (out / CHECKPOINT).unlink(missing_ok=True)
        (out / METRICS).unlink(missing_ok=True)
        shutil.rmtree(out / MODEL, ignore_errors=True)
    check_settings(settings)
    if settings.train_threads:
        torch.set_num_threads(settings.train_threads)
    data = load_data(settings)
    seed_everything(settings.seed)  # fresh heads and gates are initialised reproducibly
    stage = make_stage(data)
    trainer = Trainer(stage, settings, data, out)  # checks settings against the model
    out.mkdir(parents=True, exist_ok=True)
    trainer.train()
    trainer.finish(extra_settings or {}, latency)
    return out


def _warn_if_settings_differ(out: Path, settings: TrainSettings, stage_name: str) -> None:
    try:
        before = json.loads((out / METRICS).read_text()).get("settings", {})
    except (OSError, json.JSONDecodeError):
        return
    mine = settings.signature()
    diff = [k for k in mine if k in before and before[k] != _jsonable(mine[k])]
    if diff:
        log.warning("%s: %s was trained with %s=%r, not %r; pass --force to retrain",
                    stage_name, out, diff[0], before[diff[0]], mine[diff[0]])


def _jsonable(v: Any) -> Any:
    return list(v) if isinstance(v, tuple) else v
