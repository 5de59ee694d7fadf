"""Tiny random checkpoints for tests (shipped with the package so tests stay short)."""
from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import torch
import transformers
from transformers import BertTokenizerFast

WORDS = ("the a film movie good bad great dull boring fun plot actor story scene fine awful "
         "loved hated best worst not very quite script music ending").split()

BERT_SPECIALS = dict(pad_token="[PAD]", unk_token="[UNK]", cls_token="[CLS]",
                     sep_token="[SEP]", mask_token="[MASK]")
# RoBERTa's special tokens at RoBERTa's ids: <s> 0, <pad> 1, </s> 2 (pad 1 drives positions)
ROBERTA_SPECIALS = dict(cls_token="<s>", pad_token="<pad>", sep_token="</s>",
                        unk_token="<unk>", mask_token="<mask>")
FAMILIES = ("bert", "roberta", "xlm-roberta", "distilbert", "electra")


def _family_config(family: str, vocab: int, layers: int, hidden: int, heads: int,
                   positions: int, num_labels: int) -> transformers.PretrainedConfig:
    if family == "distilbert":
        return transformers.DistilBertConfig(
            vocab_size=vocab, dim=hidden, n_layers=layers, n_heads=heads, hidden_dim=2 * hidden,
            max_position_embeddings=positions, num_labels=num_labels)
    kw: dict[str, Any] = dict(vocab_size=vocab, hidden_size=hidden, num_hidden_layers=layers,
                              num_attention_heads=heads, intermediate_size=2 * hidden,
                              max_position_embeddings=positions, num_labels=num_labels)
    if family in ("roberta", "xlm-roberta"):  # like the real ones: 2 extra position rows
        kw.update(max_position_embeddings=positions + 2, type_vocab_size=1, pad_token_id=1,
                  bos_token_id=0, eos_token_id=2, layer_norm_eps=1e-5)
    if family == "electra":  # narrower embeddings, projected to hidden
        kw.update(embedding_size=hidden // 2)
    return transformers.AutoConfig.for_model(family, **kw)


def make_tiny_checkpoint(path: str | Path, num_labels: int | None = 2, layers: int = 2,
                         hidden: int = 32, heads: int = 4, seed: int = 0,
                         family: str = "bert", noise: float = 0.0) -> Path:
    """Save a random model of ``family`` (its ForSequenceClassification class, or its base
    model if num_labels is None) with a small WordPiece tokenizer, exactly as Hugging Face
    writes checkpoints. RoBERTa/XLM-R get RoBERTa's special tokens and ids (their BPE and
    SentencePiece tokenizers cannot be built offline); DistilBERT's returns no token types.

    ``noise`` adds N(0, noise) to every parameter: biases and layer norms then differ from
    their initial zeros and ones, so a mapping that swaps them changes the logits."""

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    roberta = family in ("roberta", "xlm-roberta")
    specials = ROBERTA_SPECIALS if roberta else BERT_SPECIALS
    order = (("cls_token", "pad_token", "sep_token", "unk_token", "mask_token") if roberta
             else ("pad_token", "unk_token", "cls_token", "sep_token", "mask_token"))
    vocab = [specials[k] for k in order] + [*WORDS, ",", ".", "!"]
    (path / "vocab.txt").write_text("\n".join(vocab) + "\n")
    inputs = (["input_ids", "attention_mask"] if family == "distilbert"
              else ["input_ids", "token_type_ids", "attention_mask"])
    tok = BertTokenizerFast(vocab=str(path / "vocab.txt"), do_lower_case=True,
                            model_input_names=inputs, **specials)
    cfg = _family_config(family, len(vocab), layers, hidden, heads, 64, num_labels or 2)
    torch.manual_seed(seed)
    model = (transformers.AutoModel.from_config(cfg) if num_labels is None
             else transformers.AutoModelForSequenceClassification.from_config(cfg))
    if noise:
        with torch.no_grad():
            for p in model.parameters():
                p.add_(torch.randn_like(p) * noise)
    model.save_pretrained(str(path))
    tok.save_pretrained(str(path))
    return path


def masked_reference(model, enc, info) -> torch.Tensor:
    """The dense model in which each dropped token is masked out of attention from the
    layer after the one that dropped it (``info`` from the dropping run); returns logits."""
    ids, am = enc["input_ids"], enc["attention_mask"].bool()
    B, N = ids.shape
    x = model.embeddings(ids, enc.get("token_type_ids"))
    valid = am.clone()
    for l, layer in enumerate(model.layers):
        ctx, _ = layer.attention(x, valid, need_probs=False)
        x = layer.finish(x, ctx)
        alive = torch.zeros(B, N, dtype=torch.bool)
        for b in range(B):
            k = int(info.kept[l][b])
            alive[b, info.kept_index[l][b, :k]] = True
        valid = valid & alive
    return model.classify(x)


def random_sentences(n: int, seed: int = 0, min_words: int = 2, max_words: int = 20) -> list[str]:
    rng = random.Random(seed)
    return [" ".join(rng.choice(WORDS) for _ in range(rng.randint(min_words, max_words)))
            for _ in range(n)]
