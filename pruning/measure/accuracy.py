"""Dev-set evaluation of a (pruned) model, recording how many tokens each example kept."""
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
    preds, labels, lengths, kept = [], [], [], []
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
    model.train(was_training)
    name = split.task.metric
    return EvalResult(metrics.compute(name, preds, labels), metrics.primary(name), lengths, kept)


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
    preds, labels, lengths = [], [], []
    for b in cache[key]:
        logits = runner(b) if keep is None else runner(b, keep=keep)
        preds += (logits[:, 0].float().tolist() if split.task.is_regression
                  else logits.argmax(-1).tolist())
        labels += b["labels"].tolist()
        lengths += b["attention_mask"].sum(1).tolist()
    name = split.task.metric
    return EvalResult(metrics.compute(name, preds, labels), metrics.primary(name), lengths)
