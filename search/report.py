"""Search outputs: compute plain tables first, then render them to CSV, Markdown and PNG.

Nothing here searches or measures; every function takes finished trials or a
``SearchResult`` and returns a table or text, apart from ``write_outputs`` which writes files.
"""
from __future__ import annotations

import math
import os
from collections import Counter
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Sequence

import pandas as pd

from pruning.cli_utils import dump_json
from pruning.config import PruningConfig
from pruning.io_utils import atomic_write_text
from pruning.macs import dense_macs, schedule_macs

from .space import SearchSpace, keep_key, prune_param, ratio_param

if TYPE_CHECKING:  # pragma: no cover
    from .study import SearchResult

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
    dev_macs: dict[str, tuple[float, float]] = {}
    counts = Counter(min(int(n), seq_len) for n in lengths)
    rows = []
    for number, e in enumerate(entries):
        a = e.attrs
        row: dict[str, Any] = {"number": number, "run": e.run, "index": e.index,
                               "record": e.record, "evaluated": a.get("evaluated"),
                               "sampler_seed": a.get("sampler_seed")}
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
        if key not in dev_macs:  # both dev baselines, padded to seq_len and real lengths
            dev_macs[key] = dev_reductions(PruningConfig.topk(space.shape, keep), counts,
                                           seq_len)
        row["macs_reduction_padded"], row["macs_reduction_real"] = dev_macs[key]
        row["metric"] = a.get("metric")
        rows.append(row)
    cols = (["number", "run", "index", "record", "evaluated", "sampler_seed"]
            + [c for l in space.layers for c in (prune_param(l), ratio_param(l))]
            + ["keep"] + [f"keep_{l}" for l in range(L)]
            + [lat_col(m, machines) for m in machines] + [feas_col(m, machines) for m in machines]
            + ["macs_reduction_workload", "macs_reduction_padded", "macs_reduction_real",
               "metric"])
    df = pd.DataFrame(rows, columns=cols)
    return df.astype({"record": "Int64"})


def dev_reductions(cfg: PruningConfig, counts: Counter, seq_len: int) -> tuple[float, float]:
    """(padded, real) MACs reductions of ``pruning.macs.macs_report`` over examples whose
    lengths are counted in ``counts``: each distinct length computed once."""
    s, total = cfg.shape, sum(counts.values())
    pruned = sum(c * schedule_macs(n, cfg.kept_counts(n), s) for n, c in counts.items())
    real = sum(c * dense_macs(n, s) for n, c in counts.items())
    return dense_macs(seq_len, s) * total / pruned, real / pruned


def feasible_rows(df: pd.DataFrame, machine: str, machines: Sequence[str]) -> pd.DataFrame:
    """Completed, evaluated trials that meet the constraints on ``machine``."""
    if df.empty:
        return df
    ok = df[feas_col(machine, machines)].eq(True) & df["metric"].notna()
    return df[ok]


def choose(df: pd.DataFrame, machine: str, machines: Sequence[str]) -> pd.Series | None:
    """The most accurate feasible trial; ties go to lower latency, then the earlier trial."""
    f = feasible_rows(df, machine, machines)
    if f.empty:
        return None
    lat = lat_col(machine, machines)
    return f.sort_values(["metric", lat, "number"], ascending=[False, True, True]).iloc[0]


def pareto_front(df: pd.DataFrame, machine: str, machines: Sequence[str]) -> pd.DataFrame:
    """Feasible trials not beaten on both metric and latency (one row per keep schedule)."""
    lat = lat_col(machine, machines)
    f = feasible_rows(df, machine, machines)
    f = f.sort_values([lat, "metric", "number"], ascending=[True, False, True])
    f = f.drop_duplicates("keep")
    best, keep_idx = -math.inf, []
    for idx, m in zip(f.index, f["metric"]):
        if m > best:
            keep_idx.append(idx)
            best = m
    return f.loc[keep_idx]


def pareto_table(df: pd.DataFrame, machines: Sequence[str],
                 expected: Callable[[str, str], float | None]) -> pd.DataFrame:
    """Every machine's Pareto front, with the expected latency over dev lengths."""
    rows = []
    for m in machines:
        lat = lat_col(m, machines)
        for _, r in pareto_front(df, m, machines).iterrows():
            rows.append({"machine": m, "number": int(r["number"]), "keep": r["keep"],
                         "latency_ms": r[lat], "expected_latency_ms": expected(m, r["keep"]),
                         "metric": r["metric"],
                         "macs_reduction_workload": r["macs_reduction_workload"],
                         "macs_reduction_padded": r["macs_reduction_padded"],
                         "macs_reduction_real": r["macs_reduction_real"]})
    return pd.DataFrame(rows, columns=["machine", "number", "keep", "latency_ms",
                                       "expected_latency_ms", "metric",
                                       "macs_reduction_workload", "macs_reduction_padded",
                                       "macs_reduction_real"])


