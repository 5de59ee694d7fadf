"""What a task is: its spec (columns, labels, metric, max length) and a split of examples."""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from tp_search.pruning.core.errors import TpError

SPLITS = ("train", "dev")


@dataclass(frozen=True)
class Budget:
    """What the main job spends on a task by default (flags override each). Long documents
    cost more per example: on a 2-core CPU a MiniLM training step costs 0.07 s per example
    at 128 tokens, 0.20 s at 256 and 0.40 s at 512, so the BBC News job trains at 256
    tokens and distils for half an epoch;
    the teacher's reference metric, the search and the measurement keep the full length."""

    finetune_epochs: float = 1.0
    epochs: float = 1.0  # distillation and pruning stages
    train_max_len: int | None = None  # None: the task's max length
    # The search's proxy scores candidates on train examples no stage trains on, never on
    # the dev examples that report accuracy: ``holdout`` of them are kept out of training,
    # every trial is scored on the first ``eval_samples`` (a nested prefix), and candidates
    # within the proxy's noise of the best are re-scored on all ``holdout``.
    eval_samples: int = 300
    holdout: int = 600


def holdout_size(spec: "TaskSpec", train_examples: int, asked: int | None = None) -> int:
    """How many train examples the search's proxy holds out: as asked, else the task's
    budget capped at a third of a small train split."""
    n = asked or min(spec.budget.holdout, train_examples // 3)
    if not 1 <= n < train_examples:
        raise TpError(f"cannot hold out {n} of the task's {train_examples} train examples for "
                      f"the search's proxy: pass --holdout between 1 and {train_examples - 1}")
    return n


@dataclass(frozen=True)
class TaskSpec:
    name: str
    text_cols: tuple[str, ...]
    label_col: str
    num_labels: int  # 1 = regression
    metric: str  # a pruning.metrics name
    max_len: int = 128  # default max sequence length for the task
    label_names: tuple[str, ...] = ()  # label id -> original label, when labels were strings
    budget: Budget = Budget()

    @property
    def is_regression(self) -> bool:
        return self.num_labels == 1


@dataclass
class Split:
    texts: list[str]
    pairs: list[str] | None
    labels: list  # int for classification, float for regression
    task: TaskSpec = field(repr=False)

    def __len__(self) -> int:
        return len(self.texts)

    def holdout(self, n: int, seed: int = 0) -> tuple[Split, Split]:
        """(the rest, ``n`` held-out examples): the held-out part is ``subset(n, seed)``,
        the rest keeps every other example in original order."""
        if n < 1 or n >= len(self):
            raise TpError(f"cannot hold out {n} of {len(self)} examples: hold out between 1 "
                          f"and {len(self) - 1}")
        held = set(np.random.default_rng(seed).permutation(len(self))[:n].tolist())
        return self.take([i for i in range(len(self)) if i not in held]), self.subset(n, seed)

    def take(self, idx: list[int]) -> Split:
        return Split(texts=[self.texts[i] for i in idx],
                     pairs=None if self.pairs is None else [self.pairs[i] for i in idx],
                     labels=[self.labels[i] for i in idx], task=self.task)

    def subset(self, n: int, seed: int = 0) -> Split:
        """A deterministic sample of ``n`` examples in original order (all if n >= len).

        Taken as a prefix of one seeded permutation, so smaller subsets nest in larger ones.
        """
        if n < 1:
            raise TpError(f"subset size must be at least 1, got {n}")
        if n >= len(self):
            return self
        idx = np.sort(np.random.default_rng(seed).permutation(len(self))[:n])
        return self.take(idx.tolist())
