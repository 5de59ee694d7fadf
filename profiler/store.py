"""Finding the right table: this machine's unless ``--machine ID`` names another on purpose."""
from __future__ import annotations

import importlib.metadata
import logging
import os
from pathlib import Path

from tp_search.pruning.config import ModelShape
from tp_search.pruning.core.errors import TpError
from tp_search.pruning.runtime.registry import REFERENCE

from tp_search.profiler.fingerprint import Fingerprint, fingerprint
from tp_search.profiler.predictor import Predictor
from tp_search.profiler.table import DEFAULT_RESULTS, LatencyTable, shape_name, table_stem

log = logging.getLogger("tp.profiler")


def results_dir(path: str | Path | None = None) -> Path:
    return Path(path or os.environ.get("TP_SEARCH_RESULTS") or DEFAULT_RESULTS)


def known_machines(results: Path) -> list[str]:
    d = results / "machines"
    return sorted(p.name for p in d.iterdir() if p.is_dir()) if d.is_dir() else []


def table_path(results: Path, machine_id: str, shape: ModelShape, backend: str = REFERENCE
               ) -> Path:
    return results / "machines" / machine_id / f"{table_stem(shape, backend)}.json"


def find_table(shape: ModelShape, device: str = "cpu", machine: str | None = None,
               results: str | Path | None = None, current: Fingerprint | None = None,
               backend: str = REFERENCE) -> LatencyTable:
    """The table for ``shape`` on ``backend`` on this machine (or on ``machine``, when
    planning for another).

    A table keyed by another machine is never used silently; one made with another torch
    (or ONNX Runtime) version is used with a warning.
    """
    res = results_dir(results)
    here = None if machine else (current or fingerprint(device))  # py-cpuinfo takes ~2 s
    mid = machine or here.machine_id
    path = table_path(res, mid, shape, backend)
    if not path.is_file():
        others = [m for m in known_machines(res) if table_path(res, m, shape, backend).is_file()]
        hint = (f"; tables for this shape exist for: {', '.join(others)} "
                "(pass --machine ID to plan for one of them)" if others and not machine else "")
        what = f"machine {mid}" if machine else f"this machine ({mid})"
        on = "" if backend == REFERENCE else f" ({backend} backend)"
        flag = "" if backend == REFERENCE else f" --backend {backend}"
        raise TpError(f"no latency table for {shape_name(shape)}{on} on {what} under {res}; "
                      f"run tp-profile --model <dir> --device {device}{flag}{hint}")
    table = LatencyTable.load(path)
    if table.machine.get("machine_id") != mid:
        raise TpError(f"{path}: table belongs to {table.machine.get('machine_id')}, not {mid}")
    measured_with = Fingerprint.from_dict(table.machine).torch
    if here is not None and measured_with != here.torch:
        log.warning("latency table %s was measured with torch %s, this is torch %s: "
                    "predictions may be off; rerun tp-profile --force to refresh it",
                    mid, measured_with, here.torch)
    ort = table.runtime.get("onnxruntime")
    if here is not None and ort and ort != installed_version("onnxruntime"):
        log.warning("latency table %s/%s was measured with onnxruntime %s, this is %s: "
                    "predictions may be off; rerun tp-profile --backend %s --force", mid,
                    table.stem, ort, installed_version("onnxruntime"), backend)
    return table


def installed_version(package: str) -> str | None:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


def save_refit(pred: Predictor, refit: dict) -> None:
    """Store a correction measured from real full passes (the search's closed loop) with
    the table the predictor reads, atomically; a rebuilt or recalibrated table drops it."""
    table = pred.table
    path = table_path(results_dir(pred.results), table.machine_id, table.shape, table.backend)
    if not path.is_file():  # a table that was never saved (tests build them in memory)
        return
    fresh = LatencyTable.load(path)
    combo = f"b{pred.batch}-t{pred.threads}"
    fresh.calibration.setdefault(combo, {})["refit"] = refit
    table.calibration.setdefault(combo, {})["refit"] = refit
    fresh.save(results_dir(pred.results))


def load_predictor(shape: ModelShape, device: str = "cpu", machine: str | None = None,
                   threads: int = 1, batch: int = 1, results: str | Path | None = None,
                   backend: str = REFERENCE) -> Predictor:
    table = find_table(shape, device, machine, results, backend=backend)
    if (batch, threads) not in table.combos():
        have = ", ".join(f"batch {b}/{t} thread(s)" for b, t in table.combos()) or "nothing"
        raise TpError(f"latency table {table.machine_id}/{table.stem} has no entries for batch "
                      f"{batch} with {threads} thread(s) (it has {have}); run tp-profile "
                      f"--batch {batch} --threads {threads}"
                      + ("" if backend == REFERENCE else f" --backend {backend}"))
    pred = Predictor(table, batch=batch, threads=threads)
    pred.results = results  # where save_refit writes back
    return pred
