"""Search outputs as plain tables: trials, Pareto fronts, per-machine choices, the closed
loop's measurements, plot data.

Computed here from the typed entries (``selection/entries.py``), rendered by
``markdown.py`` (CSV, Markdown, PNG): the Optuna habit of building what to draw before
drawing it. Nothing here chooses.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Sequence

import pandas as pd

from tp_search.pruning.macs import reductions
from tp_search.search.space.candidates import schedule_key
from tp_search.search.selection.entries import Scored, feasible, keep_text, nearest, pareto
from tp_search.search.space.candidates import SearchSpace, prune_param, ratio_param

if TYPE_CHECKING:  # pragma: no cover
    from tp_search.search.result import SearchResult

PRUNING_NOTE = "the search's proxy: static top-k applied without retraining"


def lat_col(machine: str, machines: Sequence[str]) -> str:
    return "latency_ms" if machine == machines[0] else f"latency_ms@{machine}"


def feas_col(machine: str, machines: Sequence[str]) -> str:
    return "feasible" if machine == machines[0] else f"feasible@{machine}"


def trials_table(entries: Sequence[Scored], space: SearchSpace, machines: Sequence[str],
                 lengths: Sequence[int], seq_len: int) -> pd.DataFrame:
    """One row per finished trial, in the record's stable order."""
    L = space.shape.num_layers
    dev_macs: dict[tuple[str, int], tuple[float, float]] = {}
    counts = Counter(min(int(n), seq_len) for n in lengths)
    rows = []
    for e in entries:
        c = e.candidate
        row: dict[str, Any] = {"number": e.number, "run": e.run, "index": e.index,
                               "record": e.record, "evaluated": e.evaluated,
                               "sampler_seed": e.sampler_seed, "backend": c.backend,
                               "max_len": c.max_len}
        for l in space.layers:
            row[prune_param(l)] = e.params.get(prune_param(l))
            row[ratio_param(l)] = e.params.get(ratio_param(l))
        row["keep"] = keep_text(e)
        for l, k in enumerate(c.keep):
            row[f"keep_{l}"] = k
        for m in machines:
            row[lat_col(m, machines)] = e.latency_ms.get(m)
        for m in machines:
            row[feas_col(m, machines)] = e.feasible.get(m)
        row["macs_reduction_workload"] = e.macs_reduction
        mk = (row["keep"], c.max_len)
        if c.adaptive:  # input-dependent counts: the workload figure is all there is
            dev_macs[mk] = (None, None)
        elif mk not in dev_macs:  # both dev baselines, padded to seq_len and real lengths
            dev_macs[mk] = reductions(c.config, counts, seq_len, c.max_len)
        row["macs_reduction_padded"], row["macs_reduction_real"] = dev_macs[mk]
        row["metric"] = e.metric
        rows.append(row)
    cols = (["number", "run", "index", "record", "evaluated", "sampler_seed", "backend",
             "max_len"]
            + [c for l in space.layers for c in (prune_param(l), ratio_param(l))]
            + ["keep"] + [f"keep_{l}" for l in range(L)]
            + [lat_col(m, machines) for m in machines] + [feas_col(m, machines) for m in machines]
            + ["macs_reduction_workload", "macs_reduction_padded", "macs_reduction_real",
               "metric"])
    return pd.DataFrame(rows, columns=cols).astype({"record": "Int64"})


PARETO_COLUMNS = ["machine", "number", "backend", "max_len", "keep", "latency_ms",
                  "expected_latency_ms", "metric", "macs_reduction_workload"]


def pareto_table(entries: Sequence[Scored], machines: Sequence[str],
                 expected: Callable[[str, Scored], float | None]) -> pd.DataFrame:
    """Every machine's Pareto front over all backends and truncations, with the expected
    latency over dev lengths (``expected(machine, entry)``)."""
    rows = [{"machine": m, "number": e.number, "backend": e.candidate.backend,
             "max_len": e.candidate.max_len, "keep": keep_text(e),
             "latency_ms": e.latency_ms[m], "expected_latency_ms": expected(m, e),
             "metric": e.metric, "macs_reduction_workload": e.macs_reduction}
            for m in machines for e in pareto(entries, m)]
    return pd.DataFrame(rows, columns=PARETO_COLUMNS)


def lever_points(refs: Sequence[dict[str, Any]], machine: str) -> pd.DataFrame:
    """The dense and truncation-only points of each backend on ``machine``: what each lever
    achieves alone (``refs``: one dict per reference candidate, see session.references)."""
    rows = [{"backend": r["backend"], "max_len": r["max_len"],
             "lever": "dense" if not r["max_len"] else "truncation",
             "latency_ms": r["latency_ms"].get(machine), "metric": r["metric"],
             "feasible": r["feasible"].get(machine)} for r in refs]
    return pd.DataFrame(rows, columns=["backend", "max_len", "lever", "latency_ms", "metric",
                                       "feasible"])


