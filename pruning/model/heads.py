"""Sequence-classification heads of the BERT families: the first token's final state
through dense -> activation -> output layer, as each family's transformers class does it.

  pooler      BERT, BertForSequenceClassification: pooler dense, tanh, dropout, classifier
  roberta     RoBERTa / XLM-R: dropout, dense, tanh, dropout, out_proj (on <s>)
  electra     ELECTRA: as RoBERTa with gelu (transformers' ElectraClassificationHead)
  distilbert  DistilBERT: pre_classifier, ReLU, dropout, classifier (no pooler)

All four have the same two linear layers (``dense``, ``out``); only the activation and the
dropout placement differ, so one module with a kind covers them. The family's checkpoint
mapping (``families.py``) names the two layers in each family's own key layout.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn


@dataclass(frozen=True)
class HeadKind:
    activation: Callable[[Tensor], Tensor]
    dropout_first: bool  # dropout on the first token before the dense layer (RoBERTa, ELECTRA)


HEADS: dict[str, HeadKind] = {
    "pooler": HeadKind(torch.tanh, False),
    "roberta": HeadKind(torch.tanh, True),
    "electra": HeadKind(F.gelu, True),
    "distilbert": HeadKind(F.relu, False),
}


class ClassificationHead(nn.Module):
    def __init__(self, kind: str, hidden: int, num_labels: int, dropout: float) -> None:
        super().__init__()
        self.kind = kind
        self.dense = nn.Linear(hidden, hidden)
        self.out = nn.Linear(hidden, num_labels)
        self.act = HEADS[kind].activation
        self.drop_in = nn.Dropout(dropout) if HEADS[kind].dropout_first else nn.Identity()
        self.drop = nn.Dropout(dropout)

    def forward(self, x: Tensor) -> Tensor:
        """Logits [B, num_labels] from the final hidden states [B, N, d] (first token)."""
        h = self.act(self.dense(self.drop_in(x[:, 0])))
        return self.out(self.drop(h))
