"""The main job's profile stage: this machine's latency table for every backend searched,
profiled now where one is missing (or too short for the workload)."""
from __future__ import annotations

import logging
from dataclasses import asdict

from tp_search.profiler.build import build_table
from tp_search.profiler.fingerprint import fingerprint
from tp_search.profiler.build_settings import BuildSettings
from tp_search.profiler.store import load_predictor, results_dir, table_path
from tp_search.profiler.table import LatencyTable
from tp_search.profiler.validate import self_validate
from tp_search.pruning.config import ModelShape
from tp_search.pruning.core.errors import TpError
from tp_search.pruning.model.checkpoint import random_model
from tp_search.pruning.runtime import available_backends

from tp_search.search.search_settings import SearchSettings

log = logging.getLogger("tp.pipeline")

VALIDATE = 4  # random schedules a new table is validated with


def backends(s: SearchSettings) -> tuple[str, ...]:
    """The backends the job searches: those asked for, or every one this install runs."""
    if s.backends:
        return tuple(s.backends)
    return tuple(available_backends())


def has_tables(s: SearchSettings, shape: ModelShape, max_len: int) -> bool:
    for b in backends(s):
        try:
            p = load_predictor(shape, s.device, s.machines[0] if s.machines else None,
                               s.threads, s.batch, s.results, b)
        except TpError:
            return False
        if p.max_len < max_len:
            return False
    return True


def ensure_tables(s: SearchSettings, shape: ModelShape, max_len: int) -> str:
    """This machine's tables for the shape at the workload, profiled now if missing."""
    if s.machines:
        for m in s.machines:  # planning for other machines: their tables must exist
            for b in backends(s):
                load_predictor(shape, s.device, m, s.threads, s.batch, s.results, b)
        return "tables of " + ",".join(s.machines)
    fp = fingerprint(s.device)
    res = results_dir(s.results)
    paths = []
    for b in backends(s):
        path = table_path(res, fp.machine_id, shape, b)
        paths.append(str(path))
        try:
            if load_predictor(shape, s.device, None, s.threads, s.batch, s.results,
                              b).max_len >= max_len:
                continue
        except TpError as e:
            log.info("%s; profiling this machine now", e)
        existing = LatencyTable.load(path) if path.is_file() else None
        model = random_model(asdict(shape))
        table = build_table(model, fp, res, BuildSettings(
            batches=[s.batch], threads=[s.threads], max_len=max_len, device=s.device,
            seed=s.seed, backend=b), existing)
        # a table just built validates itself: its error widens the search's plan
        self_validate(model, table, res, s.batch, s.threads, max_len, samples=VALIDATE,
                      device=s.device, seed=s.seed)
    return ", ".join(paths)
