"""Bad input stops the main job before any stage runs: every flag is checked against the
model, the task and this machine first, so a typo never costs a half-hour of training."""
from __future__ import annotations

from typing import Any

from tp_search.profiler.store import known_machines, results_dir
from tp_search.pruning.core.errors import TpError
from tp_search.pruning.data import load_task
from tp_search.pruning.data.spec import TaskSpec, holdout_size
from tp_search.pruning.model.checkpoint import checkpoint_config, resolve_model_dir
from tp_search.pruning.runtime import require_available, spec
from tp_search.search.context import truncation_lengths
from tp_search.search.search_settings import SearchSettings
from tp_search.search.space.candidates import SearchSpace
from tp_search.search.space.workload import WORKLOADS


def check_inputs(p: Any, task: TaskSpec, positions: int, shape: Any) -> dict[str, Any]:
    """Raise a one-line TpError for the first bad setting; return what the checks resolved
    (seq_len, train_max_len, holdout, truncation lengths)."""
    s: SearchSettings = p.search
    if s.seq_len is not None and s.seq_len > positions:
        raise TpError(f"--seq-len {s.seq_len} exceeds the model's {positions} positions; pass "
                      f"--seq-len {positions} or less")
    seq_len = s.seq_len or min(task.max_len, positions)
    if p.train_max_len is not None and p.train_max_len > positions:
        raise TpError(f"--train-max-len {p.train_max_len} exceeds the model's {positions} "
                      f"positions; pass {positions} or less")
    if not 0 < s.percentile <= 100:
        raise TpError(f"--percentile {s.percentile:g} must be in (0, 100]")
    if s.workload not in WORKLOADS:
        raise TpError(f"--workload {s.workload!r}: use {' or '.join(WORKLOADS)}")
    if not 0 <= s.margin < 0.5:
        raise TpError(f"--margin {s.margin}: must be in [0, 0.5)")
    if p.rank_weight is not None and p.rank_weight < 0:
        raise TpError(f"--rank-weight {p.rank_weight}: must be >= 0 (0: logit distillation "
                      "only)")
    for flag, v in (("--finetune-epochs", p.finetune_epochs), ("--distill-epochs",
                    p.distill_epochs), ("--prune-epochs", p.prune_epochs)):
        if v is not None and v <= 0:
            raise TpError(f"{flag} {v}: must be positive")
    if p.final_eval_samples < 0:
        raise TpError(f"--final-eval-samples {p.final_eval_samples}: must be >= 0 (0: all)")
    if s.verify < 1 or s.refits < 0:
        raise TpError("--verify must be >= 1 and --refits >= 0")
    lengths = truncation_lengths(s.truncation, seq_len)
    SearchSpace(shape, tuple(s.layers), s.min_ratio, s.max_ratio, s.floor, lengths=lengths)
    for b in s.backends:
        if s.machines:
            spec(b)  # planning for other machines: their tables decide, not this CPU
        else:
            require_available(b)
    known = known_machines(results_dir(s.results))
    for m in s.machines:
        if m not in known:
            raise TpError(f"--machine {m}: no tables under {results_dir(s.results)}/machines; "
                          f"known: {', '.join(known) or 'none'}")
    train = load_task(s.task, "train")
    load_task(s.task, "dev")  # unreadable dev data fails here, not after training
    held = holdout_size(task, len(train), s.holdout)
    if s.eval_samples is not None and s.eval_samples > held:
        raise TpError(f"--eval-samples {s.eval_samples} is more than the {held} held-out "
                      "train examples the proxy scores on; lower it or raise --holdout")
    if p.teacher:
        t = checkpoint_config(resolve_model_dir(p.teacher))
        if t.shape != shape:
            raise TpError(f"--teacher has {t.shape.describe()} but --model has "
                          f"{shape.describe()}: pass the teacher fine-tuned from --model")
    return {"seq_len": seq_len, "holdout": held, "truncation": list(lengths),
            "train_max_len": min(seq_len, p.train_max_len or task.budget.train_max_len
                                 or seq_len)}