def alternatives(df: pd.DataFrame, machine: str, machines: Sequence[str], chosen_keep: str,
                 k: int = 3) -> pd.DataFrame:
    """The ``k`` feasible configurations nearest the chosen one in predicted latency,
    preferring Pareto-optimal ones."""
    lat = lat_col(machine, machines)
    front = pareto_front(df, machine, machines)
    f = feasible_rows(df, machine, machines).drop_duplicates("keep")
    f = f[f["keep"] != chosen_keep]
    if f.empty:
        return f
    ref = df.loc[df["keep"] == chosen_keep, lat].iloc[0] if (df["keep"] == chosen_keep).any() \
        else f[lat].min()
    f = f.assign(on_front=f["keep"].isin(front["keep"]), distance=(f[lat] - ref).abs())
    return f.sort_values(["on_front", "distance", "number"],
                         ascending=[False, True, True]).head(k)


def machines_table(result: "SearchResult") -> pd.DataFrame:
    rows = []
    for c in result.choices:
        meas = c.measurement
        rows.append({
            "machine": c.machine_id, "dense_ms": c.dense_ms, "fastest_ms": c.fastest_ms,
            "dense_expected_ms": c.dense_expected_ms,
            "trial": c.trial, "keep": keep_key(c.config.keep) if c.config.keep else "dense",
            "predicted_ms": c.latency_ms, "expected_ms": c.expected_ms,
            "meets_target_predicted": c.latency_ms <= result.target_ms,
            "metric": c.metric, "macs_reduction_workload": c.macs.get("workload"),
            "macs_reduction_padded": c.macs.get("padded"),
            "macs_reduction_real": c.macs.get("real"),
            "measured_ms": meas.chosen.median_ms if meas else None,
            "measured_dense_ms": meas.dense.median_ms if meas else None,
            "error_pct": meas.error_pct if meas else None,
            "meets_target_measured": meas.meets_target if meas else None,
            "measurement": c.measure_note})
    return pd.DataFrame(rows)


# ---------------------------------------------------------------------------- plot

@dataclass
class ParetoPlot:
    """What one panel of pareto.png shows (computed first, then drawn)."""

    machine: str
    metric_name: str
    target_ms: float
    points: list[tuple[float, float]]  # feasible evaluated trials (latency, metric)
    front: list[tuple[float, float]]
    dense: tuple[float, float]
    chosen: tuple[float, float] | None
    workload: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


def pareto_plots(result: "SearchResult") -> list[ParetoPlot]:
    df, machines = result.trials, result.machine_ids
    plots = []
    for c in result.choices:
        lat = lat_col(c.machine_id, machines)
        f = feasible_rows(df, c.machine_id, machines)
        front = pareto_front(df, c.machine_id, machines)
        plots.append(ParetoPlot(
            c.machine_id, result.metric_name, result.target_ms,
            list(zip(f[lat].astype(float), f["metric"].astype(float))),
            list(zip(front[lat].astype(float), front["metric"].astype(float))),
            (c.dense_ms, result.dense_metric),
            None if c.metric is None else (c.latency_ms, c.metric),
            workload=result.workload_text(short=True)))
    return plots


def render_png(plots: Sequence[ParetoPlot], path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(plots), figsize=(6.4 * len(plots), 4.6), squeeze=False)
    for ax, p in zip(axes[0], plots):
        if p.points:
            ax.scatter(*zip(*p.points), s=12, color="0.7", label="feasible trials")
        if p.front:
            ax.step(*zip(*p.front), where="post", color="tab:blue", marker="o", ms=4,
                    label="Pareto front")
        ax.axvline(p.target_ms, color="tab:red", ls="--", label=f"target {p.target_ms:g} ms")
        ax.scatter([p.dense[0]], [p.dense[1]], marker="s", s=50, color="black",
                   label="dense model", zorder=3)
        if p.chosen:
            ax.scatter([p.chosen[0]], [p.chosen[1]], marker="*", s=160, color="tab:orange",
                       label="chosen", zorder=4)
        ax.set_xlabel("predicted latency (ms)")
        ax.set_ylabel(f"dev {p.metric_name} (proxy: static top-k, no retraining)", fontsize=9)
        ax.set_title(f"{p.machine}\n{p.workload}", fontsize=8)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".png")
    os.close(fd)  # a unique name: two workers may write the same report at once
    try:
        fig.savefig(tmp, dpi=110)
        os.replace(tmp, path)
    finally:
        plt.close(fig)
        Path(tmp).unlink(missing_ok=True)


