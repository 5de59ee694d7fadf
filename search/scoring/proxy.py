"""The search's accuracy proxy: a candidate's dev metric without retraining.

The candidate's keep schedule is applied as static top-k to the model as it is, with the
candidate's numerics (fp32 for torch and ort, int8 for ort-int8: an int8 candidate is
evaluated quantized) and its inputs truncated to its ``max_len``. fp32 runs the PyTorch
encoder (the reference every backend is checked against); other precisions run a runner
built once by ``runner_for(precision)`` whose keep schedule is an input, so hundreds of
schedules cost one export and one quantization.

A candidate that prunes nothing is served by a model that was never trained to prune (the
fine-tuned teacher, ``dense``) while a pruning candidate is served by the distilled student
the proxy runs; each is scored with the model it would deploy, so the levers alone
(runtime, precision, truncation) compete at their real accuracy.
"""
from __future__ import annotations

from typing import Any, Callable, Mapping

from tp_search.pruning.measure.accuracy import evaluate, evaluate_runner
from tp_search.pruning.data import Split, metrics
from tp_search.pruning.core.errors import TpError
from tp_search.pruning.model.encoder import PrunedBert

from tp_search.search.scoring.objective import PRECISION
from tp_search.search.space.candidates import Candidate

RunnerFor = Callable[[str], Any]  # precision -> a runner taking (batch, keep=...)


class ProxyEvaluator:
    def __init__(self, model: PrunedBert, split: Split, seq_len: int, batch_size: int = 32,
                 device: str = "cpu", runner_for: RunnerFor | None = None,
                 dense: ProxyEvaluator | None = None) -> None:
        self.model, self.split, self.seq_len = model, split, seq_len
        self.dense = dense  # scores candidates that prune nothing (None: this model)
        self.batch_size, self.device, self.runner_for = batch_size, device, runner_for
        self.metric = metrics.primary(split.task.metric)
        self.runners: dict[str, Any] = {}
        self.calls = 0

    def length(self, c: Candidate) -> int:
        return min(c.max_len, self.seq_len) if c.max_len else self.seq_len

    def __call__(self, c: Candidate) -> float:
        if self.dense is not None and c.config.is_dense:
            return self.dense(c)
        self.calls += 1
        precision = PRECISION.get(c.backend, c.backend)
        if precision == "fp32":
            r = evaluate(self.model, self.split, self.length(c), self.batch_size,
                         pruning=c.config, device=self.device)
            return float(r.score)
        return self.evaluate_runner(self.runner(precision), c)

    def runner(self, precision: str) -> Any:
        if precision not in self.runners:
            if self.runner_for is None:
                raise TpError(f"no {precision} runtime to evaluate candidates with; install "
                              "onnxruntime or restrict --backend to torch")
            self.runners[precision] = self.runner_for(precision)
        return self.runners[precision]

    def evaluate_runner(self, runner: Any, c: Candidate) -> float:
        """The task metric of ``runner`` under ``c``'s schedule on the truncated dev subset."""
        return float(evaluate_runner(runner, self.split, self.length(c), self.model.tokenizer,
                                     self.batch_size, keep=list(c.keep)).score)


def describe_numerics(backends: Mapping[str, Any] | list[str]) -> str:
    return ", ".join(f"{b}: {PRECISION.get(b, b)}" for b in backends)
