"""The main job's train stage, for the chosen candidate, under the latency its plan allows on
the chosen backend, on inputs truncated as deployed: ToP gates for a top-k schedule, LTP's
soft then hard stages for thresholds (started from the searched ones, the constraint on the
workload's percentile of per-request predictions). A candidate that prunes nothing is not
trained: the teacher is deployed on it."""
from __future__ import annotations

import hashlib
import logging
from pathlib import Path
from typing import Any

from tp_search.profiler.store import load_predictor
from tp_search.pruning.config import PruningConfig
from tp_search.pruning.train import LtpSettings, TopSettings, prune_ltp, prune_top
from tp_search.pruning.train.train_settings import finished
from tp_search.search.pipeline.stages import Stages
from tp_search.search.result import MachineChoice, SearchResult

log = logging.getLogger("tp.search")


def train_choice(p: Any, s: Any, sr: SearchResult, stages: Stages, run_dir: Path,
                 student: str, teacher: str, common: dict[str, Any],
                 ranking: dict[str, Any], epochs: dict[str, float], shape: Any,
                 machine: str | None, seq_len: int) -> tuple[str, bool]:
    """Train the chosen configuration; returns (the model directory to deploy, whether it
    is deployed with the searched configuration as it is, untrained)."""
    choice = sr.primary.candidate
    if not p.train:
        stages.skip("train", "--no-train")
        return student, True
    if sr.status == "dense" or choice.config.is_dense:
        stages.skip("train", "the dense model already meets the target" if sr.status == "dense"
                    else f"the chosen candidate prunes no token ({choice.describe()}): the "
                         "teacher is deployed on it")
        return teacher, True
    # the prediction the plan allows on the chosen backend, with the closed loop's refit
    latency = sr.primary.limit_ms if not s.machines or len(s.machines) == 1 else None
    trained = load_predictor(shape, s.device, machine, s.threads, s.batch, s.results,
                             choice.backend)
    c = loop_correction(sr.primary)
    if latency is not None and c > 1.0:
        # the plan's limit is in the table's units; the loop measured the table
        # under-predicting this machine. Without this an under-predicting table made the limit
        # look looser than the dense model, and ToP trained with no constraint at all. Never
        # loosened: one fast window (0.68 on the Intel host a day after its calibration) is
        # no promise, and the loosened plan let LTP train its thresholds back to zero
        trained.correction *= c
        log.info("train: %s predictions x%.3f (the closed loop's measured/predicted on the "
                 "chosen backend) under the plan's %.2f ms", choice.backend, c, latency)
    # the final training sees inputs as deployed (the budget's train_len is for the teacher
    # and student, whose stages do not depend on the choice)
    length = sr.workload.length(choice.max_len)
    train_common = {**common, "max_len": choice.max_len or seq_len, "seq_len": length}
    best = Path(sr.out_dir) / "best_config.json"
    # one training directory per searched configuration and target: a rerun with another
    # target never reuses a model trained for this one. Keyed by the user's target, not the
    # plan: the plan moves with the tail the closed loop measures in its window, and the same
    # command run again retrained the same choice for a plan 1% apart
    tag = hashlib.sha1(f"{choice.key}{s.latency_ms}".encode()).hexdigest()[:8]
    if choice.adaptive and latency is not None:
        dense = PruningConfig.dense(shape)
        at = sr.workload.predict(trained, dense, choice.max_len)
        if at <= latency:
            # LTP's calibration would set every threshold to 0 after its soft stage had
            # retrained the weights (rotten_tomatoes at 5 ms on the Intel host: -1.24 points,
            # the interval excluding 0): deploy the teacher at the chosen length instead, as
            # a top-k search whose best schedule prunes nothing does
            sr.primary.config, sr.primary.latency_ms = dense, at
            length = f"{choice.max_len} tokens" if choice.max_len else "the workload's length"
            stages.skip("train", f"the dense model at {length} is predicted {at:.2f} ms on "
                                 f"{choice.backend}, within the plan's {latency:.2f} ms: "
                                 "thresholds would train to 0; the teacher is deployed")
            return teacher, True
    if not choice.adaptive:
        out_dir = run_dir / f"train-top-{tag}"
        ts = TopSettings(model=student, teacher=teacher, config=str(best), latency_ms=latency,
                         out=str(out_dir), **train_common, **ranking, **epochs)
        out = stages.run("train", lambda: prune_top(ts, trained), lambda: finished(out_dir))
    else:
        out_dir = run_dir / f"train-ltp-{tag}"
        w = sr.workload
        ls = LtpSettings(model=student, teacher=teacher, latency_ms=latency, out=str(out_dir),
                         init_thresholds=tuple(choice.config.thresholds), workload=w.kind,
                         percentile=w.percentile, batch=w.batch,
                         **{**train_common, "seq_len": w.seq_len}, **epochs)
        out = stages.run("train", lambda: prune_ltp(ls, trained), lambda: finished(out_dir))
    return str(Path(out) / "model"), False


def loop_correction(choice: MachineChoice) -> float:
    """Measured median over predicted on the chosen backend in the closed loop's last
    round, when that round chose the candidate and the table under-predicted (a round that
    refitted already stored its correction with the table, which the train stage loads);
    1 without a loop or when the window ran faster than the table: only ever a tightening."""
    if not choice.rounds or choice.rounds[-1].chosen is None:
        return 1.0
    c = next((bw.correction for bw in choice.rounds[-1].backends
              if bw.backend == choice.backend), 1.0)
    return max(1.0, c)
