"""Latency lookup tables: per-component timings on a grid of token counts, per machine.

One table per (machine, model shape): a CSV of entries and a JSON sidecar with the
fingerprint, grid, measurement settings and calibration. Stored under
``<results>/machines/<machine-id>/<shape-name>.{csv,json}``.

Components (what the pruned encoder really executes, see pruning/encoder.py):
  embed(n)       embeddings of n tokens
  attn_sdpa(n)   fused attention of a non-pruning layer over n tokens
  attn_probs(n)  explicit attention with probabilities over n tokens
  select(n)      the keep step (importance scores, counts, top-k) and the gathers, n -> n/2
  finish(n)      output projection, residual, FFN on n tokens
  head           the classification head on the first token (stored at n = 1)
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from tp_search.pruning.config import ModelShape
from tp_search.pruning.core.errors import TpError
from tp_search.pruning.core.atomic import atomic_write_text
from tp_search.pruning.model.archs import ARCHS
from tp_search.pruning.runtime.registry import REFERENCE

COMPONENTS = ("embed", "attn_sdpa", "attn_probs", "select", "finish", "head")
COLUMNS = ("batch", "threads", "component", "n", "median_ms", "p10_ms", "p90_ms", "repeats",
           "other_cpu", "busy", "ref_ms", "state")
# ref_ms: the reference pass timed beside the point (grid.py); state: ref_ms over the build's
# median reference. Version 1 tables (before the reference) lack both and read as state 1.
TABLE_VERSION = 2
READS = (1, 2)
DEFAULT_RESULTS = Path("results")


def shape_name(shape: ModelShape) -> str:
    for name, a in ARCHS.items():
        if ModelShape(**a) == shape:
            return name
    return (f"bert-L{shape.num_layers}-H{shape.hidden_size}-A{shape.num_heads}"
            f"-F{shape.intermediate_size}")


def table_stem(shape: ModelShape, backend: str = REFERENCE) -> str:
    """The shape's name, and the backend unless it is the reference (the first tables)."""
    return shape_name(shape) if backend == REFERENCE else f"{shape_name(shape)}@{backend}"


def default_grid(max_len: int) -> list[int]:
    """Dense where latency bends (small n), coarser above; always ends at max_len.

    Above 64 tokens the components are close to linear (plus attention's quadratic term),
    and each point there costs a whole pass over the model, so the spacing widens: this is
    what keeps a bert-base table up to 512 tokens near a minute."""
    pts = [1, 2, 3, 4, 6, 8, 10, 12, 14, 16, 20, 24, 28, 32, 40, 48, 56, 64, 80, 96, 112,
           128, 160, 192, 224, 256] + list(range(320, 4097, 64))
    return [p for p in pts if p < max_len] + [max_len]


def parse_grid(text: str, max_len: int) -> list[int]:
    try:
        pts = sorted({int(x) for x in text.split(",") if x.strip()})
    except ValueError:
        raise TpError(f"--grid {text!r}: expected comma-separated token counts such as "
                      "1,2,4,8,16,32,64,128") from None
    if not pts or pts[0] < 1:
        raise TpError(f"--grid {text!r}: token counts must be positive integers")
    if pts[-1] > max_len:
        raise TpError(f"--grid goes to {pts[-1]} tokens, above --max-len {max_len}")
    if pts[-1] != max_len:
        pts.append(max_len)
    if pts[0] != 1:
        pts.insert(0, 1)
    return pts


@dataclass
class LatencyTable:
    shape: ModelShape
    machine: dict[str, Any]  # Fingerprint.to_dict()
    device: str
    entries: pd.DataFrame
    grid: list[int]
    settings: dict[str, Any] = field(default_factory=dict)
    calibration: dict[str, dict[str, float]] = field(default_factory=dict)  # "b{B}-t{T}"
    backend: str = REFERENCE  # the runtime the entries were timed on (pruning.runtime)
    runtime: dict[str, Any] = field(default_factory=dict)  # its versions and session options

    @property
    def machine_id(self) -> str:
        return self.machine["machine_id"]

    @property
    def name(self) -> str:
        return shape_name(self.shape)

    @property
    def stem(self) -> str:
        """File stem: the shape, and the backend unless it is torch (the original tables)."""
        return table_stem(self.shape, self.backend)

    def combos(self) -> list[tuple[int, int]]:
        """(batch, threads) pairs the table holds a complete grid for."""
        out = []
        for (b, t), g in self.entries.groupby(["batch", "threads"]):
            if all((g.component == c).any() for c in COMPONENTS):
                out.append((int(b), int(t)))
        return sorted(out)

    def component(self, name: str, batch: int, threads: int) -> tuple[list[int], list[float]]:
        e = self.entries
        g = e[(e.batch == batch) & (e.threads == threads) & (e.component == name)]
        if g.empty:
            raise TpError(f"latency table {self.machine_id}/{self.stem} has no {name} entries "
                          f"for batch {batch}, {threads} thread(s); profile them with "
                          f"tp-profile --batch {batch} --threads {threads}")
        g = g.sort_values("n")
        return g.n.astype(int).tolist(), g.median_ms.astype(float).tolist()

    # ---- files -------------------------------------------------------------------------
    def paths(self, results: Path) -> tuple[Path, Path]:
        d = Path(results) / "machines" / self.machine_id
        return d / f"{self.stem}.csv", d / f"{self.stem}.json"

    def save(self, results: Path) -> Path:
        csv_path, json_path = self.paths(results)
        d = csv_path.parent
        d.mkdir(parents=True, exist_ok=True)
        atomic_write_text(d / "machine.json", json.dumps(
            {k: v for k, v in self.machine.items() if k != "threads"}, indent=2) + "\n")
        e = self.entries.sort_values(["batch", "threads", "component", "n"])
        atomic_write_text(csv_path, e.to_csv(index=False, float_format="%.5f"))
        meta = {"version": TABLE_VERSION, "shape": self.shape.__dict__, "shape_name": self.name,
                "machine": self.machine, "device": self.device, "grid": self.grid,
                "settings": self.settings, "calibration": self.calibration,
                "backend": self.backend, "runtime": self.runtime,
                "combos": [list(c) for c in self.combos()]}
        atomic_write_text(json_path, json.dumps(meta, indent=2) + "\n")
        return csv_path

    @classmethod
    def load(cls, json_path: Path) -> "LatencyTable":
        json_path = Path(json_path)
        try:
            meta = json.loads(json_path.read_text())
            entries = pd.read_csv(json_path.with_suffix(".csv"))
        except FileNotFoundError as e:
            raise TpError(f"latency table incomplete: {e.filename} is missing; rerun tp-profile") from None
        except (json.JSONDecodeError, pd.errors.ParserError) as e:
            raise TpError(f"latency table {json_path} is unreadable ({e}); rerun tp-profile "
                          "with --force") from None
        if meta.get("version") not in READS:
            raise TpError(f"{json_path}: table version {meta.get('version')} is not supported; "
                          "rerun tp-profile --force")
        if meta["version"] == 1:
            entries = entries.assign(ref_ms=float("nan"), state=1.0)
        missing = set(COLUMNS) - set(entries.columns)
        if missing:
            raise TpError(f"{json_path.with_suffix('.csv')}: missing columns {sorted(missing)}")
        return cls(ModelShape(**meta["shape"]), meta["machine"], meta["device"], entries,
                   meta["grid"], meta.get("settings", {}), meta.get("calibration", {}),
                   meta.get("backend", REFERENCE), meta.get("runtime", {}))
