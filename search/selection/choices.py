"""From finished trials to one chosen candidate per deployment machine, measured where
possible.
"""
from __future__ import annotations

import logging
from collections import Counter
from typing import Any

import pandas as pd

from tp_search.pruning.config import PruningConfig
from tp_search.pruning.core.errors import InfeasibleError
from tp_search.pruning.model.checkpoint import from_pretrained

from tp_search.search.context import Context, model_label
from tp_search.search.selection.verify import measure
from tp_search.pruning.runtime import REFERENCE, get_backend, spec
from tp_search.search.scoring.objective import Checker, expected_latency
from tp_search.search.search_settings import MachineChoice, SearchSettings
from tp_search.search.space.candidates import Candidate
from tp_search.pruning.macs import reductions
from tp_search.search.reports.tables import choose, lat_col

log = logging.getLogger("tp.search")


def _macs(c: Candidate, ctx: Context, checker: Checker) -> dict[str, float]:
    padded, real = reductions(c.config, Counter(ctx.lengths), ctx.seq_len, c.max_len)
    return {"workload": checker.macs_reduction(c), "padded": padded, "real": real}


def _meta(s: SearchSettings, ctx: Context, machine: str, c: Candidate, latency: float,
          expected: float | None, dense_ms: float, metric: float | None, dense_metric: float,
          macs: dict[str, float], **extra: Any) -> dict[str, Any]:
    return {"machine_id": machine, "target_ms": s.latency_ms,
            "min_macs_reduction": s.min_macs_reduction,
            "deployment": {"backend": c.backend, "max_len": c.max_len,
                           "precision": spec(c.backend).precision,
                           "threads": s.threads},
            "workload": {**ctx.workload.to_dict(), "threads": s.threads, "device": s.device},
            "predicted_latency_ms": latency, "expected_latency_ms_dev": expected,
            "dense_latency_ms": dense_ms,
            "proxy_metric": {"name": ctx.evaluator.metric, "value": metric,
                             "dense": dense_metric, "eval_samples": len(ctx.split),
                             "note": "static top-k, no retraining, with the backend's "
                                     "numerics and truncation"},
            "macs_reduction": macs, "seed": s.seed, "task": ctx.task_name,
            "model": model_label(ctx.model_dir), **extra}


def dense_latency(ctx: Context, checker: Checker, machine: str, backend: str) -> float:
    return checker.latency(machine, Candidate(backend, 0, PruningConfig.dense(ctx.shape)))


def reference_latency(ctx: Context, checker: Checker, machine: str) -> float | None:
    """Dense PyTorch fp32 at full length: what speedups were stated against before."""
    ms = dense_latency(ctx, checker, machine, REFERENCE)
    return None if ms == float("inf") else ms


def dense_choices(s: SearchSettings, ctx: Context, checker: Checker,
                  fast: dict[str, tuple[Candidate, float]], dense_metric: float
                  ) -> list[MachineChoice]:
    """Each machine's fastest fp32 backend whose dense full-length model meets the target:
    nothing is more accurate than the dense fp32 model."""
    out = []
    for m, preds in ctx.predictors.items():
        ok = sorted((dense_latency(ctx, checker, m, b), b) for b in preds
                    if spec(b).precision == "fp32" and b in ctx.space.backends)
        ms, backend = next(((t, b) for t, b in ok if t <= s.latency_ms), ok[0])
        c = Candidate(backend, 0, PruningConfig.dense(ctx.shape))
        macs = _macs(c, ctx, checker)
        exp = expected_latency(preds[backend], c.config, ctx.lengths)
        cfg = PruningConfig.dense(ctx.shape, **_meta(
            s, ctx, m, c, ms, exp, ms, dense_metric, dense_metric, macs,
            note="the dense model meets the target"))
        out.append(MachineChoice(m, ms, fast[m][1], cfg, ms, dense_metric, macs, None, exp,
                                 exp, backend=backend, max_len=0,
                                 reference_ms=reference_latency(ctx, checker, m)))
    return out


