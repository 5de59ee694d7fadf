"""Dev-set evaluation of a (pruned) model, recording how many tokens each example kept.

Predictions come back in the split's own order (batches are bucketed by length, which
differs between a truncated and a full-length runner), so two results on one split pair
example by example (``bootstrap.py``)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from tqdm.auto import tqdm

from tp_search.pruning.config import PruningConfig
from tp_search.pruning.data import Split, batches, metrics
from tp_search.pruning.macs import MacsReport, macs_report
from tp_search.pruning.model.encoder import ForwardInfo, PrunedBert


@dataclass
class EvalResult:
    metrics: dict[str, float]
    primary: str
    lengths: list[int] = field(default_factory=list)  # real length of each example
    kept: list[list[int]] = field(default_factory=list)  # tokens kept after each layer
    preds: list = field(default_factory=list)  # per example, in the split's order
    labels: list = field(default_factory=list)

    @property
    def score(self) -> float:
        return self.metrics[self.primary]

    def macs(self, cfg: PruningConfig, max_len: int) -> MacsReport:
        return macs_report(cfg, self.lengths, max_len, kept=self.kept)


@torch.inference_mode()
def evaluate(model: PrunedBert, split: Split, max_len: int, batch_size: int = 32,
             pruning: PruningConfig | None = None, tokenizer: Any = None,
             progress: bool = False, device: str = "cpu") -> EvalResult:
    tok = tokenizer or model.tokenizer
    was_training = model.training
    model.eval()
    preds, labels, lengths, kept, order = [], [], [], [], []
    # the search evaluates one dev subset hundreds of times: tokenize and batch it once
    cache = split.__dict__.setdefault("_eval_batches", {})
    key = (id(tok), max_len, batch_size)
    if key not in cache:
        cache[key] = list(batches(tok, split, max_len, batch_size, shuffle=False, bucket=True))
    for b in tqdm(cache[key], desc="eval", disable=not progress, leave=False):
        info = ForwardInfo()
        logits = model(b["input_ids"].to(device), b["attention_mask"].to(device),
                       b["token_type_ids"].to(device), pruning=pruning, info=info)
        if split.task.is_regression:
            preds += logits[:, 0].float().cpu().tolist()
        else:
            preds += logits.argmax(-1).cpu().tolist()
        labels += b["labels"].tolist()
        lengths += b["attention_mask"].sum(1).tolist()
        kept += torch.stack(info.kept, 1).cpu().tolist()
        order += b["index"].tolist()
    model.train(was_training)
    return _result(split, order, preds, labels, lengths, kept)


def _result(split: Split, order: list[int], preds: list, labels: list, lengths: list[int],
            kept: list[list[int]]) -> EvalResult:
    """The metric, with every per-example list put back in the split's order."""
    pos = sorted(range(len(order)), key=order.__getitem__)
    preds, labels, lengths = ([xs[i] for i in pos] for xs in (preds, labels, lengths))
    kept = [kept[i] for i in pos] if kept else []
    name = split.task.metric
    return EvalResult(metrics.compute(name, preds, labels), metrics.primary(name), lengths, kept,
                      preds, labels)


@torch.inference_mode()
def evaluate_runner(runner: Any, split: Split, max_len: int, tokenizer: Any,
                    batch_size: int = 32, keep: Any = None) -> EvalResult:
    """The task metric of any backend's runner (``pruning.runtime``): it returns logits for
    a batch, and ``keep`` is passed on for runners whose schedule is an input. Kept counts
    are not observable outside the PyTorch encoder, so ``kept`` stays empty."""
    cache = split.__dict__.setdefault("_eval_batches", {})
    key = (id(tokenizer), max_len, batch_size)
    if key not in cache:
        cache[key] = list(batches(tokenizer, split, max_len, batch_size, shuffle=False,
                                  bucket=True))
    preds, labels, lengths, order = [], [], [], []
    for b in cache[key]:
        logits = runner(b) if keep is None else runner(b, keep=keep)
        preds += (logits[:, 0].float().tolist() if split.task.is_regression
                  else logits.argmax(-1).tolist())
        labels += b["labels"].tolist()
        lengths += b["attention_mask"].sum(1).tolist()
        order += b["index"].tolist()
    return _result(split, order, preds, labels, lengths, [])
