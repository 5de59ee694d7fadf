"""The search's accuracy proxy: a candidate's metric on a held-out slice of *train*, without
retraining. Never on dev: the dev examples report the deployed model's accuracy, and a
choice made on them would flatter it. The main job keeps the slice out of every training
stage (``Budget.holdout``).

The candidate's keep schedule is applied as static top-k to the model as it is, with the
candidate's numerics (an int8 or bf16 candidate is evaluated on its own runtime, quantized
or in bf16) and its inputs truncated to its ``max_len``. fp32 runs the PyTorch encoder (the
reference every fp32 backend matches within 1e-4); other numerics run a runner built once
by ``runner_for(backend)`` whose keep schedule is an input, so hundreds of schedules cost
one export and one quantization.

A candidate that prunes nothing is served by a model that was never trained to prune (the
fine-tuned teacher, ``dense``) while a pruning candidate is served by the distilled student
the proxy runs; each is scored with the model it would deploy, so the levers alone
(runtime, precision, truncation) compete at their real accuracy.
"""
from __future__ import annotations

from typing import Any, Callable, Mapping

from tp_search.pruning.measure.accuracy import EvalResult, evaluate, evaluate_runner
from tp_search.pruning.data import Split, metrics
from tp_search.pruning.core.errors import TpError
from tp_search.pruning.model.encoder import PrunedBert

from tp_search.pruning.runtime.registry import numerics, spec
from tp_search.search.space.candidates import Candidate, schedule_key

RunnerFor = Callable[[str, str], Any]  # (backend, policy) -> a schedule-input runner


class ProxyEvaluator:
    def __init__(self, model: PrunedBert, split: Split, seq_len: int, batch_size: int = 32,
                 device: str = "cpu", runner_for: RunnerFor | None = None,
                 dense: ProxyEvaluator | None = None) -> None:
        self.model, self.split, self.seq_len = model, split, seq_len
        self.dense = dense  # scores candidates that prune nothing (None: this model)
        self.batch_size, self.device, self.runner_for = batch_size, device, runner_for
        self.metric = metrics.primary(split.task.metric)
        self.runners: dict[str, Any] = {}
        self.results: dict[str, EvalResult] = {}  # by numerics, length and schedule
        self.calls = 0

    def length(self, c: Candidate) -> int:
        return min(c.max_len, self.seq_len) if c.max_len else self.seq_len

    def __call__(self, c: Candidate) -> float:
        return float(self.result(c).score)

    def result(self, c: Candidate) -> EvalResult:
        """The candidate's evaluation, per-example predictions (and for the fp32 encoder,
        per-example kept counts) included; computed once per numerics, length, schedule."""
        if self.dense is not None and c.config.is_dense:
            return self.dense.result(c)
        key = f"{numerics(c.backend)}|{self.length(c)}|{schedule_key(c.config)}"
        if key not in self.results:
            self.calls += 1
            if numerics(c.backend) == "fp32":  # every fp32 backend matches the encoder
                r = evaluate(self.model, self.split, self.length(c), self.batch_size,
                             pruning=c.config, device=self.device)
            else:
                policy = "threshold" if c.adaptive else "topk"  # dense: keep 1 everywhere
                r = self.runner_result(self.runner(c.backend, policy), c)
            self.results[key] = r
        return self.results[key]

    def on(self, split: Split) -> "ProxyEvaluator":
        """The same models and runners scoring another slice (successive halving)."""
        dense = None if self.dense is None else self.dense.on(split)
        other = ProxyEvaluator(self.model, split, self.seq_len, self.batch_size, self.device,
                               self.runner_for, dense)
        other.runners = self.runners
        return other

    def runner(self, backend: str, policy: str = "topk") -> Any:
        """The runner whose schedule is an input (keep fractions, or thresholds), with
        ``backend``'s numerics: one per numerics and policy."""
        key = f"{numerics(backend)}|{policy}"
        if key not in self.runners:
            if self.runner_for is None:
                raise TpError(f"no {backend} runtime to evaluate candidates with; install "
                              f"it or restrict --backend")
            self.runners[key] = self.runner_for(backend, policy)
        return self.runners[key]

    def runner_result(self, runner: Any, c: Candidate) -> EvalResult:
        """``runner`` under ``c``'s schedule on the truncated slice."""
        schedule = list(c.config.thresholds) if c.adaptive else list(c.keep)
        return evaluate_runner(runner, self.split, self.length(c), self.model.tokenizer,
                               self.batch_size, keep=schedule)

    def evaluate_runner(self, runner: Any, c: Candidate) -> float:
        return float(self.runner_result(runner, c).score)


def describe_numerics(backends: Mapping[str, Any] | list[str]) -> str:
    return ", ".join(f"{b}: {spec(b).precision}" for b in backends)
