"""The pruning-configuration format shared by search, training and inference.

A configuration says, per encoder layer, how many of an example's real tokens survive
that layer's attention (``topk``: a fraction of the real length) or which importance
threshold a token must reach (``threshold``, LTP). It records the model shape it was made
for so it is never applied to a different model by accident.
"""
from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Sequence

from tp_search.pruning.core.errors import TpError
from tp_search.pruning.core.atomic import atomic_write_text

FORMAT = "tp-search/pruning-config"
VERSION = 1
POLICIES = ("none", "topk", "threshold")


@dataclass(frozen=True)
class ModelShape:
    num_layers: int
    hidden_size: int
    num_heads: int
    intermediate_size: int

    def describe(self) -> str:
        return (f"{self.num_layers} layers, hidden {self.hidden_size}, "
                f"{self.num_heads} heads, FFN {self.intermediate_size}")


@dataclass(frozen=True)
class PruningConfig:
    """``keep[l]``: fraction of the real length kept after layer l's attention (topk).

    ``thresholds[l]``: minimum importance to survive layer l (threshold); 0 = no pruning.
    """

    policy: str
    shape: ModelShape
    keep: tuple[float, ...] | None = None
    thresholds: tuple[float, ...] | None = None
    method: str = ""  # what produced it: dense, static, top, ltp, search ...
    meta: dict[str, Any] = field(default_factory=dict, compare=False)

    def __post_init__(self) -> None:
        validate(self)

    # ---- constructors -------------------------------------------------------------
    @classmethod
    def dense(cls, shape: ModelShape, **meta: Any) -> "PruningConfig":
        return cls("none", shape, method="dense", meta=dict(meta))

    @classmethod
    def topk(cls, shape: ModelShape, keep: Sequence[float], method: str = "static",
             **meta: Any) -> "PruningConfig":
        return cls("topk", shape, keep=tuple(float(k) for k in keep), method=method,
                   meta=dict(meta))

    @classmethod
    def threshold(cls, shape: ModelShape, thresholds: Sequence[float], method: str = "ltp",
                  **meta: Any) -> "PruningConfig":
        return cls("threshold", shape, thresholds=tuple(float(t) for t in thresholds),
                   method=method, meta=dict(meta))

    # ---- queries -------------------------------------------------------------------
    @property
    def is_dense(self) -> bool:
        return self.policy == "none" or (
            self.policy == "topk" and all(k >= 1.0 for k in self.keep or ()))

    def prunes_at(self, layer: int) -> bool:
        """Does ``layer`` score tokens and drop some? Such layers need attention probabilities."""
        if self.policy == "topk":
            prev = 1.0 if layer == 0 else self.keep[layer - 1]
            return self.keep[layer] < prev
        if self.policy == "threshold":
            return self.thresholds[layer] > 0
        return False

    def kept_counts(self, n: int) -> list[int]:
        """Tokens alive after each layer for a real length ``n`` (topk only; CLS included)."""
        if self.policy != "topk":
            return [n] * self.shape.num_layers
        return kept_counts(self.keep, n)

    # ---- serialisation -------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"format": FORMAT, "version": VERSION, "policy": self.policy,
                             "method": self.method, "model": asdict(self.shape)}
        if self.keep is not None:
            d["keep"] = list(self.keep)
        if self.thresholds is not None:
            d["thresholds"] = list(self.thresholds)
        if self.meta:
            d["meta"] = self.meta
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any], source: str = "configuration") -> "PruningConfig":
        if not isinstance(d, dict) or d.get("format") != FORMAT:
            raise TpError(f"{source}: not a tp-search pruning configuration "
                          f"(expected \"format\": \"{FORMAT}\")")
        if d.get("version") != VERSION:
            raise TpError(f"{source}: unsupported configuration version {d.get('version')!r}; "
                          f"this tp-search reads version {VERSION}")
        try:
            shape = ModelShape(**{k: int(d["model"][k]) for k in
                                  ("num_layers", "hidden_size", "num_heads",
                                   "intermediate_size")})
        except (KeyError, TypeError, ValueError) as e:
            raise TpError(f"{source}: \"model\" must give num_layers, hidden_size, num_heads "
                          f"and intermediate_size ({e})") from None
        try:
            return cls(d.get("policy", ""), shape,
                       keep=None if d.get("keep") is None else tuple(map(float, d["keep"])),
                       thresholds=None if d.get("thresholds") is None
                       else tuple(map(float, d["thresholds"])),
                       method=str(d.get("method", "")), meta=dict(d.get("meta", {})))
        except TpError as e:
            raise TpError(f"{source}: {e}") from None
        except (TypeError, ValueError) as e:
            raise TpError(f"{source}: keep/thresholds must be lists of numbers ({e})") from None

    def save(self, path: str | Path) -> None:
        atomic_write_text(Path(path), json.dumps(self.to_dict(), indent=2) + "\n")

    @classmethod
    def load(cls, path: str | Path) -> "PruningConfig":
        p = Path(path)
        if not p.is_file():
            raise TpError(f"pruning configuration {p} not found; pass the path of a "
                          "best_config.json or pruning_config.json")
        try:
            d = json.loads(p.read_text())
        except json.JSONDecodeError as e:
            raise TpError(f"{p}: invalid JSON ({e.msg} at line {e.lineno})") from None
        return cls.from_dict(d, source=str(p))

    def check_shape(self, shape: ModelShape) -> None:
        if shape != self.shape:
            raise TpError(f"pruning configuration was made for a model with "
                          f"{self.shape.describe()}, but this model has {shape.describe()}; "
                          "search or train a configuration for this model")


