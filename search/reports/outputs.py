"""Search outputs written: CSV tables, the Pareto plot, report.md and summary.json.

``write_outputs`` is the one function that writes a search's files; what they hold is
computed in ``tables.py`` and phrased in ``markdown.py``.
"""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Sequence

import pandas as pd

from tp_search.pruning.core.atomic import atomic_save_figure, atomic_write_text
from tp_search.pruning.core.cli_common import dump_json
from tp_search.pruning.runtime.registry import spec
from tp_search.search.reports.markdown import render_markdown
from tp_search.search.reports.tables import (
    ParetoPlot,
    lever_points,
    loop_table,
    machines_table,
    pareto_plots,
    pareto_table,
    trials_table,
)

if TYPE_CHECKING:  # pragma: no cover
    from tp_search.search.result import SearchResult


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
        if p.limit_ms is not None and p.limit_ms < p.target_ms:
            ax.axvline(p.limit_ms, color="tab:red", ls=":",
                       label=f"plan {p.limit_ms:.1f} ms (tail, validated error)")
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
        ax.set_ylabel(f"{p.metric_name} on held-out train (proxy: static top-k, no "
                      "retraining)", fontsize=8)
        ax.set_title(f"{p.machine}\n{p.workload}", fontsize=8)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=6, loc="lower right")
    fig.tight_layout()
    try:  # two workers may write the same report at once
        atomic_save_figure(fig, path, dpi=110)
    finally:
        plt.close(fig)


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

    machines = result.machine_ids
    if result.status != "dense":
        csv("trials.csv", trials_table(result.entries, result.space, machines,
                                       result.lengths, result.seq_len))
        csv("pareto.csv", pareto_table(result.entries, machines, result.expected))
        render_png(pareto_plots(result), out / "pareto.png")
        written.append(out / "pareto.png")
    if result.references:
        csv("levers.csv", pd.concat([lever_points(result.references, c.machine_id)
                                     .assign(machine=c.machine_id) for c in result.choices]))
    loop = loop_table(result)
    if not loop.empty:
        csv("measured.csv", loop)
    csv("machines.csv", machines_table(result))
    text("report.md", render_markdown(result))
    summary = result.to_dict()
    summary["files"] = sorted(str(p.name) for p in written) + ["summary.json"]
    text("summary.json", dump_json(summary))
    return written
