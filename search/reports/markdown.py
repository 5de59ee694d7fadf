"""A search's report.md: what was asked, how each backend was planned, what the closed loop
measured, what was chosen and how sure the choice is. Text only; ``outputs.py`` writes it."""
from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import pandas as pd

from tp_search.pruning.runtime.registry import spec
from tp_search.search.reports.tables import (
    PRUNING_NOTE,
    alternatives,
    lever_points,
    loop_table,
    machines_table,
)
from tp_search.search.scoring.proxy import describe_numerics
from tp_search.search.space.candidates import keep_key, schedule_key

if TYPE_CHECKING:  # pragma: no cover
    from tp_search.search.result import MachineChoice, SearchResult


def fmt(v: Any, spec_: str = ".3f", none: str = "n/a") -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return none
    return format(v, spec_)


def md_table(df: pd.DataFrame) -> str:
    if df.empty:
        return "(none)\n"
    head = "| " + " | ".join(map(str, df.columns)) + " |"
    sep = "|" + "|".join("---" for _ in df.columns) + "|"
    body = ["| " + " | ".join(fmt(v, ".4g") if isinstance(v, float) or v is None
                              else str(v) for v in row) + " |"
            for row in df.itertuples(index=False)]
    return "\n".join([head, sep, *body]) + "\n"


def render_markdown(result: "SearchResult") -> str:
    r, s = result, result.settings
    c = r.primary
    q = r.workload.percentile
    lines = [f"# tp-search: {r.task} on {c.machine_id}", ""]
    target = f"measured p{q:g} latency <= {r.target_ms:g} ms"
    if s.min_macs_reduction:
        target += f" and MACs reduction >= {s.min_macs_reduction:g}x (at the workload)"
    px = r.proxy
    lines += [
        f"- **Target**: {target}",
        f"- **Machine**: {c.machine_id} (latency tables under {r.results_dir}); "
        + ("planning for another machine" if c.machine_id != r.here_id else "this machine"),
        f"- **Workload**: {r.workload_text()}",
        f"- **Dev expectation**: mean over {r.n_eval} dev inputs' real lengths (mean "
        f"{r.mean_length:.1f} tokens, truncated to {r.seq_len}), each input unpadded",
        f"- **Model**: {r.model} (proxy metric from {r.proxy_model}); task {r.task}",
        f"- **Proxy**: {r.metric_name} of static top-k ({PRUNING_NOTE}) on "
        f"{px.get('search_examples', r.n_eval)} {px.get('slice', 'examples')}; contenders "
        f"re-scored on all {px.get('pool_examples', '?')} of them",
        f"- **Seeds**: search seed {s.seed} (sampler seeds used: "
        f"{', '.join(map(str, r.sampler_seeds)) or 'n/a'})",
        f"- **Search space**: {r.space.describe()}"]
    if r.study_name:
        lines.append(f"- **Study**: {r.study_name} in {r.storage}")
    lines += ["", "## Plan", "", f"What a prediction may be for the measured p{q:g} to meet "
              f"{r.target_ms:g} ms on each backend (planning.py):", ""]
    lines += [f"- {b}: {p['limit_ms']:.2f} ms (p{q:g} tail {p['tail']:.3f}, validated "
              f"median error {p['error']:.1%}, margin {p['margin']:.0%})"
              for b, p in plan_of(c).items()]
    lines += ["", "## Dense model", "",
              f"- predicted latency at the workload on {c.backend}: {c.dense_ms:.3f} ms "
              f"(expected over dev lengths: {fmt(c.dense_expected_ms)} ms)"
              + (f"; PyTorch fp32: {c.reference_ms:.3f} ms" if c.reference_ms else ""),
              f"- proxy {r.metric_name}: {fmt(r.dense_metric, '.4f')}",
              f"- fastest candidate in the space: {c.fastest_ms:.3f} ms", ""]
    if r.references:
        lines += ["## Each lever alone", "",
                  "The dense model on every backend and at every truncation length "
                  "(no token pruning), on this machine's tables:", "",
                  md_table(lever_points(r.references, c.machine_id))]
    lines += loop_lines(r, c)
    lines += ["## Chosen configuration", ""]
    if r.status == "dense":
        lines += [f"The dense model already meets the target as planned (predicted "
                  f"{c.latency_ms:.3f} ms <= plan {fmt(c.limit_ms, '.2f')} ms): no search was "
                  "run.", ""]
    if r.status == "missed":
        lines += ["**No contender measured within the target after every refit: nothing is "
                  "deployable. best_config.json holds the most accurate contender, which "
                  "MISSES the target.**", ""]
    lines += choice_lines(r, c)
    if r.status != "dense":
        lines += ["## Nearest alternatives", "",
                  "Feasible configurations closest in predicted latency (Pareto-optimal first).",
                  "", md_table(alternatives(r.entries, c.machine_id, c.candidate.key))]
    if len(r.choices) > 1:
        lines += ["## Machines", "",
                  "One search, one choice per machine: every feasible trial was evaluated "
                  "once (the metric does not depend on the machine) and each machine takes "
                  "the most accurate trial within its own plan.", ""]
        mt = machines_table(r)[["machine", "dense_ms", "fastest_ms", "trial", "backend",
                                "max_len", "keep", "predicted_ms", "limit_ms", "metric",
                                "macs_reduction_workload", "measured_ms", "error_pct",
                                "measurement"]]
        lines += [md_table(mt)]
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