# ---------------------------------------------------------------------------- markdown

def _fmt(v: Any, spec: str = ".3f", none: str = "n/a") -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return none
    return format(v, spec)


def _md_table(df: pd.DataFrame) -> str:
    if df.empty:
        return "(none)\n"
    head = "| " + " | ".join(map(str, df.columns)) + " |"
    sep = "|" + "|".join("---" for _ in df.columns) + "|"
    body = ["| " + " | ".join(_fmt(v, ".4g") if isinstance(v, float) or v is None
                              else str(v) for v in row) + " |"
            for row in df.itertuples(index=False)]
    return "\n".join([head, sep, *body]) + "\n"


def render_markdown(result: "SearchResult") -> str:
    r, s = result, result.settings
    c = r.primary
    lines = [f"# tp-search: {r.task} on {c.machine_id}", ""]
    target = f"predicted latency <= {r.target_ms:g} ms"
    if s.flops_reduction:
        target += f" and MACs reduction >= {s.flops_reduction:g}x (at the workload)"
    lines += [
        f"- **Target**: {target}",
        f"- **Machine**: {c.machine_id} (latency table under {r.results_dir}); "
        + ("planning for another machine" if c.machine_id != r.here_id else "this machine"),
        f"- **Workload**: {r.workload_text()}",
        f"- **Dev expectation**: mean over the {r.n_eval} dev examples' real lengths "
        f"(mean {r.mean_length:.1f} tokens, truncated to {r.seq_len}), each input unpadded",
        f"- **Model**: {r.model} (proxy metric from {r.proxy_model}); task {r.task}, "
        f"dev {r.metric_name} on {r.n_eval} examples ({PRUNING_NOTE})",
        f"- **Seeds**: search seed {s.seed} (sampler seeds used: "
        f"{', '.join(map(str, r.sampler_seeds)) or 'n/a'}; dev subset seed {s.seed})",
        f"- **Search space**: {r.space.describe()}",
    ]
    if r.study_name:
        lines.append(f"- **Study**: {r.study_name} in {r.storage}")
    lines += ["", "## Dense model", "",
              f"- predicted latency at the workload: {c.dense_ms:.3f} ms "
              f"(expected over dev lengths: {_fmt(c.dense_expected_ms)} ms)",
              f"- proxy {r.metric_name}: {r.dense_metric:.4f}",
              f"- fastest configuration in the space: {c.fastest_ms:.3f} ms", ""]
    lines += ["## Chosen configuration", ""]
    if r.status == "dense":
        lines += [f"The dense model already meets the target ({c.dense_ms:.3f} ms <= "
                  f"{r.target_ms:g} ms): no search was run and best_config.json holds the "
                  "dense configuration.", ""]
    lines += _choice_lines(r, c)
    if r.status == "searched" and r.trials is not None:
        alt = alternatives(r.trials, c.machine_id, r.machine_ids, keep_key(c.config.keep))
        lat = lat_col(c.machine_id, r.machine_ids)
        lines += ["## Nearest alternatives", "",
                  "Feasible configurations closest in predicted latency (Pareto-optimal first).",
                  ""]
        show = pd.DataFrame({
            "trial": alt["number"].astype(int) if not alt.empty else [],
            "keep": alt["keep"] if not alt.empty else [],
            "predicted_ms": alt[lat] if not alt.empty else [],
            "metric": alt["metric"] if not alt.empty else [],
            "macs_red_workload": alt["macs_reduction_workload"] if not alt.empty else [],
            "pareto": alt["on_front"] if not alt.empty else []})
        lines += [_md_table(show)]
    if len(r.choices) > 1:
        lines += ["## Machines", "",
                  "One search, one choice per machine: every feasible trial was evaluated "
                  "once (the metric does not depend on the machine) and each machine takes "
                  "the most accurate trial that meets the target on its own table.", ""]
        mt = machines_table(r)[["machine", "dense_ms", "fastest_ms", "trial", "keep",
                                "predicted_ms", "metric", "macs_reduction_workload",
                                "measured_ms", "error_pct", "measurement"]]
        lines += [_md_table(mt)]
    if r.stats:
        st = r.stats
        lines += ["## Search", "",
                  f"- {st.get('complete', 0)} finished trials in the study: "
                  f"{st.get('feasible', 0)} feasible on at least one machine (evaluated, or "
                  f"read from the cache), {st.get('infeasible', 0)} rejected by the predictor "
                  "without evaluation",
                  f"- this run: {st.get('run_trials', 0)} trials, "
                  f"{st.get('evaluations', 0)} proxy evaluations, {st.get('cache_hits', 0)} "
                  f"cache hits, {st.get('skipped', 0)} rejected",
                  f"- sampler: NSGA-II (population {s.population}), objectives: maximise "
                  f"{r.metric_name}, minimise predicted latency on {r.machine_ids[0]}", ""]
    return "\n".join(lines) + "\n"


