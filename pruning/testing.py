"""Tiny random checkpoints for tests (shipped with the package so tests stay short)."""
from __future__ import annotations

from pathlib import Path

WORDS = ("the a film movie good bad great dull boring fun plot actor story scene fine awful "
         "loved hated best worst not very quite script music ending").split()


def make_tiny_checkpoint(path: str | Path, num_labels: int | None = 2, layers: int = 2,
                         hidden: int = 32, heads: int = 4, seed: int = 0) -> Path:
    """Save a random BERT (ForSequenceClassification, or BertModel if num_labels is None)
    with a small WordPiece tokenizer, exactly as Hugging Face writes checkpoints."""
    import torch
    from transformers import BertConfig, BertForSequenceClassification, BertModel, BertTokenizerFast

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS, ",", ".", "!"]
    (path / "vocab.txt").write_text("\n".join(vocab) + "\n")
    tok = BertTokenizerFast(vocab_file=str(path / "vocab.txt"), do_lower_case=True)
    cfg = BertConfig(vocab_size=len(vocab), hidden_size=hidden, num_hidden_layers=layers,
                     num_attention_heads=heads, intermediate_size=2 * hidden,
                     max_position_embeddings=64, num_labels=num_labels or 2)
    torch.manual_seed(seed)
    model = (BertModel(cfg) if num_labels is None else BertForSequenceClassification(cfg))
    model.save_pretrained(str(path))
    tok.save_pretrained(str(path))
    return path


def random_sentences(n: int, seed: int = 0, min_words: int = 2, max_words: int = 20) -> list[str]:
    import random
    rng = random.Random(seed)
    return [" ".join(rng.choice(WORDS) for _ in range(rng.randint(min_words, max_words)))
            for _ in range(n)]
