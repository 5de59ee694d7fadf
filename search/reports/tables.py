"""Search outputs as plain tables: trials, Pareto fronts, per-machine choices, plot data.

Computed here, rendered by ``report.py`` (CSV, Markdown, PNG): the Optuna habit of building
what to draw before drawing it.
"""
from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Sequence

import pandas as pd

from tp_search.pruning.config import PruningConfig
from tp_search.pruning.macs import reductions

from tp_search.search.space.candidates import SearchSpace, keep_key, prune_param, ratio_param

if TYPE_CHECKING:  # pragma: no cover
    from tp_search.search.search_settings import SearchResult

PRUNING_NOTE = "the search's proxy: static top-k applied without retraining"


def lat_col(machine: str, machines: Sequence[str]) -> str:
    return "latency_ms" if machine == machines[0] else f"latency_ms@{machine}"


def feas_col(machine: str, machines: Sequence[str]) -> str:
    return "feasible" if machine == machines[0] else f"feasible@{machine}"


# ---------------------------------------------------------------------------- tables

def trials_table(entries: Sequence[Any], space: SearchSpace, machines: Sequence[str],
                 lengths: Sequence[int], seq_len: int) -> pd.DataFrame:
    """One row per finished trial (``record.Entry``, in the record's stable order)."""
    L = space.shape.num_layers
    dev_macs: dict[tuple[str, int], tuple[float, float]] = {}
    counts = Counter(min(int(n), seq_len) for n in lengths)
    rows = []
    for number, e in enumerate(entries):
        a = e.attrs
        row: dict[str, Any] = {"number": number, "run": e.run, "index": e.index,
                               "record": e.record, "evaluated": a.get("evaluated"),
                               "sampler_seed": a.get("sampler_seed")}
        row["backend"] = a.get("backend", space.backends[0])
        row["max_len"] = int(a.get("max_len", 0))
        for l in space.layers:
            row[prune_param(l)] = e.params.get(prune_param(l))
            row[ratio_param(l)] = e.params.get(ratio_param(l))
        keep = a["keep"]
        key = row["keep"] = keep_key(keep)
        for l in range(L):
            row[f"keep_{l}"] = keep[l]
        for m in machines:
            row[lat_col(m, machines)] = a["latency_ms"].get(m)
        for m in machines:
            row[feas_col(m, machines)] = a["feasible"].get(m)
        row["macs_reduction_workload"] = a["macs_reduction"]
        mk = (key, row["max_len"])
        if mk not in dev_macs:  # both dev baselines, padded to seq_len and real lengths
            dev_macs[mk] = reductions(PruningConfig.topk(space.shape, keep), counts,
                                          seq_len, row["max_len"])
        row["macs_reduction_padded"], row["macs_reduction_real"] = dev_macs[mk]
        row["metric"] = a.get("metric")
        rows.append(row)
    cols = (["number", "run", "index", "record", "evaluated", "sampler_seed", "backend",
             "max_len"]
            + [c for l in space.layers for c in (prune_param(l), ratio_param(l))]
            + ["keep"] + [f"keep_{l}" for l in range(L)]
            + [lat_col(m, machines) for m in machines] + [feas_col(m, machines) for m in machines]
            + ["macs_reduction_workload", "macs_reduction_padded", "macs_reduction_real",
               "metric"])
    df = pd.DataFrame(rows, columns=cols)
    return df.astype({"record": "Int64"})


def feasible_rows(df: pd.DataFrame, machine: str, machines: Sequence[str]) -> pd.DataFrame:
    """Completed, evaluated trials that meet the constraints on ``machine``."""
    if df.empty:
        return df
    ok = df[feas_col(machine, machines)].eq(True) & df["metric"].notna()
    return df[ok]


def choose(df: pd.DataFrame, machine: str, machines: Sequence[str]) -> pd.Series | None:
    """The most accurate feasible trial; ties go to the *slower* one, then the earlier trial.

    A proxy on a few hundred examples of an easy task ties often (BBC News: many candidates
    at the subset's best accuracy); the slower of tied candidates pruned or truncated less,
    so it spends the latency budget on accuracy the proxy cannot resolve. (Measured: with ties
    to the faster, the main job chose a 7 ms candidate for a 19 ms plan and lost 1.3 points
    on the full dev set.)"""
    f = feasible_rows(df, machine, machines)
    if f.empty:
        return None
    lat = lat_col(machine, machines)
    return f.sort_values(["metric", lat, "number"], ascending=[False, False, True]).iloc[0]


def pareto_front(df: pd.DataFrame, machine: str, machines: Sequence[str]) -> pd.DataFrame:
    """Feasible trials not beaten on both metric and latency (one row per keep schedule)."""
    lat = lat_col(machine, machines)
    f = feasible_rows(df, machine, machines)
    f = f.sort_values([lat, "metric", "number"], ascending=[True, False, True])
    f = f.drop_duplicates(["backend", "max_len", "keep"])
    best, keep_idx = -math.inf, []
    for idx, m in zip(f.index, f["metric"]):
        if m > best:
            keep_idx.append(idx)
            best = m
    return f.loc[keep_idx]


