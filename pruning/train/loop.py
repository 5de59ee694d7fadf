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
import os
import random
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import torch
from torch import Tensor, nn
from tqdm.auto import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

from ..checkpoint import from_pretrained, save
from ..config import PruningConfig
from ..data import Split, TaskSpec, batches, load_task, task_spec
from ..encoder import PrunedBert
from ..errors import TpError
from ..evaluate import EvalResult, evaluate
from ..io_utils import atomic_write_text

log = logging.getLogger("tp.train")

CHECKPOINT = "checkpoint.pt"
METRICS = "metrics.json"
MODEL = "model"
# Settings that do not change what is computed: a resumed run may differ in these.
RUN_ONLY = ("out", "force", "progress", "device", "checkpoint_every", "train_threads")

# Called after every optimizer step with the step count (tests use it to interrupt a run).
STEP_HOOK: Callable[[int], None] | None = None


@dataclass
class TrainSettings:
    """Hyperparameters shared by all stages; every field is recorded in metrics.json."""

    model: str | None = None  # checkpoint to start from (None: bundled all-MiniLM-L6-v2)
    task: str = "rotten_tomatoes"
    out: str | None = None  # default: runs/<task>/<stage>
    epochs: float = 1.0
    max_steps: int | None = None  # overrides epochs
    lr: float = 5e-5
    batch_size: int = 32
    seed: int = 0
    device: str = "cpu"
    train_threads: int | None = None  # torch threads for training (default: torch's choice)
    max_len: int | None = None  # default: the task's max length
    warmup_ratio: float = 0.06  # LR warm-up, fraction of the steps
    weight_decay: float = 0.01
    grad_clip: float = 1.0
    freeze_word_embeddings: bool = True  # ~20% faster CPU steps, no measurable accuracy cost
    checkpoint_every: int = 200
    eval_samples: int = 0  # dev examples for epoch-end and final evaluation (0 = all)
    force: bool = False
    progress: bool = True
    # latency table used for the constraint (prune stages) and the predicted-latency metric
    machine: str | None = None
    results: str | None = None
    threads: int = 1
    seq_len: int | None = None  # workload length for latency (default: max_len)

    def signature(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if k not in RUN_ONLY}


@dataclass
class StepResult:
    loss: Tensor
    logits: Tensor
    logs: dict[str, float] = field(default_factory=dict)


class Stage:
    """One training method. Subclasses set ``model`` and implement ``step``."""

    name = "stage"
    model: PrunedBert

    def extra(self) -> nn.Module | None:
        """Trainable modules besides the model (gates, thresholds), checkpointed with it."""
        return None

    def param_groups(self) -> list[dict[str, Any]]:
        """Extra optimizer groups; ``"scheduled": False`` keeps their LR constant."""
        return []

    def step(self, batch: dict[str, Tensor], step: int, total: int) -> StepResult:
        raise NotImplementedError

    def after_update(self, step: int) -> None:
        """Called right after each optimizer step (e.g. dual ascent on multipliers)."""

    def pruning_config(self) -> PruningConfig:
        """The configuration the model runs with at inference (evaluation and export)."""
        return PruningConfig.dense(self.model.shape)

    def state(self) -> dict[str, Any]:
        """Non-module state to checkpoint (phase flags ...)."""
        return {}

    def load_state(self, state: dict[str, Any]) -> None:
        pass

    def extra_metrics(self) -> dict[str, Any]:
        return {}


# --------------------------------------------------------------------------- helpers

def stage_out(settings: TrainSettings, stage: str) -> Path:
    if settings.out:
        return Path(settings.out)
    return Path("runs") / task_spec(settings.task).name / stage


def finished(out: Path) -> bool:
    return (out / METRICS).is_file() and (out / MODEL / "config.json").is_file()


def resolve_model_arg(path: str | None, what: str) -> str | None:
    """Accept a stage directory (``runs/x/finetune``) where a model directory is expected."""
    if path is None:
        return None
    p = Path(path)
    if not p.exists():
        raise TpError(f"{what} {path}: directory not found")
    if not (p / "config.json").is_file() and (p / MODEL / "config.json").is_file():
        return str(p / MODEL)
    if p.is_dir() and not (p / "config.json").is_file() and (p / CHECKPOINT).is_file():
        raise TpError(f"{what} {path}: that stage has not finished (only a checkpoint); rerun "
                      "it to completion first")
    return str(p)