def searched_choices(s: SearchSettings, ctx: Context, checker: Checker, df: pd.DataFrame,
                     fast: dict[str, tuple[Candidate, float]], dense_metric: float,
                     study_name: str) -> list[MachineChoice]:
    ids = list(ctx.predictors)
    out = []
    for m, preds in ctx.predictors.items():
        row = choose(df, m, ids)
        if row is None:
            raise InfeasibleError(
                f"no trial met the constraints on {m} (fastest {fast[m][1]:.3f} ms, target "
                f"{s.latency_ms:g} ms{_macs_text(s)}): run more --trials or relax the target")
        keep = [float(row[f"keep_{l}"]) for l in range(ctx.shape.num_layers)]
        c = Candidate(str(row["backend"]), int(row["max_len"]),
                      PruningConfig.topk(ctx.shape, keep))
        lat = float(row[lat_col(m, ids)])
        p = preds[c.backend]
        exp = expected_latency(p, c.config, ctx.lengths, c.max_len)
        dense_exp = expected_latency(p, PruningConfig.dense(ctx.shape), ctx.lengths)
        dense_ms = dense_latency(ctx, checker, m, c.backend)
        macs = {"workload": float(row["macs_reduction_workload"]),
                "padded": float(row["macs_reduction_padded"]),
                "real": float(row["macs_reduction_real"])}
        metric = float(row["metric"])
        cfg = PruningConfig.topk(ctx.shape, keep, method="search", **_meta(
            s, ctx, m, c, lat, exp, dense_ms, metric, dense_metric, macs,
            trial=int(row["number"]), record_trial=_int_or_none(row["record"]),
            run=row["run"], study=study_name))
        out.append(MachineChoice(m, dense_ms, fast[m][1], cfg, lat, metric, macs,
                                 int(row["number"]), exp, dense_exp, backend=c.backend,
                                 max_len=c.max_len,
                                 reference_ms=reference_latency(ctx, checker, m)))
    return out


def _int_or_none(v: Any) -> int | None:
    return None if v is None or pd.isna(v) else int(v)


def _macs_text(s: SearchSettings) -> str:
    return f", MACs reduction >= {s.min_macs_reduction:g}x" if s.min_macs_reduction else ""


def check_feasible(s: SearchSettings, ctx: Context, checker: Checker,
                   fast: dict[str, tuple[Candidate, float]]) -> None:
    slow = {m: f for m, f in fast.items() if f[1] > s.latency_ms}
    if slow:
        parts = [f"{f[1]:.3f} ms on {m} ({f[0].describe()})" for m, f in slow.items()]
        raise InfeasibleError(
            f"--latency-ms {s.latency_ms:g} is below the fastest achievable latency: "
            f"{'; '.join(parts)}, for {ctx.workload.describe(short=True)}, {s.threads} "
            "thread(s); raise the target or lower --seq-len")
    if s.min_macs_reduction:
        most = Candidate(ctx.space.backends[0], min(ctx.space.lengths, key=lambda n: n or 1e9),
                         ctx.space.chain())
        best = checker.macs_reduction(most)
        if best < s.min_macs_reduction:
            raise InfeasibleError(
                f"--macs-reduction {s.min_macs_reduction:g} is above the largest MACs reduction "
                f"of the search space at the workload: {best:.2f}x ({most.describe()})")


def measure_choices(s: SearchSettings, ctx: Context, choices: list[MachineChoice]) -> None:
    model = None
    for c in choices:
        if not s.measure:
            c.measure_note = "measurement skipped (--no-measure)"
        elif ctx.here_id is None or c.machine_id != ctx.here_id:
            c.measure_note = (f"{c.machine_id} is another machine (this one is "
                              f"{ctx.here_id}); measure there with tp-bench --config")
        else:
            if model is None:
                model = ctx.model if ctx.model_dir == ctx.proxy_dir else from_pretrained(
                    ctx.model_dir, num_labels=ctx.model.config.num_labels)
            log.info("measuring the chosen configuration on this machine (%s)",
                     c.candidate.describe())
            dense = PruningConfig.dense(ctx.shape)
            b = get_backend(c.backend)
            runners = {"chosen": (b.build(model, c.config, threads=s.threads), c.max_len),
                       "dense": (b.build(model, dense, threads=s.threads), 0)}
            if c.backend != REFERENCE:
                runners["reference"] = (get_backend(REFERENCE).build(
                    model, dense, threads=s.threads), 0)
            m = measure(runners, model, ctx.split, ctx.workload, c.latency_ms, c.dense_ms,
                        s.latency_ms, s.threads, repeats=s.repeats, device=s.device,
                        seed=s.seed)
            c.measurement = m
            c.measure_note = "measured on this machine"
            c.config.meta["measured"] = m.to_dict()
            if not m.meets_target:
                log.warning("the chosen configuration MISSES the target when measured: "
                            "p%g %.3f ms > %g ms (predicted %.3f ms)", m.percentile,
                            m.chosen_ms, s.latency_ms, m.predicted_ms)