def _choice_lines(r: "SearchResult", c: Any) -> list[str]:
    cfg = c.config
    layers = [l for l in range(cfg.shape.num_layers) if cfg.prunes_at(l)]
    out = [f"- keep fractions: {keep_key(cfg.keep) if cfg.keep else 'dense (all 1)'}"
           + (f" (pruning at layer{'s' if len(layers) > 1 else ''} "
              f"{', '.join(map(str, layers))})" if layers else ""),
           f"- tokens kept at the workload ({r.seq_len} real tokens): "
           f"{cfg.kept_counts(r.seq_len)}",
           f"- predicted latency: {c.latency_ms:.3f} ms at the workload "
           f"(dense {c.dense_ms:.3f} ms: predicted speedup {c.dense_ms / c.latency_ms:.2f}x, "
           "both on unpadded inputs of the workload length)",
           f"- expected latency over dev lengths: {_fmt(c.expected_ms)} ms "
           f"(dense {_fmt(c.dense_expected_ms)} ms)",
           f"- MACs reduction: {_fmt(c.macs.get('workload'), '.2f')}x at the workload; on the "
           f"dev subset {_fmt(c.macs.get('real'), '.2f')}x vs the dense model on real lengths, "
           f"{_fmt(c.macs.get('padded'), '.2f')}x vs the dense model padded to {r.seq_len} "
           "(padding baseline, not comparable to the former)",
           f"- proxy {r.metric_name}: {_fmt(c.metric, '.4f')} (dense {r.dense_metric:.4f}, "
           f"{PRUNING_NOTE})"]
    if c.trial is not None:
        out.append(f"- trial {c.trial}")
    m = c.measurement
    if m is not None:
        out.append(f"- measured with the pruned encoder ({m.repeats} interleaved repeats, "
                   f"{r.settings.threads} thread(s)): {m.chosen.median_ms:.3f} ms "
                   f"(p10 {m.chosen.p10_ms:.3f}, p90 {m.chosen.p90_ms:.3f}); dense "
                   f"{m.dense.median_ms:.3f} ms; measured speedup {m.speedup:.2f}x; prediction "
                   f"error {m.error_pct:+.1f}%")
        if not m.meets_target:
            out.append(f"- **MISSES THE TARGET WHEN MEASURED**: {m.chosen.median_ms:.3f} ms > "
                       f"{r.target_ms:g} ms. The latency table may be stale or the machine "
                       "busy: re-profile (tp-profile --force) or lower the target.")
        else:
            out.append(f"- meets the target when measured ({m.chosen.median_ms:.3f} ms <= "
                       f"{r.target_ms:g} ms)")
    else:
        out.append(f"- not measured: {c.measure_note}")
    return out + [""]


# ---------------------------------------------------------------------------- files

def write_outputs(result: "SearchResult") -> list[Path]:
    """Write every output of ``result`` into its directory; returns the paths written."""
    out = Path(result.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []

    def text(name: str, content: str) -> None:
        atomic_write_text(out / name, content)
        written.append(out / name)

    primary = result.primary
    primary.config.save(out / "best_config.json")
    written.append(out / "best_config.json")
    if len(result.choices) > 1:
        for c in result.choices:
            c.config.save(out / f"best_config.{c.machine_id}.json")
            written.append(out / f"best_config.{c.machine_id}.json")
    s = result.settings  # every table carries the workload and the seed in columns

    def csv(name: str, df: pd.DataFrame) -> None:
        text(name, df.assign(seq_len=result.seq_len, batch=s.batch, threads=s.threads,
                             target_ms=s.latency_ms, seed=s.seed).to_csv(index=False))

    if result.trials is not None:
        csv("trials.csv", result.trials)
    if result.pareto is not None:
        csv("pareto.csv", result.pareto)
        render_png(pareto_plots(result), out / "pareto.png")
        written.append(out / "pareto.png")
    csv("machines.csv", machines_table(result))
    text("report.md", render_markdown(result))
    summary = result.to_dict()
    summary["files"] = sorted(str(p.name) for p in written) + ["summary.json"]
    text("summary.json", dump_json(summary))
    return written

