"""The main job's summary: one dataclass, rendered to summary.json and report.md.

Built once by the final stage and completed by the pipeline (plan, search, stages); never a
dict mutated along the way. Every accuracy carries the paired bootstrap 95% interval of its
difference to the fp32 teacher on the same dev examples, and a "within X points" verdict
that holds only when the interval excludes a larger loss.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from tp_search.pruning.measure.accuracy import EvalResult
from tp_search.pruning.measure.bootstrap import PairedDifference
from tp_search.pruning.measure.requests import percentile_of


@dataclass
class Accuracy:
    metric: str
    deployed: float  # with the deployed backend's numerics and truncation
    reference: float  # PyTorch fp32 of the same model and truncation
    teacher: float  # the fp32 teacher at full length
    examples: int
    max_loss: float  # points: the verdict's X
    vs_teacher: PairedDifference
    reference_vs_teacher: PairedDifference
    reference_result: EvalResult | None = field(default=None, repr=False)

    def to_dict(self) -> dict[str, Any]:
        return {"metric": self.metric, "deployed": self.deployed, "reference": self.reference,
                "teacher": self.teacher, "examples": self.examples,
                "vs_teacher": self.vs_teacher.to_dict()
                | {"verdict": self.vs_teacher.verdict(self.max_loss),
                   "within": self.vs_teacher.within(self.max_loss)},
                "reference_vs_teacher": self.reference_vs_teacher.to_dict()
                | {"verdict": self.reference_vs_teacher.verdict(self.max_loss)},
                "max_loss_points": self.max_loss}


@dataclass
class FinalSummary:
    target_ms: float
    task: str
    machine: str
    model_dir: str
    backend: str
    max_len: int
    workload: dict[str, Any]
    config: dict[str, Any]
    accuracy: Accuracy
    predicted_ms: float
    predicted_dense_ms: float
    macs_reduction: dict[str, float]
    measured: dict[str, dict[str, Any]]  # by workload kind
    workload_kind: str
    fallback: str | None = None
    method: str = ""
    plan: dict[str, Any] = field(default_factory=dict)  # the chosen backend's (planning.py)
    search: dict[str, Any] = field(default_factory=dict)
    closed_loop: list[dict[str, Any]] = field(default_factory=list)
    stages: list[dict[str, Any]] = field(default_factory=list)
    train_precision: str | None = None

    @property
    def main_measurement(self) -> dict[str, Any] | None:
        return self.measured.get(self.workload_kind)

    @property
    def meets_target(self) -> bool | None:
        m = self.main_measurement
        return None if m is None else bool(m["meets_target"])

    def to_dict(self) -> dict[str, Any]:
        a = self.accuracy
        return {
            "target_ms": self.target_ms, "task": self.task, "machine": self.machine,
            "model_dir": self.model_dir, "backend": self.backend, "max_len": self.max_len,
            "workload": self.workload, "config": self.config, "metric": a.metric,
            "dev_metric": a.deployed, "dev_metric_torch_fp32": a.reference,
            "teacher_dev_metric": a.teacher, "dev_examples": a.examples,
            "accuracy": a.to_dict(), "predicted_ms": self.predicted_ms,
            "predicted_dense_ms": self.predicted_dense_ms,
            "macs_reduction": self.macs_reduction, "measured": self.main_measurement,
            "measured_other_workload": {k: v for k, v in self.measured.items()
                                        if k != self.workload_kind},
            "meets_target": self.meets_target, "fallback": self.fallback,
            "method": self.method, "plan": self.plan, "search": self.search,
            "closed_loop": self.closed_loop, "stages": self.stages,
            "train_precision": self.train_precision}

    def render_markdown(self) -> str:
        w, m, a = self.workload, self.main_measurement, self.accuracy
        trunc = f"truncated to {self.max_len} tokens" if self.max_len else "not truncated"
        p = self.plan
        plan = (f"; search and training planned the prediction under {p['limit_ms']:.2f} ms "
                f"(p{w['percentile']:g} tail {p['tail']:.3f}, validated error "
                f"{p['error']:.1%}, margin {p['margin']:.0%})" if p else "")
        lines = [f"# tp-search run: {self.target_ms:g} ms on {self.machine}", "",
                 f"- Task: {self.task}; method: {self.method}"
                 + (f"; training in {self.train_precision}" if self.train_precision else ""),
                 f"- Target: measured p{w['percentile']:g} latency <= {self.target_ms:g} ms"
                 + plan,
                 f"- Workload: {w['note']}; {w['threads']} thread(s), {w['device']}",
                 f"- Deployed: backend **{self.backend}**, input {trunc}: `{self.model_dir}` "
                 f"(load with `tp_search.load(path)`; `tp-bench --model {self.model_dir}` "
                 "benches it on its own task, length and backend)",
                 f"- Configuration: {self.config['policy']} "
                 f"{self.config.get('keep') or self.config.get('thresholds') or ''}",
                 f"- Dev {a.metric}: **{a.deployed:.4f}** on {self.backend} vs fp32 teacher "
                 f"at full length **{a.teacher:.4f}** ({a.examples} examples): "
                 f"{a.vs_teacher.verdict(a.max_loss)}",
                 f"- PyTorch fp32 of the same model: {a.reference:.4f} "
                 f"({a.reference_vs_teacher.verdict(a.max_loss)})",
                 f"- Predicted latency: {self.predicted_ms:.2f} ms (dense on {self.backend} "
                 f"{self.predicted_dense_ms:.2f} ms)"]
        if self.fallback:
            lines.append(f"- **Fallback**: {self.fallback}")
        if m:
            lines.append(latency_line("Measured latency", m, self.target_ms))
            for kind, other in self.measured.items():
                if kind != self.workload_kind:
                    lines.append(latency_line(f"Also measured on the {kind} workload "
                                              f"({other['workload_note']})", other,
                                              self.target_ms))
        else:
            lines.append("- Measured latency: not measured here (planned for another machine)")
        r = self.macs_reduction
        lines += [f"- MACs reduction on dev: {r['real_lengths']:.2f}x vs each example's real "
                  f"length, {r['padded_to_max_len']:.2f}x vs padding to {w['seq_len']}", ""]
        if m:
            lines += per_request_lines(m)
        lines += loop_lines(self.closed_loop, w["percentile"])
        lines += ["| stage | status | seconds |", "|---|---|---|"]
        lines += [f"| {st['name']} | {st['status']} | {st['seconds']:.1f} |"
                  for st in self.stages]
        total = sum(st["seconds"] for st in self.stages)
        lines += [f"| total | | {total:.1f} |", ""]
        return "\n".join(lines)


def latency_line(label: str, m: dict[str, Any], target: float) -> str:
    q = m["percentile"]
    at = m["at_percentile_ms"]
    verdict = "meets the target" if at["chosen"] <= target else "**MISSES the target**"
    ref = (f"; dense PyTorch fp32 {m['reference_ms']['median_ms']:.2f} ms "
           f"({m['speedup_vs_reference']:.2f}x)" if m.get("reference_ms") else "")
    return (f"- {label}: **p{q:g} {at['chosen']:.2f} ms**, median "
            f"{m['chosen_ms']['median_ms']:.2f} ms; dense on the same backend "
            f"{m['dense_ms']['median_ms']:.2f} ms ({m['speedup_vs_dense']:.2f}x){ref}; the "
            f"machine's spread in this window (dense p{q:g}/median) "
            f"{m.get('machine_spread', float('nan')):.3f}; prediction error "
            f"{m['error_pct']:+.1f}% ({'median' if m['workload'] == 'max' else f'p{q:g}'}); "
            f"{verdict}")


def per_request_lines(m: dict[str, Any], rows: int = 7) -> list[str]:
    """Predicted against measured request by request, at evenly spaced ranks of the
    prediction: for a threshold model each request's prediction comes from its own kept
    counts, so this is where the per-example plan is checked."""
    per = sorted(m.get("per_request") or [], key=lambda r: r["predicted_ms"])
    if len(per) < 2:
        return []
    err = m.get("per_request_median_abs_error_pct")
    q = m["percentile"]
    pred = percentile_of([r["predicted_ms"] for r in per], q)  # as the target is judged
    meas = percentile_of([r["measured_ms"] for r in per], q)
    picks = sorted({round(i * (len(per) - 1) / (rows - 1)) for i in range(rows)})
    out = [f"## Per request: predicted against measured ({m['workload']} workload)", "",
           f"{len(per)} requests; median |predicted / measured - 1| "
           f"{'n/a' if err is None else f'{err:.1f}%'}; p{q:g} of the per-request predictions "
           f"{pred:.2f} ms, of the per-request measured medians {meas:.2f} ms (every request "
           "in summary.json, `measured.per_request`).", "",
           "| rank by prediction | real tokens | predicted ms | measured ms (median) |",
           "|---|---|---|---|"]
    out += [f"| {i + 1} of {len(per)} | {per[i]['tokens']} | {per[i]['predicted_ms']:.2f} | "
            f"{per[i]['measured_ms']:.2f} |" for i in picks]
    return out + [""]


def loop_lines(rounds: list[dict[str, Any]], q: float) -> list[str]:
    """The search's closed loop, as the final report states it."""
    if not rounds:
        return []
    out = ["## Measured before training and deploying", "",
           f"Each round timed the contenders on their own backends, interleaved with the dense "
           f"model of each backend, on the workload (p{q:g} judged):", "",
           "| round | candidate | proxy | vs teacher (pts, 95% CI) | predicted ms | plan ms | "
           f"median ms | p{q:g} ms | meets |", "|---|---|---|---|---|---|---|---|---|"]
    for r in rounds:
        for c in r["candidates"]:
            d, lo, hi = c["vs_dense_points"]
            mark = " (chosen)" if c["key"] == r["chosen"] else ""
            out.append(f"| {r['number']} | {c['label']}{mark} | {c['metric']:.4f} | "
                       f"{d:+.2f} ({lo:+.2f}, {hi:+.2f}) | {c['predicted_ms']:.2f} | "
                       f"{c['limit_ms']:.2f} | {c['median_ms']:.2f} | "
                       f"{c['at_percentile_ms']:.2f} | {'yes' if c['meets'] else 'no'} |")
    out.append("")
    for r in rounds:
        spread = ", ".join(f"{b['backend']} {b['tail']:.3f} (dense median "
                           f"{b['dense_median_ms']:.2f} ms, measured/predicted "
                           f"{b['correction']:.3f})" for b in r["backends"])
        out.append(f"- round {r['number']}: {r['seconds']:.0f} s window; the machine's spread "
                   f"(dense p{q:g}/median): {spread}")
    return out + [""]
