"""Calibration data for backends that quantize statically (their int8 activation scales are
fixed from examples): the task's own *train* text, never the dev examples that report
accuracy."""
from __future__ import annotations

from typing import Any

from torch import Tensor

from ..data import Split, batches

CALIBRATION_EXAMPLES = 64


def calibration_batches(tokenizer: Any, train: Split, max_len: int,
                        count: int = CALIBRATION_EXAMPLES, seed: int = 0
                        ) -> list[dict[str, Tensor]]:
    """``count`` train examples, one batch each, truncated to ``max_len``."""
    sub = train.subset(min(count, len(train)), seed)
    return [{k: v for k, v in b.items() if k not in ("labels", "index")}
            for b in batches(tokenizer, sub, max_len, 1, bucket=False)]