def plan_of(c: "MachineChoice") -> dict[str, dict[str, Any]]:
    """Each backend's plan as the last round refitted it, else the chosen backend's."""
    plans = {c.backend: c.plan} if c.plan else {}
    for rnd in c.rounds:
        plans.update(rnd.plans)
    return plans


def loop_lines(r: "SearchResult", c: "MachineChoice") -> list[str]:
    if not c.rounds:
        return []
    q = r.workload.percentile
    out = ["## Measured before choosing", "",
           f"The contenders (within the proxy's noise of the best, re-scored on the whole "
           f"held-out slice) timed on their own backends, interleaved with each other and "
           f"with the dense model of each backend, on the workload; judged at p{q:g}. "
           "vs teacher: the proxy difference to the fp32 teacher on the same held-out "
           "examples, with its paired bootstrap 95% interval (points).", ""]
    for rnd in c.rounds:
        spread = ", ".join(f"{b.backend} dense p{q:g}/median {b.tail:.3f} (median "
                           f"{b.dense_median_ms:.2f} ms, measured/predicted "
                           f"{b.correction:.3f})" for b in rnd.backends)
        verdict = (f"chosen: {next(m.label for m in rnd.candidates if m.key == rnd.chosen)}"
                   if rnd.chosen else "none met the target: predictions refitted"
                   + (" and searched again" if rnd is not c.rounds[-1] else ""))
        out += [f"Round {rnd.number} ({rnd.seconds:.0f} s window; the machine's spread in it: "
                f"{spread}): {verdict}.", ""]
    t = loop_table(r)
    t = t[t.machine == c.machine_id].drop(columns=["machine"])
    return out + [md_table(t)]


def choice_lines(r: "SearchResult", c: "MachineChoice") -> list[str]:
    cfg = c.config
    layers = [l for l in range(cfg.shape.num_layers) if cfg.prunes_at(l)]
    n = r.workload.length(c.max_len)
    if cfg.policy == "threshold":
        what = [f"- thresholds (LTP, input-adaptive): {schedule_key(cfg)[2:]}",
                "- tokens kept: as many as each input's attention warrants; latency predicted "
                "request by request from the counts kept on the workload's inputs"]
    else:
        what = [f"- keep fractions: {keep_key(cfg.keep) if cfg.keep else 'dense (all 1)'}"
                + (f" (pruning at layer{'s' if len(layers) > 1 else ''} "
                   f"{', '.join(map(str, layers))})" if layers else ""),
                f"- tokens kept at the workload's p{r.workload.percentile:g} request ({n} real "
                f"tokens): {cfg.kept_counts(n)}"]
    out = [f"- backend: **{c.backend}** ({spec(c.backend).precision}); input "
           + (f"truncated to **{c.max_len}** tokens" if c.max_len else "not truncated"),
           *what,
           f"- predicted latency: {c.latency_ms:.3f} ms at the workload, plan "
           f"{fmt(c.limit_ms, '.2f')} ms (dense {c.dense_ms:.3f} ms: predicted speedup "
           f"{c.dense_ms / c.latency_ms:.2f}x)",
           f"- expected latency over dev lengths: {fmt(c.expected_ms)} ms "
           f"(dense {fmt(c.dense_expected_ms)} ms)",
           f"- MACs reduction: {fmt(c.macs.get('workload'), '.2f')}x at the workload; on the "
           f"dev subset {fmt(c.macs.get('real'), '.2f')}x vs the dense model on real lengths, "
           f"{fmt(c.macs.get('padded'), '.2f')}x vs the dense model padded to {r.seq_len}",
           f"- proxy {r.metric_name}: {fmt(c.metric, '.4f')} on the search slice (dense "
           f"{fmt(r.dense_metric, '.4f')})"]
    if c.rescored:
        d = c.rescored["vs_dense"]
        out.append(f"- re-scored on {c.rescored['examples']} held-out examples: "
                   f"{c.rescored['metric']:.4f}; vs the fp32 teacher "
                   f"{100 * d['diff']:+.2f} points (95% CI {100 * d['low']:+.2f} to "
                   f"{100 * d['high']:+.2f})")
    if c.trial is not None:
        out.append(f"- trial {c.trial}")
    m = c.measurement
    if m is not None:
        out.append(f"- measured on {c.backend} ({m.repeats} interleaved rounds, "
                   f"{r.settings.threads} thread(s)): median {m.chosen.median_ms:.3f} ms, "
                   f"p{m.percentile:g} {m.chosen_ms:.3f} ms; dense on {c.backend} "
                   f"{m.dense.median_ms:.3f} ms ({m.speedup:.2f}x); the machine's spread "
                   f"(dense p{m.percentile:g}/median) {fmt(m.spread, '.3f')}; prediction "
                   f"error {m.error_pct:+.1f}% (vs the "
                   f"{'median' if m.workload == 'max' else 'percentile'})")
        out.append(f"- {'meets' if m.meets_target else '**MISSES**'} the target when "
                   f"measured (p{m.percentile:g} {m.chosen_ms:.3f} ms vs {r.target_ms:g} ms)")
    else:
        out.append(f"- not measured: {c.measure_note}")
    return out + [""]
