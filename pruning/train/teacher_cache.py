"""The teacher's outputs on the training set, computed once and shared by the stages.

Distillation and ToP both need, for every training batch, the teacher's logits and its
last-layer token importance. The teacher is frozen and runs in eval mode, so these are a
function of the example alone: one inference pass over the training set replaces a teacher
forward pass in every step of both stages (about a quarter of a step's time; at 512 tokens,
minutes per stage on a 2-core CPU). Batches carry each example's ``index`` in the split.
"""
from __future__ import annotations

import hashlib
import logging
from pathlib import Path

import torch
from torch import Tensor
from tqdm.auto import tqdm

from tp_search.pruning.data import Split, batches
from tp_search.pruning.model.encoder import PrunedBert
from tp_search.pruning.train.forward import train_forward
from tp_search.pruning.train.state import atomic_torch_save

log = logging.getLogger("tp.train")


class TeacherCache:
    """Per-example teacher logits [num_labels] and last-layer importance [length]."""

    def __init__(self, logits: Tensor, scores: list[Tensor]) -> None:
        self.logits, self.scores = logits, scores

    def lookup(self, batch: dict[str, Tensor]) -> tuple[Tensor, Tensor]:
        """(logits [B, C], importance [B, N]) for the examples of ``batch``."""
        idx = batch["index"].tolist()
        n = batch["input_ids"].shape[1]
        scores = torch.zeros(len(idx), n, dtype=self.scores[0].dtype)
        for row, i in enumerate(idx):
            s = self.scores[i][:n]
            scores[row, :len(s)] = s
        dev = batch["input_ids"].device
        return self.logits[idx].to(dev), scores.to(dev)

    @classmethod
    def build(cls, teacher: PrunedBert, split: Split, max_len: int, batch_size: int = 64,
              path: Path | None = None, progress: bool = True) -> "TeacherCache":
        """Compute (or load from ``path``) the teacher's outputs on every example."""
        if path is not None and path.is_file():
            d = torch.load(path, weights_only=True)
            return cls(d["logits"], d["scores"])
        last = teacher.config.num_layers - 1
        device = next(teacher.parameters()).device
        logits = torch.zeros(len(split), teacher.config.num_labels)
        scores: list[Tensor | None] = [None] * len(split)
        was = teacher.training
        teacher.eval()
        with torch.inference_mode():
            for b in tqdm(batches(teacher.tokenizer, split, max_len, batch_size),
                          desc="teacher outputs", disable=not progress, leave=False):
                b = {k: v.to(device) for k, v in b.items()}
                out = train_forward(teacher, b, score_layers={last})
                idx = b["index"].tolist()
                logits[idx] = out.logits.float().cpu()
                n_real = b["attention_mask"].sum(1).tolist()
                for row, i in enumerate(idx):
                    scores[i] = out.scores[last][row, :n_real[row]].float().cpu().clone()
        teacher.train(was)
        cache = cls(logits, [s for s in scores if s is not None])
        if path is not None:
            try:
                atomic_torch_save({"logits": cache.logits, "scores": cache.scores}, path)
            except OSError as e:  # a read-only teacher directory: keep it in memory
                log.info("teacher outputs not cached on disk (%s)", e)
        return cache


def cache_path(teacher_dir: str | Path, split: Split, max_len: int) -> Path:
    """Beside the teacher's model directory, keyed by the data and the length: a cache is
    never reused for other examples or another truncation."""
    h = hashlib.sha1(f"{max_len}".encode())
    for t, p in zip(split.texts, split.pairs or [None] * len(split)):
        h.update(f"{t}\x00{p}\x01".encode())
    base = Path(teacher_dir)
    root = base.parent if base.name == "model" else base
    return root / f"teacher-outputs-{h.hexdigest()[:12]}.pt"
