"""Tokenization and batching: dynamically padded, length-bucketed batches.

Token pruning is measured on real lengths: padding to a fixed length would hide its effect.
"""
from __future__ import annotations

from typing import Any, Iterator

import numpy as np
import torch

from tp_search.pruning.core.errors import TpError
from tp_search.pruning.data.spec import Split


def encode(tokenizer: Any, split: Split, max_len: int) -> list[dict[str, list[int]]]:
    """Per-example ``input_ids`` / ``token_type_ids`` (no padding), truncated to ``max_len``."""
    limit = getattr(tokenizer, "model_max_length", None)
    min_len = 3 if split.pairs is not None else 2  # room for [CLS] ... [SEP] ( ... [SEP])
    if max_len < min_len:
        raise TpError(f"max_len {max_len} is too small: use at least {min_len}")
    if isinstance(limit, int) and max_len > limit:
        raise TpError(f"max_len {max_len} exceeds the tokenizer's model_max_length {limit}: "
                      f"use a max_len <= {limit}")
    if len(split) == 0:
        return []
    enc = tokenizer(split.texts, split.pairs, truncation=True, max_length=max_len,
                    padding=False, return_token_type_ids=True)
    tt = enc.get("token_type_ids")
    return [{"input_ids": list(ids), "token_type_ids": list(tt[i]) if tt is not None else [0] * len(ids)}
            for i, ids in enumerate(enc["input_ids"])]


def real_lengths(tokenizer: Any, split: Split, max_len: int) -> list[int]:
    """Tokenized length of each example incl. [CLS]/[SEP], truncated to ``max_len``."""
    return [len(e["input_ids"]) for e in encode(tokenizer, split, max_len)]


def batches(tokenizer: Any, split: Split, max_len: int, batch_size: int, shuffle: bool = False,
            seed: int = 0, bucket: bool = True) -> Iterator[dict[str, torch.Tensor]]:
    """Dynamically padded batches (each padded to its own longest example).

    With ``bucket`` examples are sorted by length inside chunks of 50 batches, so a batch
    holds similar lengths and padding is minimal; with ``shuffle`` the example order and the
    batch order are drawn from ``seed``. Every example appears exactly once. Arguments are
    checked and text tokenized before the first batch is requested.
    """
    if batch_size < 1:
        raise TpError(f"batch_size must be at least 1, got {batch_size}")
    enc = encode(tokenizer, split, max_len)
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(enc)) if shuffle else np.arange(len(enc))
    if bucket:
        lengths = np.array([len(e["input_ids"]) for e in enc])
        chunk = 50 * batch_size
        order = np.concatenate([c[np.argsort(lengths[c], kind="stable")]
                                for c in np.split(order, range(chunk, len(order), chunk))]) \
            if len(order) else order
    groups = [order[i:i + batch_size] for i in range(0, len(order), batch_size)]
    if bucket and shuffle:
        groups = [groups[i] for i in rng.permutation(len(groups))]
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    label_dtype = torch.float32 if split.task.is_regression else torch.long
    return _collate(enc, split.labels, groups, pad_id, label_dtype)


def _collate(enc: list[dict[str, list[int]]], labels: list, groups: list[np.ndarray], pad_id: int,
             label_dtype: torch.dtype) -> Iterator[dict[str, torch.Tensor]]:
    for g in groups:
        width = max(len(enc[i]["input_ids"]) for i in g)
        ids = torch.full((len(g), width), pad_id, dtype=torch.long)
        mask = torch.zeros((len(g), width), dtype=torch.long)
        tt = torch.zeros((len(g), width), dtype=torch.long)
        for row, i in enumerate(g):
            n = len(enc[i]["input_ids"])
            ids[row, :n] = torch.tensor(enc[i]["input_ids"])
            tt[row, :n] = torch.tensor(enc[i]["token_type_ids"])
            mask[row, :n] = 1
        yield {"input_ids": ids, "attention_mask": mask, "token_type_ids": tt,
               "labels": torch.tensor([labels[i] for i in g], dtype=label_dtype),
               "index": torch.as_tensor(g, dtype=torch.long)}  # positions in the split
