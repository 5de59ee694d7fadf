"""Search outputs rendered: CSV, Markdown and PNG from the tables of ``tables.py``.

Nothing here searches or measures; ``write_outputs`` is the one function that writes files.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

import pandas as pd

from tp_search.pruning.core.cli_common import dump_json
from tp_search.pruning.core.atomic import atomic_save_figure, atomic_write_text

from tp_search.pruning.runtime.registry import spec
from tp_search.search.scoring.proxy import describe_numerics
from tp_search.search.space.candidates import keep_key
from tp_search.search.reports.tables import (
    PRUNING_NOTE,
    ParetoPlot,
    alternatives,
    lat_col,
    lever_points,
    machines_table,
    pareto_plots,
)

if TYPE_CHECKING:  # pragma: no cover
    from tp_search.search.search_settings import SearchResult


# ---------------------------------------------------------------------------- plot

def render_png(plots: Sequence[ParetoPlot], path: Path) -> None:
    import matplotlib  # imported here: pyplot needs the Agg backend chosen first
    import matplotlib.ticker
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(plots), figsize=(6.8 * len(plots), 4.8), squeeze=False)
    for ax, p in zip(axes[0], plots):
        for b, pts in p.points.items():
            ax.scatter(*zip(*pts), s=10, color=spec(b).color, alpha=0.45,
                       label=f"feasible trials, {b}")
        for b, pts in p.levers.items():
            dense = [(ms, m) for n, ms, m in pts if not n]
            trunc = sorted((ms, m) for n, ms, m in pts if n)
            if dense:
                ax.scatter(*zip(*dense), marker="s", s=55, color=spec(b).color,
                           edgecolor="black", zorder=3, label=f"dense, {b}")
            if trunc:
                ax.plot(*zip(*trunc), marker="v", ms=6, ls=":", color=spec(b).color,
                        label=f"truncation only, {b}")
        if p.front:
            ax.step(*zip(*p.front), where="post", color="tab:purple", marker="o", ms=4,
                    label="Pareto front (all levers)")
        ax.axvline(p.target_ms, color="tab:red", ls="--", label=f"target {p.target_ms:g} ms")
        if not p.levers:
            ax.scatter([p.dense[0]], [p.dense[1]], marker="s", s=50, color="black",
                       label="dense model", zorder=3)
        if p.chosen:
            ax.scatter([p.chosen[0]], [p.chosen[1]], marker="*", s=160, color="tab:orange",
                       label="chosen", zorder=4)
        ax.set_xscale("log")
        ax.xaxis.set_major_formatter(matplotlib.ticker.ScalarFormatter())
        ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        ax.set_xlabel("predicted latency (ms, log scale)")
        ax.set_ylabel(f"dev {p.metric_name} (proxy: static top-k, no retraining)", fontsize=9)
        ax.set_title(f"{p.machine}\n{p.workload}", fontsize=8)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=6, loc="lower right")
    fig.tight_layout()
    try:  # two workers may write the same report at once
        atomic_save_figure(fig, path, dpi=110)
    finally:
        plt.close(fig)


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
    target = f"predicted p{r.workload.percentile:g} latency <= {r.target_ms:g} ms"
    if s.min_macs_reduction:
        target += f" and MACs reduction >= {s.min_macs_reduction:g}x (at the workload)"
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
              f"- predicted latency at the workload on {c.backend}: {c.dense_ms:.3f} ms "
              f"(expected over dev lengths: {_fmt(c.dense_expected_ms)} ms)"
              + (f"; PyTorch fp32: {c.reference_ms:.3f} ms" if c.reference_ms else ""),
              f"- proxy {r.metric_name}: {r.dense_metric:.4f}",
              f"- fastest candidate in the space: {c.fastest_ms:.3f} ms", ""]
    if r.references:
        lines += ["## Each lever alone", "",
                  "The dense model on every backend and at every truncation length "
                  "(no token pruning), on this machine's tables:", "",
                  _md_table(lever_points(r.references, c.machine_id))]
    lines += ["## Chosen configuration", ""]
    if r.status == "dense":
        lines += [f"The dense model already meets the target ({c.dense_ms:.3f} ms <= "
                  f"{r.target_ms:g} ms): no search was run and best_config.json holds the "
                  "dense configuration.", ""]
    lines += _choice_lines(r, c)
    if r.status == "searched" and r.trials is not None:
        alt = alternatives(r.trials, c.machine_id, r.machine_ids, c.candidate.key)
        lat = lat_col(c.machine_id, r.machine_ids)
        lines += ["## Nearest alternatives", "",
                  "Feasible configurations closest in predicted latency (Pareto-optimal first).",
                  ""]
        show = pd.DataFrame({
            "trial": alt["number"].astype(int) if not alt.empty else [],
            "backend": alt["backend"] if not alt.empty else [],
            "max_len": alt["max_len"] if not alt.empty else [],
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
        mt = machines_table(r)[["machine", "dense_ms", "fastest_ms", "trial", "backend",
                                "max_len", "keep",
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
                  f"{r.metric_name}, minimise predicted latency on {r.machine_ids[0]}; "
                  f"proxy numerics per backend: {describe_numerics(r.space.backends)}", ""]
    return "\n".join(lines) + "\n"


def _choice_lines(r: "SearchResult", c: Any) -> list[str]:
    cfg = c.config
    layers = [l for l in range(cfg.shape.num_layers) if cfg.prunes_at(l)]
    n = r.workload.length(c.max_len)
    out = [f"- backend: **{c.backend}** ({spec(c.backend).precision}); input "
           + (f"truncated to **{c.max_len}** tokens" if c.max_len else "not truncated"),
           f"- keep fractions: {keep_key(cfg.keep) if cfg.keep else 'dense (all 1)'}"
           + (f" (pruning at layer{'s' if len(layers) > 1 else ''} "
              f"{', '.join(map(str, layers))})" if layers else ""),
           f"- tokens kept at the workload's p{r.workload.percentile:g} request ({n} real "
           f"tokens): {cfg.kept_counts(n)}",
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
        ref = (f"; dense PyTorch fp32 {m.timings['reference'].median_ms:.3f} ms "
               f"({m.speedup_vs_reference:.2f}x)" if "reference" in m.timings else "")
        out.append(f"- measured on {c.backend} ({m.repeats} interleaved runs, "
                   f"{r.settings.threads} thread(s)): median {m.chosen.median_ms:.3f} ms, "
                   f"p{m.percentile:g} {m.chosen_ms:.3f} ms; dense on {c.backend} "
                   f"{m.dense.median_ms:.3f} ms ({m.speedup:.2f}x){ref}; prediction error "
                   f"{m.error_pct:+.1f}% (vs the "
                   f"{'median' if m.workload == 'max' else 'percentile'})")
        if not m.meets_target:
            out.append(f"- **MISSES THE TARGET WHEN MEASURED**: p{m.percentile:g} "
                       f"{m.chosen_ms:.3f} ms > {r.target_ms:g} ms. The latency table may be "
                       "stale or the machine busy: re-profile (tp-profile --force) or lower "
                       "the target.")
        else:
            out.append(f"- meets the target when measured (p{m.percentile:g} "
                       f"{m.chosen_ms:.3f} ms <= {r.target_ms:g} ms)")
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
    if result.references:
        csv("levers.csv", pd.concat([lever_points(result.references, c.machine_id)
                                     .assign(machine=c.machine_id) for c in result.choices]))
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