KEEP_SCALE = 1_000_000  # keep fractions count to 6 decimals


def keep_count(k: float, n: int) -> int:
    """The single rounding rule every part of tp-search uses: ceil(k * n) with k taken to 6
    decimals, in integers. Exact in any runtime: an exported graph may evaluate float64 in
    float32 (OpenVINO does: 0.6f * 25 = 15.0000006, one token too many)."""
    return -(-(round(k * KEEP_SCALE) * n) // KEEP_SCALE)


def kept_counts(keep: Sequence[float], n: int) -> list[int]:
    """Tokens alive after each layer for real length ``n``: ``keep_count``, cumulative, at
    least CLS."""
    out, prev = [], n
    for k in keep:
        prev = max(1, min(prev, keep_count(k, n)))
        out.append(prev)
    return out


def validate(cfg: PruningConfig) -> None:
    L = cfg.shape.num_layers
    if cfg.policy not in POLICIES:
        raise TpError(f"unknown pruning policy {cfg.policy!r}; use one of {', '.join(POLICIES)}")
    if L < 1 or cfg.shape.hidden_size % max(cfg.shape.num_heads, 1):
        raise TpError(f"invalid model shape ({cfg.shape.describe()})")
    if cfg.policy == "topk":
        if cfg.keep is None or len(cfg.keep) != L:
            raise TpError(f"topk configuration needs {L} keep fractions (one per layer), got "
                          f"{0 if cfg.keep is None else len(cfg.keep)}")
        for i, k in enumerate(cfg.keep):
            if not (0.0 < k <= 1.0) or math.isnan(k):
                raise TpError(f"keep[{i}]={k} must be in (0, 1]")
            if i and k > cfg.keep[i - 1] + 1e-12:
                raise TpError(f"keep fractions must be non-increasing (pruning is cumulative): "
                              f"keep[{i}]={k} > keep[{i - 1}]={cfg.keep[i - 1]}")
    elif cfg.policy == "threshold":
        if cfg.thresholds is None or len(cfg.thresholds) != L:
            raise TpError(f"threshold configuration needs {L} thresholds (one per layer), got "
                          f"{0 if cfg.thresholds is None else len(cfg.thresholds)}")
        for i, t in enumerate(cfg.thresholds):
            if not (0.0 <= t < 1.0) or math.isnan(t):
                raise TpError(f"thresholds[{i}]={t} must be in [0, 1)")


def parse_keep(text: str) -> list[float]:
    """Parse a CLI ``--keep 1,1,0.7,...`` list."""
    try:
        return [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise TpError(f"--keep {text!r}: expected comma-separated fractions such as "
                      "1,1,0.7,0.5,0.4,0.3") from None
