"""Timed inputs: the same token ids for every runner that is compared."""
from __future__ import annotations

import torch

from tp_search.pruning.data import Split
from tp_search.pruning.model.encoder import PrunedBert


def fixed_inputs(model: PrunedBert, split: Split | None, seq_len: int, batch: int,
                 seed: int = 0) -> dict[str, torch.Tensor]:
    """``batch`` inputs of exactly ``seq_len`` real tokens: dev text run together (so
    attention looks like real text), or random ids for a weightless shape."""
    tok = model.tokenizer
    if tok is not None and split is not None:
        ids: list[int] = []
        i = 0
        while len(ids) < batch * (seq_len - 2) and i < len(split):
            ids += tok(split.texts[i], add_special_tokens=False)["input_ids"]
            i += 1
        ids = (ids * (1 + batch * seq_len // max(len(ids), 1)))[:batch * (seq_len - 2)]
        body = torch.tensor(ids).view(batch, seq_len - 2)
        cls = torch.full((batch, 1), tok.cls_token_id)
        sep = torch.full((batch, 1), tok.sep_token_id)
        input_ids = torch.cat([cls, body, sep], 1)
    else:
        g = torch.Generator().manual_seed(seed)
        vocab = model.config.vocab_size  # ids above BERT's special tokens where they exist
        lo = 1000 if vocab > 2000 else min(5, vocab - 1)
        input_ids = torch.randint(lo, vocab, (batch, seq_len), generator=g)
        input_ids[:, 0] = 101 if vocab > 101 else 0
    return {"input_ids": input_ids, "attention_mask": torch.ones_like(input_ids),
            "token_type_ids": torch.zeros_like(input_ids)}
