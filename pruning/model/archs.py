"""Named model shapes for latency work, where weights do not matter (random initialisation).

Plain data, no torch: the profiler's table names and the CLIs' ``--arch`` choices read it.
``ARCHS`` holds the encoder shape of each name (what latency tables key on); ``ARCH_MODELS``
what a name builds beyond its shape: the family (default bert) and its embedding sizes, so
tp-bench's parity check compares against the right transformers class.
"""
from __future__ import annotations

from typing import Any

ARCHS: dict[str, dict[str, int]] = {
    "bert-base": dict(num_layers=12, hidden_size=768, num_heads=12, intermediate_size=3072),
    "bert-large": dict(num_layers=24, hidden_size=1024, num_heads=16, intermediate_size=4096),
    "bert-medium": dict(num_layers=8, hidden_size=512, num_heads=8, intermediate_size=2048),
    "bert-small": dict(num_layers=4, hidden_size=512, num_heads=8, intermediate_size=2048),
    "minilm-l6": dict(num_layers=6, hidden_size=384, num_heads=12, intermediate_size=1536),
    "minilm-l12": dict(num_layers=12, hidden_size=384, num_heads=12, intermediate_size=1536),
    # bert-base's shape: its latency table is bert-base's (shape_name takes the first name)
    "roberta-base": dict(num_layers=12, hidden_size=768, num_heads=12, intermediate_size=3072),
    "xlm-roberta-base": dict(num_layers=12, hidden_size=768, num_heads=12,
                             intermediate_size=3072),
    "distilbert-base": dict(num_layers=6, hidden_size=768, num_heads=12, intermediate_size=3072),
    "electra-small": dict(num_layers=12, hidden_size=256, num_heads=4, intermediate_size=1024),
}

ARCH_MODELS: dict[str, dict[str, Any]] = {
    "roberta-base": dict(family="roberta", vocab_size=50265, max_position_embeddings=514,
                         type_vocab_size=1, pad_token_id=1, layer_norm_eps=1e-5),
    # XLM-R's real vocabulary has 250,002 entries (a 768 MB fp32 table, twice over with
    # tp-bench's transformers twin); the lookup is a gather whose cost does not depend on
    # the vocabulary size, so random weights use 32,000. Load a real checkpoint with --model.
    "xlm-roberta-base": dict(family="xlm-roberta", vocab_size=32000,
                             max_position_embeddings=514, type_vocab_size=1, pad_token_id=1,
                             layer_norm_eps=1e-5),
    "distilbert-base": dict(family="distilbert", vocab_size=30522),
    "electra-small": dict(family="electra", vocab_size=30522, embedding_size=128),
}
