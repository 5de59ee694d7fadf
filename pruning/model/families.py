"""The BERT families tp-search loads, and where each keeps its weights.

A ``Family`` describes one config.json ``model_type``: how its config reads into an
``EncoderConfig`` (and is written back), where each of our modules lives in its
``*ForSequenceClassification`` key layout, and which transformers class is its twin (the
class ``save`` declares, and tp-bench's parity reference). Everything family-specific is
here and in ``heads.py``; the encoder only sees ``EncoderConfig`` fields.

  bert         BertModel / BertForSequenceClassification (pooler + classifier)
  roberta      RoBERTa: positions from padding_idx + 1, head dense-tanh-out_proj on <s>
  xlm-roberta  XLM-R: RoBERTa's layout under its own model_type
  distilbert   DistilBERT: no token types, q_lin/k_lin/v_lin/out_lin layers,
               pre_classifier-ReLU-classifier head, no pooler
  electra      ELECTRA: embedding_size -> hidden projection, head dense-gelu-out_proj
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from torch import Tensor, cat

from tp_search.pruning.core.errors import TpError
from tp_search.pruning.model.encoder import EncoderConfig

Source = str | tuple[str, ...]  # one HF module, or several concatenated (q, k, v)

BERT_EMBEDDINGS = {"word": "embeddings.word_embeddings",
                   "position": "embeddings.position_embeddings",
                   "token_type": "embeddings.token_type_embeddings", "ln": "embeddings.LayerNorm"}
BERT_LAYER: dict[str, Source] = {
    "qkv": ("attention.self.query", "attention.self.key", "attention.self.value"),
    "attn_out": "attention.output.dense", "ln1": "attention.output.LayerNorm",
    "ffn_in": "intermediate.dense", "ffn_out": "output.dense", "ln2": "output.LayerNorm"}
CLASSIFICATION_HEAD = {"dense": "classifier.dense", "out": "classifier.out_proj"}


@dataclass(frozen=True)
class Family:
    model_type: str
    hf_class: str  # transformers' sequence classifier of this family
    base: str  # the base model's key prefix inside hf_class ("roberta" ...)
    layers: str  # the layer list under the base
    embeddings: dict[str, str]  # our Embeddings module -> theirs, under the base
    layer: dict[str, Source]  # our Layer module -> theirs, under layers.{i}
    head_modules: dict[str, str]  # our head module -> theirs, full key in hf_class
    head: str  # heads.HEADS kind
    read: Callable[[dict[str, Any]], dict[str, Any]]  # config.json -> EncoderConfig fields
    write: Callable[[EncoderConfig], dict[str, Any]]  # EncoderConfig -> config.json
    token_types: bool = True
    roberta_positions: bool = False  # position ids from padding_idx + 1, pads at padding_idx

    def config(self, **fields: Any) -> EncoderConfig:
        """An ``EncoderConfig`` of this family: shape fields given, structure from the family."""
        c = EncoderConfig(family=self.model_type, head=self.head, **fields)
        return replace(c, type_vocab_size=c.type_vocab_size if self.token_types else 0,
                       position_offset=c.pad_token_id + 1 if self.roberta_positions else 0)

    def encoder_config(self, hf: dict[str, Any], num_labels: int) -> EncoderConfig:
        try:
            fields = self.read(hf)
        except KeyError as e:
            raise TpError(f"config.json of a {self.model_type} checkpoint lacks {e.args[0]!r}"
                          ) from None
        return self.config(**fields, num_labels=num_labels, hf_config=hf)

    def modules(self, num_layers: int) -> list[tuple[str, Source]]:
        """(our module, HF module(s)) pairs, HF names in the hf_class layout."""
        b = f"{self.base}."
        pairs: list[tuple[str, Source]] = [(f"embeddings.{o}", b + h)
                                           for o, h in self.embeddings.items()]
        for i in range(num_layers):
            pre = f"{b}{self.layers}.{i}."
            pairs += [(f"layers.{i}.{o}", tuple(pre + x for x in h) if isinstance(h, tuple)
                       else pre + h) for o, h in self.layer.items()]
        return pairs + [(f"head.{o}", h) for o, h in self.head_modules.items()]

    def from_hf(self, hf: dict[str, Tensor], num_layers: int) -> dict[str, Tensor]:
        """Our state dict from a checkpoint's (with or without the base prefix: a base
        model such as RobertaModel saves its keys bare). Missing modules are left out;
        the caller decides which are required."""
        sd = {_normalise_key(k): v for k, v in hf.items()}
        b = f"{self.base}."

        def find(key: str) -> Tensor | None:
            return sd.get(key, sd.get(key.removeprefix(b)))

        out: dict[str, Tensor] = {}
        for ours, theirs in self.modules(num_layers):
            for p in ("weight", "bias"):
                parts = [find(f"{h}.{p}") for h in
                         (theirs if isinstance(theirs, tuple) else (theirs,))]
                if all(t is not None for t in parts):
                    out[f"{ours}.{p}"] = cat(parts) if len(parts) > 1 else parts[0]
        return out

    def to_hf(self, sd: dict[str, Tensor], num_layers: int) -> dict[str, Tensor]:
        """Our state dict under the hf_class key names (qkv split back into q, k, v)."""
        out: dict[str, Tensor] = {}
        for ours, theirs in self.modules(num_layers):
            for p in ("weight", "bias"):
                t = sd.get(f"{ours}.{p}")
                if t is None:  # a module this model does not have (ELECTRA's projection)
                    continue
                if isinstance(theirs, tuple):
                    for h, part in zip(theirs, t.chunk(len(theirs))):
                        out[f"{h}.{p}"] = part
                else:
                    out[f"{theirs}.{p}"] = t
        return {k: v.detach().contiguous().clone() for k, v in out.items()}


def _normalise_key(k: str) -> str:
    """Old TF-converted checkpoints name layer norm parameters gamma/beta."""
    return k.replace("LayerNorm.gamma", "LayerNorm.weight").replace("LayerNorm.beta",
                                                                      "LayerNorm.bias")


def _read_bert(hf: dict[str, Any], pad: int = 0) -> dict[str, Any]:
    return dict(
        vocab_size=hf["vocab_size"], hidden_size=hf["hidden_size"],
        num_layers=hf["num_hidden_layers"], num_heads=hf["num_attention_heads"],
        intermediate_size=hf["intermediate_size"],
        max_position_embeddings=hf.get("max_position_embeddings", 512),
        type_vocab_size=hf.get("type_vocab_size", 2),
        layer_norm_eps=hf.get("layer_norm_eps", 1e-12), hidden_act=hf.get("hidden_act", "gelu"),
        hidden_dropout=hf.get("hidden_dropout_prob", 0.1),
        attention_dropout=hf.get("attention_probs_dropout_prob", 0.1),
        classifier_dropout=hf.get("classifier_dropout"),
        pad_token_id=pad if hf.get("pad_token_id") is None else hf["pad_token_id"],
        embedding_size=hf.get("embedding_size"))


def _write_bert(c: EncoderConfig) -> dict[str, Any]:
    return {"model_type": c.family, "vocab_size": c.vocab_size, "hidden_size": c.hidden_size,
         "num_hidden_layers": c.num_layers, "num_attention_heads": c.num_heads,
         "intermediate_size": c.intermediate_size, "hidden_act": c.hidden_act,
         "max_position_embeddings": c.max_position_embeddings,
         "type_vocab_size": c.type_vocab_size, "layer_norm_eps": c.layer_norm_eps,
         "hidden_dropout_prob": c.hidden_dropout,
         "attention_probs_dropout_prob": c.attention_dropout,
         "classifier_dropout": c.classifier_dropout, "pad_token_id": c.pad_token_id}


def _write_electra(c: EncoderConfig) -> dict[str, Any]:
    return {**_write_bert(c), "embedding_size": c.embedding_size or c.hidden_size}


def _read_distilbert(hf: dict[str, Any]) -> dict[str, Any]:
    return dict(
        vocab_size=hf["vocab_size"], hidden_size=hf["dim"], num_layers=hf["n_layers"],
        num_heads=hf["n_heads"], intermediate_size=hf["hidden_dim"],
        max_position_embeddings=hf.get("max_position_embeddings", 512),
        layer_norm_eps=1e-12,  # fixed in DistilBERT's code, not in its config
        hidden_act=hf.get("activation", "gelu"), hidden_dropout=hf.get("dropout", 0.1),
        attention_dropout=hf.get("attention_dropout", 0.1),
        classifier_dropout=hf.get("seq_classif_dropout", 0.2),
        pad_token_id=hf.get("pad_token_id") or 0)


def _write_distilbert(c: EncoderConfig) -> dict[str, Any]:
    return {"model_type": "distilbert", "vocab_size": c.vocab_size, "dim": c.hidden_size,
            "n_layers": c.num_layers, "n_heads": c.num_heads, "hidden_dim": c.intermediate_size,
            "activation": c.hidden_act, "max_position_embeddings": c.max_position_embeddings,
            "sinusoidal_pos_embds": False, "dropout": c.hidden_dropout,
            "attention_dropout": c.attention_dropout,
            "seq_classif_dropout": 0.2 if c.classifier_dropout is None else c.classifier_dropout,
            "pad_token_id": c.pad_token_id}


def _roberta(model_type: str, hf_class: str) -> Family:
    return Family(model_type, hf_class, "roberta", "encoder.layer", BERT_EMBEDDINGS, BERT_LAYER,
                  CLASSIFICATION_HEAD, "roberta", lambda hf: _read_bert(hf, pad=1),
                  _write_bert, roberta_positions=True)


FAMILIES: dict[str, Family] = {
    "bert": Family("bert", "BertForSequenceClassification", "bert", "encoder.layer",
                   BERT_EMBEDDINGS, BERT_LAYER,
                   {"dense": "bert.pooler.dense", "out": "classifier"}, "pooler", _read_bert,
                   _write_bert),
    "roberta": _roberta("roberta", "RobertaForSequenceClassification"),
    "xlm-roberta": _roberta("xlm-roberta", "XLMRobertaForSequenceClassification"),
    "distilbert": Family(
        "distilbert", "DistilBertForSequenceClassification", "distilbert", "transformer.layer",
        {k: v for k, v in BERT_EMBEDDINGS.items() if k != "token_type"},
        {"qkv": ("attention.q_lin", "attention.k_lin", "attention.v_lin"),
         "attn_out": "attention.out_lin", "ln1": "sa_layer_norm", "ffn_in": "ffn.lin1",
         "ffn_out": "ffn.lin2", "ln2": "output_layer_norm"},
        {"dense": "pre_classifier", "out": "classifier"}, "distilbert", _read_distilbert,
        _write_distilbert, token_types=False),
    "electra": Family("electra", "ElectraForSequenceClassification", "electra",
                      "encoder.layer", {**BERT_EMBEDDINGS, "project": "embeddings_project"},
                      BERT_LAYER, CLASSIFICATION_HEAD, "electra", _read_bert, _write_electra),
}


def family(model_type: str | None, source: str = "checkpoint") -> Family:
    """The family of a config.json ``model_type``; a one-line TpError for any other."""
    if model_type not in FAMILIES:
        raise TpError(f"{source}: model_type {model_type!r} is not BERT-family; tp-search "
                      f"supports {', '.join(FAMILIES)}")
    return FAMILIES[model_type]