def load_model(path: str | None, spec: TaskSpec, what: str = "--model") -> PrunedBert:
    return from_pretrained(resolve_model_arg(path, what), num_labels=spec.num_labels)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def rng_state() -> dict[str, Any]:
    st = {"python": random.getstate(), "numpy": np.random.get_state(),
          "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        st["cuda"] = torch.cuda.get_rng_state_all()
    return st


def set_rng_state(st: dict[str, Any]) -> None:
    random.setstate(st["python"])
    np.random.set_state(st["numpy"])
    torch.set_rng_state(st["torch"].cpu())
    if "cuda" in st and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([t.cpu() for t in st["cuda"]])


def atomic_torch_save(obj: Any, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        torch.save(obj, tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def kd_loss(student: Tensor, teacher: Tensor, temperature: float, regression: bool) -> Tensor:
    """Logit distillation: KL at temperature T scaled by T^2 (MSE for regression)."""
    if regression:
        return nn.functional.mse_loss(student, teacher)
    T = temperature
    return nn.functional.kl_div(nn.functional.log_softmax(student / T, -1),
                                nn.functional.softmax(teacher / T, -1),
                                reduction="batchmean") * T * T


def to_device(batch: dict[str, Tensor], device: str) -> dict[str, Tensor]:
    return {k: v.to(device) for k, v in batch.items()}


def _linear_schedule(warmup: int, total: int) -> Callable[[int], float]:
    def f(step: int) -> float:
        if step < warmup:
            return (step + 1) / max(1, warmup)
        return max(0.0, (total - step) / max(1, total - warmup))
    return f


# --------------------------------------------------------------------------- the loop

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


@dataclass
class Data:
    spec: TaskSpec
    train: Split
    dev: Split
    max_len: int


def load_data(settings: TrainSettings) -> Data:
    spec = task_spec(settings.task)
    train, dev = load_task(settings.task, "train"), load_task(settings.task, "dev")
    if settings.eval_samples:
        dev = dev.subset(settings.eval_samples, seed=0)
    return Data(spec, train, dev, settings.max_len or spec.max_len)


class Trainer:
    """Runs one stage to completion in ``out``, resuming from its checkpoint if present."""

    def __init__(self, stage: Stage, settings: TrainSettings, data: Data, out: Path) -> None:
        self.stage, self.s, self.data, self.out = stage, settings, data, out
        self.model = stage.model
        self.tok = self.model.tokenizer
        if self.tok is None:
            raise TpError("the model has no tokenizer; train from a checkpoint directory")
        limit = self.model.config.max_position_embeddings
        if data.max_len > limit:
            raise TpError(f"max_len {data.max_len} exceeds the model's {limit} position "
                          f"embeddings: pass --max-len {limit} or less")
        n = len(data.train)
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
        res = self.stage.step(batch, step, self.total)
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
    def finish(self, extra_settings: dict[str, Any]) -> dict[str, Any]:
        cfg = self.stage.pruning_config()
        self.model.eval()
        self.model.set_pruning(cfg)
        r = evaluate(self.model, self.data.dev, self.data.max_len, batch_size=64,
                     pruning=cfg, device=self.s.device, progress=self.s.progress)
        metrics = build_metrics(self.stage, self.s, self.data, r, cfg, self.total,
                                self.steps_per_epoch, self.train_time)
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
                  cfg: PruningConfig, total: int, steps_per_epoch: int, train_time: float
                  ) -> dict[str, Any]:
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
        "environment": {"torch": torch.__version__, "threads": torch.get_num_threads()},
    }
    lat = predicted_latency(cfg, r, s, data.max_len)
    if lat:
        m["latency"] = lat
    return m


def load_predictor_or_none(shape, s: TrainSettings):
    """This machine's latency predictor, or None when no table exists (skipped silently)."""
    try:
        from profiler import load_predictor
        return load_predictor(shape, device=s.device, machine=s.machine, threads=s.threads,
                              batch=1, results=s.results)
    except TpError as e:
        log.debug("no predicted latency: %s", e)
        return None


def predicted_latency(cfg: PruningConfig, r: EvalResult, s: TrainSettings, max_len: int
                      ) -> dict[str, Any] | None:
    pred = load_predictor_or_none(cfg.shape, s)
    if pred is None:
        return None
    try:
        L = cfg.shape.num_layers
        prunes = [cfg.prunes_at(l) for l in range(L)]
        dense = [pred.predict_counts(n, [n] * L, [False] * L) for n in r.lengths]
        mine = [pred.predict_counts(n, k, prunes) for n, k in zip(r.lengths, r.kept)]
        out: dict[str, Any] = {"machine": pred.machine_id, "batch": 1, "threads": s.threads,
                               "dev_mean_ms": float(np.mean(mine)),
                               "dev_mean_dense_ms": float(np.mean(dense))}
        out["dev_speedup"] = out["dev_mean_dense_ms"] / out["dev_mean_ms"]
        if cfg.policy != "threshold":
            n = s.seq_len or max_len
            out.update(seq_len=n, ms=pred.predict(cfg, n), dense_ms=pred.dense(n))
            out["speedup"] = out["dense_ms"] / out["ms"]
        return out
    except TpError as e:
        log.debug("no predicted latency: %s", e)
        return None


def run_stage(make_stage: Callable[[Data], Stage], settings: TrainSettings, stage_name: str,
              extra_settings: dict[str, Any] | None = None) -> Path:
    """Build the stage (unless already finished), train it, write its outputs; return ``out``."""
    out = stage_out(settings, stage_name)
    if finished(out) and not settings.force:
        log.info("%s: %s already finished; reusing it (--force retrains)", stage_name, out)
        _warn_if_settings_differ(out, settings, stage_name)
        return out
    if settings.force:
        (out / CHECKPOINT).unlink(missing_ok=True)
        (out / METRICS).unlink(missing_ok=True)
        shutil.rmtree(out / MODEL, ignore_errors=True)
    _check_settings(settings)
    if settings.train_threads:
        torch.set_num_threads(settings.train_threads)
    data = load_data(settings)
    seed_everything(settings.seed)  # fresh heads and gates are initialised reproducibly
    stage = make_stage(data)
    out.mkdir(parents=True, exist_ok=True)
    trainer = Trainer(stage, settings, data, out)
    trainer.train()
    trainer.finish(extra_settings or {})
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


def _check_settings(s: TrainSettings) -> None:
    if s.device.startswith("cuda") and not torch.cuda.is_available():
        raise TpError("--device cuda: no CUDA device visible to torch; use --device cpu")
    for name in ("epochs", "lr", "batch_size"):
        if getattr(s, name) <= 0:
            raise TpError(f"--{name.replace('_', '-')} must be positive, got {getattr(s, name)}")
    if s.max_steps is not None and s.max_steps < 1:
        raise TpError(f"--max-steps must be positive, got {s.max_steps}")


def settings_fields(cls: type) -> list[str]:
    return [f.name for f in fields(cls)]
