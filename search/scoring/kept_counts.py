"""Kept counts of input-adaptive (threshold) candidates on the workload's inputs.

A threshold model keeps as many tokens as each input's attention warrants, so its latency
is no function of length: it is predicted request by request from the counts it keeps. The
counts come from running the candidate (the PyTorch encoder, fp32) on inputs like the
workload's: ``dev``, the proxy's held-out train slice (the dev inputs' length distribution,
and the run that scores the candidate anyway: its per-example counts are a by-product);
``max``, inputs of exactly ``seq_len`` real tokens made of the task's text (held-out train
examples run together), not a fixed count. ``batch`` consecutive inputs form a request,
which runs every layer at its largest kept count.
"""
from __future__ import annotations

from typing import Any

import torch

from tp_search.pruning.config import PruningConfig
from tp_search.pruning.measure.timed_inputs import fixed_inputs
from tp_search.pruning.model.encoder import ForwardInfo
from tp_search.pruning.runtime.registry import REFERENCE
from tp_search.search.space.candidates import Candidate, schedule_key
from tp_search.search.space.workload import Request, Workload, group_requests

MAX_INPUTS = 16  # inputs of the maximum length a max-workload candidate is run on


class KeptCounts:
    def __init__(self, evaluator: Any, workload: Workload, seed: int = 0) -> None:
        self.evaluator, self.workload, self.seed = evaluator, workload, seed
        self.cache: dict[str, list[Request]] = {}
        self._inputs: list[dict[str, torch.Tensor]] | None = None

    @staticmethod
    def key(c: Candidate) -> str:
        return f"{c.max_len}|{schedule_key(c.config)}"

    def remember(self, c: Candidate, requests: list[Any]) -> None:
        """Counts a trial recorded (in the study, by this run or an earlier one): a resumed
        or rejudged search reads them instead of running the candidate again."""
        self.cache.setdefault(self.key(c), [(int(n), [int(k) for k in kept])
                                            for n, kept in requests])

    def __call__(self, c: Candidate) -> list[Request]:
        key = self.key(c)
        if key not in self.cache:
            self.cache[key] = (self._dev(c) if self.workload.kind == "dev" else self._max(c))
        return self.cache[key]

    def dense_lengths(self, c: Candidate) -> list[int]:
        """The requests' lengths before ``c``'s truncation: what the dense baseline of its
        MACs reduction runs (a truncated candidate saves the cut tokens' work too)."""
        if self.workload.kind != "dev":
            return [self.workload.seq_len] * len(self(c))
        dense = PruningConfig.dense(c.config.shape)
        r = self.evaluator.result(Candidate(REFERENCE, 0, dense))
        b = self.workload.batch
        return [max(r.lengths[i:i + b]) for i in range(0, len(r.lengths), b)]

    def _dev(self, c: Candidate) -> list[Request]:
        r = self.evaluator.result(Candidate(REFERENCE, c.max_len, c.config))
        return group_requests(r.lengths, r.kept, self.workload.batch)

    def inputs(self) -> list[dict[str, torch.Tensor]]:
        """Inputs of ``seq_len`` real tokens, each of other held-out text."""
        if self._inputs is None:
            model, split = self.evaluator.model, self.evaluator.split
            n, b = self.workload.seq_len, self.workload.batch
            step = max(1, len(split) // MAX_INPUTS)
            self._inputs = [fixed_inputs(model, split.take(list(range(i, len(split)))), n, b,
                                         self.seed + i)
                            for i in range(0, step * MAX_INPUTS, step)][:MAX_INPUTS]
        return self._inputs

    @torch.inference_mode()
    def _max(self, c: Candidate) -> list[Request]:
        model = self.evaluator.model
        device = next(model.parameters()).device
        out = []
        for x in self.inputs():
            ids, mask = x["input_ids"].to(device), x["attention_mask"].to(device)
            if c.max_len:
                ids, mask = ids[:, :c.max_len], mask[:, :c.max_len]
            info = ForwardInfo()
            model(ids, mask, pruning=c.config, info=info)
            out.append((int(mask.sum(1).max()), [int(k.max()) for k in info.kept]))
        return out