PARETO_COLUMNS = ["machine", "number", "backend", "max_len", "keep", "latency_ms",
                  "expected_latency_ms", "metric", "macs_reduction_workload",
                  "macs_reduction_padded", "macs_reduction_real"]


def pareto_table(df: pd.DataFrame, machines: Sequence[str],
                 expected: Callable[[str, str, int, str], float | None]) -> pd.DataFrame:
    """Every machine's Pareto front over all backends and truncations, with the expected
    latency over dev lengths (``expected(machine, backend, max_len, keep)``)."""
    rows = []
    for m in machines:
        lat = lat_col(m, machines)
        for _, r in pareto_front(df, m, machines).iterrows():
            rows.append({"machine": m, "number": int(r["number"]), "backend": r["backend"],
                         "max_len": int(r["max_len"]), "keep": r["keep"],
                         "latency_ms": r[lat],
                         "expected_latency_ms": expected(m, r["backend"], int(r["max_len"]),
                                                         r["keep"]),
                         "metric": r["metric"],
                         "macs_reduction_workload": r["macs_reduction_workload"],
                         "macs_reduction_padded": r["macs_reduction_padded"],
                         "macs_reduction_real": r["macs_reduction_real"]})
    return pd.DataFrame(rows, columns=PARETO_COLUMNS)


def lever_points(refs: Sequence[dict[str, Any]], machine: str) -> pd.DataFrame:
    """The dense and truncation-only points of each backend on ``machine``: what each lever
    achieves alone (``refs``: one dict per reference candidate, see run.references)."""
    rows = [{"backend": r["backend"], "max_len": r["max_len"],
             "lever": "dense" if not r["max_len"] else "truncation",
             "latency_ms": r["latency_ms"].get(machine), "metric": r["metric"],
             "feasible": r["feasible"].get(machine)} for r in refs]
    return pd.DataFrame(rows, columns=["backend", "max_len", "lever", "latency_ms", "metric",
                                       "feasible"])


def alternatives(df: pd.DataFrame, machine: str, machines: Sequence[str], chosen_keep: str,
                 k: int = 3) -> pd.DataFrame:
    """The ``k`` feasible candidates nearest the chosen one (``chosen_keep``: its
    ``Candidate.key``) in predicted latency, preferring Pareto-optimal ones."""
    lat = lat_col(machine, machines)
    front = pareto_front(df, machine, machines)
    key = df["backend"] + "|" + df["max_len"].astype(str) + "|" + df["keep"]
    f = feasible_rows(df, machine, machines).assign(cand=key).drop_duplicates("cand")
    f = f[f["cand"] != chosen_keep]
    if f.empty:
        return f
    ref = df.loc[key == chosen_keep, lat].iloc[0] if (key == chosen_keep).any() \
        else f[lat].min()
    front_keys = set(front["backend"] + "|" + front["max_len"].astype(str) + "|" + front["keep"])
    f = f.assign(on_front=f["cand"].isin(front_keys), distance=(f[lat] - ref).abs())
    return f.sort_values(["on_front", "distance", "number"],
                         ascending=[False, True, True]).head(k)


def machines_table(result: "SearchResult") -> pd.DataFrame:
    rows = []
    for c in result.choices:
        meas = c.measurement
        rows.append({
            "machine": c.machine_id, "dense_ms": c.dense_ms, "fastest_ms": c.fastest_ms,
            "dense_expected_ms": c.dense_expected_ms, "trial": c.trial, "backend": c.backend,
            "max_len": c.max_len, "keep": keep_key(c.config.keep) if c.config.keep else "dense",
            "predicted_ms": c.latency_ms, "expected_ms": c.expected_ms,
            "meets_target_predicted": c.latency_ms <= result.target_ms,
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


def pareto_plots(result: "SearchResult") -> list[ParetoPlot]:
    df, machines = result.trials, result.machine_ids
    plots = []
    for c in result.choices:
        lat = lat_col(c.machine_id, machines)
        f = feasible_rows(df, c.machine_id, machines)
        front = pareto_front(df, c.machine_id, machines)
        points = {b: list(zip(g[lat].astype(float), g["metric"].astype(float)))
                  for b, g in f.groupby("backend")} if not f.empty else {}
        levers: dict[str, list[tuple[int, float, float]]] = {}
        for r in result.references:
            ms = r["latency_ms"].get(c.machine_id)
            if ms is not None and ms < float("inf") and r["metric"] is not None:
                levers.setdefault(r["backend"], []).append((r["max_len"], ms, r["metric"]))
        plots.append(ParetoPlot(
            c.machine_id, result.metric_name, result.target_ms, points,
            list(zip(front[lat].astype(float), front["metric"].astype(float))),
            (c.dense_ms, result.dense_metric),
            None if c.metric is None else (c.latency_ms, c.metric),
            workload=result.workload_text(short=True), levers=levers))
    return plots