def alternatives(entries: Sequence[Scored], machine: str, chosen: str, k: int = 3
                 ) -> pd.DataFrame:
    """The ``k`` feasible candidates nearest the chosen one in predicted latency."""
    rows = [{"trial": e.number, "backend": e.candidate.backend,
             "max_len": e.candidate.max_len, "keep": keep_text(e),
             "predicted_ms": e.latency_ms[machine], "metric": e.metric,
             "macs_red_workload": e.macs_reduction, "pareto": on}
            for e, on in nearest(entries, machine, chosen, k)]
    return pd.DataFrame(rows, columns=["trial", "backend", "max_len", "keep", "predicted_ms",
                                       "metric", "macs_red_workload", "pareto"])


def loop_table(result: "SearchResult") -> pd.DataFrame:
    """Every candidate the closed loop measured: predicted against measured."""
    rows = []
    for c in result.choices:
        for r in c.rounds:
            for m in r.candidates:
                rows.append({"machine": c.machine_id, "round": r.number, "trial": m.trial,
                             "candidate": m.label, "proxy_metric": m.metric,
                             "vs_teacher_pts": m.vs_dense_points[0],
                             "vs_teacher_ci_low": m.vs_dense_points[1],
                             "vs_teacher_ci_high": m.vs_dense_points[2],
                             "predicted_ms": m.predicted_ms, "limit_ms": m.limit_ms,
                             "measured_median_ms": m.median_ms,
                             f"measured_p{r.percentile:g}_ms": m.at_percentile_ms,
                             "error_pct": m.error_pct, "meets_target": m.meets,
                             "chosen": m.key == r.chosen})
    return pd.DataFrame(rows)


def machines_table(result: "SearchResult") -> pd.DataFrame:
    rows = []
    for c in result.choices:
        meas = c.measurement
        rows.append({
            "machine": c.machine_id, "dense_ms": c.dense_ms, "fastest_ms": c.fastest_ms,
            "dense_expected_ms": c.dense_expected_ms, "trial": c.trial, "backend": c.backend,
            "max_len": c.max_len, "keep": schedule_key(c.config) if not c.config.is_dense
            else "dense",
            "predicted_ms": c.latency_ms, "limit_ms": c.limit_ms, "expected_ms": c.expected_ms,
            "meets_target_predicted": c.limit_ms is not None and c.latency_ms <= c.limit_ms,
            "metric": c.metric, "macs_reduction_workload": c.macs.get("workload"),
            "macs_reduction_padded": c.macs.get("padded"),
            "macs_reduction_real": c.macs.get("real"),
            "measured_ms": meas.chosen.median_ms if meas else None,
            "measured_at_percentile_ms": meas.chosen_ms if meas else None,
            "measured_dense_ms": meas.dense.median_ms if meas else None,
            "error_pct": meas.error_pct if meas else None,
            "meets_target_measured": meas.meets_target if meas else None,
            "measurement": c.measure_note})
    return pd.DataFrame(rows)


@dataclass
class ParetoPlot:
    """What one panel of pareto.png shows (computed first, then drawn)."""

    machine: str
    metric_name: str
    target_ms: float
    points: dict[str, list[tuple[float, float]]]  # backend -> feasible trials (latency, metric)
    front: list[tuple[float, float]]
    dense: tuple[float, float]
    chosen: tuple[float, float] | None
    workload: str = ""
    levers: dict[str, list[tuple[int, float, float]]] = field(default_factory=dict)
    # backend -> [(max_len, latency, metric)]: dense (max_len 0) and truncation-only points
    limit_ms: float | None = None


def pareto_plots(result: "SearchResult") -> list[ParetoPlot]:
    plots = []
    for c in result.choices:
        m = c.machine_id
        points: dict[str, list[tuple[float, float]]] = {}
        for e in feasible(result.entries, m):
            points.setdefault(e.candidate.backend, []).append((e.latency_ms[m], e.metric))
        levers: dict[str, list[tuple[int, float, float]]] = {}
        for r in result.references:
            ms = r["latency_ms"].get(m)
            if ms is not None and ms < float("inf") and r["metric"] is not None:
                levers.setdefault(r["backend"], []).append((r["max_len"], ms, r["metric"]))
        plots.append(ParetoPlot(
            m, result.metric_name, result.target_ms, points,
            [(e.latency_ms[m], e.metric) for e in pareto(result.entries, m)],
            (c.dense_ms, result.dense_metric),
            None if c.metric is None else (c.latency_ms, c.metric),
            workload=result.workload_text(short=True), levers=levers, limit_ms=c.limit_ms))
    return plots
