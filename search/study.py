"""Settings, the study (create or resume), the trial loop, and ``run_search``.

``run_search(settings)`` is the whole command without its CLI: it loads the task, the proxy
model and each machine's latency predictor, refuses impossible targets, returns the dense
model when it already meets the target, otherwise runs (or resumes) the NSGA-II search
until ``settings.trials`` trials are finished in the study's record (all runs and workers
together; see record.py and work.py), chooses one configuration per machine, measures it
where it can, and writes the outputs.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import socket
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Sequence

import pandas as pd

from pruning.config import ModelShape, PruningConfig
from pruning.errors import InfeasibleError, TpError
from pruning.macs import macs_report

from .measure import Measurement, measure
from .objective import Checker, Objective, ProxyEvaluator, expected_latency, fastest
from .record import Record
from .space import SearchSpace, keep_key
from .work import DIRECTIONS, WorkStudy

log = logging.getLogger("tp.search")

WORKLOAD_KIND = "one input of seq_len real tokens (the worst case at max length seq_len)"


@dataclass
class SearchSettings:
    latency_ms: float
    task: str = "rotten_tomatoes"
    model: str | None = None  # None: the bundled all-MiniLM-L6-v2
    proxy_model: str | None = None  # None: same as model
    machines: tuple[str, ...] = ()  # () = this machine
    results: str | None = None  # latency tables root (default: results/)
    seq_len: int | None = None  # None: the task's max length (capped by the model)
    batch: int = 1
    threads: int = 1
    device: str = "cpu"
    flops_reduction: float | None = None
    trials: int = 100
    population: int = 20
    eval_samples: int = 300
    eval_batch: int = 32
    eval_threads: int | None = None  # torch threads for the proxy evaluation; None: threads
    seed: int = 0
    out: str | None = None
    storage: str | None = None  # None: sqlite:///<out>/study.db
    study_name: str | None = None  # None: derived from the settings
    measure: bool = True
    repeats: int = 30
    layers: tuple[int, ...] = ()  # candidate pruning layers; () = all but the first
    min_ratio: float = 0.2
    max_ratio: float = 0.95
    floor: float = 0.02
    progress: bool = True

    def to_dict(self) -> dict[str, Any]:
        from .storage import redact
        d = asdict(self)
        d["machines"], d["layers"] = list(self.machines), list(self.layers)
        if self.storage:
            d["storage"] = redact(self.storage)
        return d


@dataclass
class MachineChoice:
    """The configuration chosen for one deployment machine."""

    machine_id: str
    dense_ms: float  # predicted, one input of seq_len real tokens
    fastest_ms: float  # fastest configuration of the space, predicted
    config: PruningConfig
    latency_ms: float  # predicted at the workload
    metric: float | None
    macs: dict[str, float]  # workload / padded / real reductions
    trial: int | None = None
    expected_ms: float | None = None  # mean predicted latency over dev real lengths
    dense_expected_ms: float | None = None
    measurement: Measurement | None = None
    measure_note: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {"machine_id": self.machine_id, "config": self.config.to_dict(),
                "trial": self.trial, "predicted_ms": self.latency_ms,
                "expected_ms_dev": self.expected_ms, "dense_ms": self.dense_ms,
                "dense_expected_ms_dev": self.dense_expected_ms,
                "fastest_ms": self.fastest_ms, "metric": self.metric,
                "macs_reduction": self.macs,
                "measured": None if self.measurement is None else self.measurement.to_dict(),
                "measurement_note": self.measure_note}


@dataclass
class SearchResult:
    status: str  # "searched" or "dense" (the dense model met the target; no search)
    settings: SearchSettings
    out_dir: Path
    task: str
    model: str
    proxy_model: str
    metric_name: str
    dense_metric: float
    seq_len: int
    n_eval: int
    mean_length: float
    space: SearchSpace
    choices: list[MachineChoice]
    here_id: str | None
    results_dir: str
    study_name: str | None = None
    storage: str | None = None
    trials: pd.DataFrame | None = None
    pareto: pd.DataFrame | None = None
    stats: dict[str, int] = field(default_factory=dict)
    sampler_seeds: list[int] = field(default_factory=list)
    files: list[Path] = field(default_factory=list)

    @property
    def target_ms(self) -> float:
        return self.settings.latency_ms

    @property
    def machine_ids(self) -> list[str]:
        return [c.machine_id for c in self.choices]

    @property
    def primary(self) -> MachineChoice:
        return self.choices[0]

    @property
    def workload(self) -> dict[str, Any]:
        s = self.settings
        return {"kind": WORKLOAD_KIND, "seq_len": self.seq_len, "batch": s.batch,
                "threads": s.threads, "device": s.device,
                "dev_mean_length": self.mean_length, "dev_examples": self.n_eval}

    def workload_text(self, short: bool = False) -> str:
        s = self.settings
        if short:
            return f"seq {self.seq_len} real tokens, batch {s.batch}, {s.threads} thread(s)"
        return (f"one input of {self.seq_len} real tokens (the worst case at max length "
                f"{self.seq_len}; the constraint holds for it), batch {s.batch}, "
                f"{s.threads} thread(s), {s.device}")

    def to_dict(self) -> dict[str, Any]:
        return {"status": self.status, "task": self.task, "model": self.model,
                "proxy_model": self.proxy_model, "metric": self.metric_name,
                "dense_metric": self.dense_metric, "target_ms": self.target_ms,
                "flops_reduction": self.settings.flops_reduction, "workload": self.workload,
                "machines": [c.to_dict() for c in self.choices],
                "this_machine": self.here_id, "study": self.study_name,
                "storage": self.storage, "stats": self.stats,
                "seeds": {"seed": self.settings.seed, "sampler_seeds": self.sampler_seeds},
                "space": self.space.to_dict(), "settings": self.settings.to_dict(),
                "out_dir": str(self.out_dir)}


# ---------------------------------------------------------------------------- context

@dataclass
class _Context:
    """Everything a search needs, loaded once."""

    task_name: str
    split: Any  # the fixed dev subset
    lengths: list[int]
    model: Any  # the proxy model
    model_dir: Path
    proxy_dir: Path
    shape: ModelShape
    seq_len: int
    predictors: dict[str, Any]
    space: SearchSpace
    evaluator: ProxyEvaluator
    here_id: str | None


def _model_shape(path: Path) -> tuple[ModelShape, int]:
    from pruning.checkpoint import encoder_config, read_hf_config
    c = encoder_config(read_hf_config(path), 2)
    return c.shape, c.max_position_embeddings


def _prepare(s: SearchSettings) -> _Context:
    from profiler import fingerprint, load_predictor
    from pruning.checkpoint import from_pretrained, read_hf_config, resolve_model_dir
    from pruning.data import load_task, real_lengths, task_spec

    if s.latency_ms <= 0:
        raise TpError(f"--latency-ms {s.latency_ms}: the target must be positive")
    if s.flops_reduction is not None and s.flops_reduction < 1:
        raise TpError(f"--flops-reduction {s.flops_reduction}: a reduction is a ratio >= 1")
    if s.device.startswith("cuda"):
        import torch
        if not torch.cuda.is_available():
            raise TpError("--device cuda: no CUDA device visible to torch; use --device cpu")
    spec = task_spec(s.task)
    model_dir = resolve_model_dir(s.model)
    proxy_dir = resolve_model_dir(s.proxy_model) if s.proxy_model else model_dir
    model = from_pretrained(proxy_dir, num_labels=spec.num_labels).to(s.device)
    archs = read_hf_config(proxy_dir).get("architectures") or []
    if not any("ForSequenceClassification" in a for a in archs):
        log.warning("%s has no classification head for %s: the proxy metric is that of a "
                    "freshly initialised head (chance level); fine-tune first (tp-train) "
                    "and pass the result as --model/--proxy-model", proxy_dir, spec.name)
    shape = model.shape
    if proxy_dir != model_dir:
        mshape, _ = _model_shape(model_dir)
        if mshape != shape:
            raise TpError(f"--proxy-model has {shape.describe()} but --model has "
                          f"{mshape.describe()}: the proxy must have the model's shape")
    positions = model.config.max_position_embeddings
    seq_len = s.seq_len or min(spec.max_len, positions)
    if seq_len > positions:
        raise TpError(f"--seq-len {seq_len} exceeds the model's {positions} positions")
    space = SearchSpace(shape, tuple(s.layers), s.min_ratio, s.max_ratio, s.floor)
    predictors: dict[str, Any] = {}
    for m in (s.machines or (None,)):
        p = load_predictor(shape, s.device, m, s.threads, s.batch, s.results)
        p.dense(seq_len)  # a TpError naming the table's range if seq_len is off it
        predictors.setdefault(p.machine_id, p)
    split = load_task(s.task, "dev").subset(s.eval_samples, s.seed)
    lengths = real_lengths(model.tokenizer, split, seq_len)
    try:
        here = fingerprint(s.device).machine_id
    except Exception:  # fingerprinting is informative only here
        here = None
    return _Context(spec.name, split, lengths, model, model_dir, proxy_dir, shape, seq_len,
                    predictors, space, ProxyEvaluator(model, split, seq_len, s.eval_batch,
                                                      s.device), here)


def _model_label(path: Path) -> str:
    from pruning.checkpoint import DEFAULT_MODEL, default_model_dir
    try:
        if path == default_model_dir():
            return DEFAULT_MODEL
    except TpError:
        pass
    return path.resolve().name


def _dir_digest(path: Path) -> str:
    """A cheap identity of a checkpoint: its config.json and its weight files' sizes."""
    h = hashlib.sha1()
    cfg = path / "config.json"
    h.update(cfg.read_bytes() if cfg.is_file() else b"")
    for f in sorted(path.iterdir()):
        if f.suffix in (".safetensors", ".bin"):
            h.update(f"{f.name}:{f.stat().st_size}".encode())
    return h.hexdigest()[:12]


def _split_digest(split: Any) -> str:
    h = hashlib.sha1()
    for t, p, y in zip(split.texts, split.pairs or [None] * len(split), split.labels):
        h.update(f"{t}\x00{p}\x00{y}\x01".encode())
    return h.hexdigest()[:12]


def _identity(s: SearchSettings, ctx: _Context) -> dict[str, Any]:
    """What makes two runs the same study (not the trial count: it may grow on resume)."""
    return {"task": ctx.task_name, "data": _split_digest(ctx.split),
            "model": _dir_digest(ctx.model_dir), "proxy_model": _dir_digest(ctx.proxy_dir),
            "seq_len": ctx.seq_len, "batch": s.batch, "threads": s.threads,
            "device": s.device, "machines": list(ctx.predictors), "latency_ms": s.latency_ms,
            "flops_reduction": s.flops_reduction, "eval_samples": s.eval_samples,
            "seed": s.seed, "population": s.population, "space": ctx.space.to_dict()}


def default_out_dir(task: str, model: str, machines: Sequence[str], latency_ms: float,
                    flops_reduction: float | None = None) -> Path:
    machine = machines[0] + (f"+{len(machines) - 1}" if len(machines) > 1 else "")
    name = f"{task}-{model}-{machine}-{latency_ms:g}ms"
    if flops_reduction:
        name += f"-macs{flops_reduction:g}x"
    return Path("runs") / re.sub(r"[^A-Za-z0-9._+-]", "_", name)


# ---------------------------------------------------------------------------- study

def open_study(url: str, name: str, identity: dict[str, Any]) -> tuple[Any, bool]:
    """The record study: created, or loaded when it exists (a resume, or another worker's).

    Returns (study, created). A study of that name made with other settings is refused.
    """
    import optuna

    from .storage import open_storage, redact
    if not log.isEnabledFor(logging.DEBUG):  # optuna logs every trial at INFO
        optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = open_storage(url)
    ident = json.dumps(identity, sort_keys=True)
    try:
        study = optuna.create_study(storage=storage, study_name=name,
                                    directions=list(DIRECTIONS),
                                    sampler=optuna.samplers.RandomSampler())
        study.set_user_attr("identity", ident)
        return study, True
    except optuna.exceptions.DuplicatedStudyError:
        pass
    study = optuna.load_study(study_name=name, storage=storage,
                              sampler=optuna.samplers.RandomSampler())
    stored = study.user_attrs.get("identity")
    if stored is not None and stored != ident:
        raise TpError(f"study {name!r} in {redact(url)} was made with other settings; use "
                      "another --study-name or --out, or the original settings")
    if [d.name.lower() for d in study.directions] != list(DIRECTIONS):
        raise TpError(f"study {name!r} in {redact(url)} is not a tp-search study")
    return study, False


def run_id() -> str:
    """Sorts by start time; unique across processes and hosts."""
    from datetime import datetime, timezone
    now = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S%f")
    host = re.sub(r"[^A-Za-z0-9.-]", "-", socket.gethostname())
    return f"{now}-{host}-{os.getpid()}"


def derived_seed(seed: int, known: int, run: str) -> int:
    """A resuming or joining process's sampler seed (the creator uses ``seed`` itself)."""
    return int(hashlib.sha1(f"{seed}:{known}:{run}".encode()).hexdigest()[:8], 16)


def sync(record: Record, work: WorkStudy, objective: Objective) -> int:
    """Bring what other runs/workers recorded into the sampler's study and the cache."""
    new = sorted(record.pull(), key=lambda e: e.key)
    for e in new:
        objective.remember(e.attrs)
    work.migrate(new)
    return len(new)


def run_trials(work: WorkStudy, record: Record, objective: Objective, total: int,
               progress: bool = True, pull_every_s: float = 2.0) -> int:
    """Ask/tell until ``total`` trials are finished in the record (all workers together).

    Returns how many this process ran. With several workers each sees the others' trials
    at its next pull (every ``pull_every_s``, at most once a second before an evaluation,
    and every few trials near the end), so a shared study may end a few trials above
    ``total``.
    """
    from tqdm.auto import tqdm
    from tqdm.contrib.logging import logging_redirect_tqdm

    from .objective import ATTR
    from .record import Entry

    objective.refresh = lambda: sync(record, work, objective) if record.pull_due(1.0) \
        else None
    ran = 0
    if record.complete() >= total:
        return ran
    with tqdm(total=total, initial=record.complete(), desc="trials", unit="trial",
              disable=None if progress else True) as bar, logging_redirect_tqdm():
        try:
            while record.complete() < total:
                trial = work.ask()
                values = objective(trial)
                ft = work.tell(trial, values)
                record.add(Entry(record.run, ran, dict(ft.params), tuple(ft.values),
                                 dict(ft.user_attrs[ATTR]), dict(ft.system_attrs)))
                ran += 1
                remaining = total - record.complete()
                if record.shared and remaining < record.flush_n:  # the last stretch with
                    if ran % max(1, remaining // 4) == 0:  # other workers: share progress
                        record.flush()  # often, so that all stop near total
                        sync(record, work, objective)
                elif record.pull_due(pull_every_s):
                    sync(record, work, objective)
                bar.update(max(0, min(record.complete(), total) - bar.n))
        finally:  # Ctrl-C / SIGTERM included: screened trials are kept
            try:
                record.flush()
            except Exception as e:  # never hide the interruption behind this
                log.warning("could not record the last %d screened trials (%s); a rerun "
                            "redoes them", record.pending, e)
    return ran


# ---------------------------------------------------------------------------- choices

def _macs(cfg: PruningConfig, ctx: _Context, workload: float) -> dict[str, float]:
    r = macs_report(cfg, ctx.lengths, ctx.seq_len)
    return {"workload": workload, "padded": r.reduction_padded, "real": r.reduction_real}


def _meta(s: SearchSettings, ctx: _Context, machine: str, latency: float,
          expected: float | None, dense_ms: float, metric: float | None, dense_metric: float,
          macs: dict[str, float], **extra: Any) -> dict[str, Any]:
    return {"machine_id": machine, "target_ms": s.latency_ms,
            "flops_reduction": s.flops_reduction,
            "workload": {"kind": WORKLOAD_KIND, "seq_len": ctx.seq_len, "batch": s.batch,
                         "threads": s.threads, "device": s.device},
            "predicted_latency_ms": latency, "expected_latency_ms_dev": expected,
            "dense_latency_ms": dense_ms,
            "proxy_metric": {"name": ctx.evaluator.metric, "value": metric,
                             "dense": dense_metric, "eval_samples": len(ctx.split),
                             "note": "static top-k, no retraining"},
            "macs_reduction": macs, "seed": s.seed, "task": ctx.task_name,
            "model": _model_label(ctx.model_dir), **extra}


def _dense_choices(s: SearchSettings, ctx: _Context, dense_ms: dict[str, float],
                   fast: dict[str, tuple[PruningConfig, float]], dense_metric: float
                   ) -> list[MachineChoice]:
    out = []
    dense = PruningConfig.dense(ctx.shape)
    macs = _macs(dense, ctx, 1.0)
    for m, p in ctx.predictors.items():
        exp = expected_latency(p, dense, ctx.lengths)
        cfg = PruningConfig.dense(ctx.shape, **_meta(s, ctx, m, dense_ms[m], exp, dense_ms[m],
                                                     dense_metric, dense_metric, macs,
                                                     note="the dense model meets the target"))
        out.append(MachineChoice(m, dense_ms[m], fast[m][1], cfg, dense_ms[m], dense_metric,
                                 macs, None, exp, exp))
    return out


def _searched_choices(s: SearchSettings, ctx: _Context, df: pd.DataFrame,
                      dense_ms: dict[str, float], fast: dict[str, tuple[PruningConfig, float]],
                      dense_metric: float, study_name: str) -> list[MachineChoice]:
    from .report import choose, lat_col
    ids = list(ctx.predictors)
    out = []
    for m, p in ctx.predictors.items():
        row = choose(df, m, ids)
        if row is None:
            raise InfeasibleError(
                f"no trial met the constraints on {m} (fastest {fast[m][1]:.3f} ms, target "
                f"{s.latency_ms:g} ms{_flops_text(s)}): run more --trials or relax the target")
        keep = [float(row[f"keep_{l}"]) for l in range(ctx.shape.num_layers)]
        base = PruningConfig.topk(ctx.shape, keep)
        lat = float(row[lat_col(m, ids)])
        exp = expected_latency(p, base, ctx.lengths)
        dense_exp = expected_latency(p, PruningConfig.dense(ctx.shape), ctx.lengths)
        macs = {"workload": float(row["macs_reduction_workload"]),
                "padded": float(row["macs_reduction_padded"]),
                "real": float(row["macs_reduction_real"])}
        metric = float(row["metric"])
        cfg = PruningConfig.topk(ctx.shape, keep, method="search", **_meta(
            s, ctx, m, lat, exp, dense_ms[m], metric, dense_metric, macs,
            trial=int(row["number"]), record_trial=_int_or_none(row["record"]),
            run=row["run"], study=study_name))
        out.append(MachineChoice(m, dense_ms[m], fast[m][1], cfg, lat, metric, macs,
                                 int(row["number"]), exp, dense_exp))
    return out


def _int_or_none(v: Any) -> int | None:
    return None if v is None or pd.isna(v) else int(v)


def _flops_text(s: SearchSettings) -> str:
    return f", MACs reduction >= {s.flops_reduction:g}x" if s.flops_reduction else ""


def _check_feasible(s: SearchSettings, ctx: _Context,
                    fast: dict[str, tuple[PruningConfig, float]]) -> None:
    slow = {m: f for m, f in fast.items() if f[1] > s.latency_ms}
    if slow:
        parts = [f"{f[1]:.3f} ms on {m} (keep {keep_key(f[0].keep)})" for m, f in slow.items()]
        raise InfeasibleError(
            f"--latency-ms {s.latency_ms:g} is below the fastest achievable latency: "
            f"{'; '.join(parts)}, for one input of {ctx.seq_len} real tokens, batch {s.batch}, "
            f"{s.threads} thread(s); raise the target or lower --seq-len")
    if s.flops_reduction:
        most = ctx.space.chain()
        first = next(iter(ctx.predictors.values()))
        best = Checker(ctx.predictors, s.latency_ms, ctx.seq_len).dense_macs / \
            first.macs(most, ctx.seq_len)
        if best < s.flops_reduction:
            raise InfeasibleError(
                f"--flops-reduction {s.flops_reduction:g} is above the largest MACs reduction "
                f"of the search space at the workload: {best:.2f}x (keep {keep_key(most.keep)})")


def _measure_choices(s: SearchSettings, ctx: _Context, choices: list[MachineChoice]) -> None:
    model = None
    for c in choices:
        if not s.measure:
            c.measure_note = "measurement skipped (--no-measure)"
        elif ctx.here_id is None or c.machine_id != ctx.here_id:
            c.measure_note = (f"{c.machine_id} is another machine (this one is "
                              f"{ctx.here_id}); measure there with tp-bench --config")
        else:
            if model is None:
                from pruning.checkpoint import from_pretrained
                model = ctx.model if ctx.model_dir == ctx.proxy_dir else from_pretrained(
                    ctx.model_dir, num_labels=ctx.model.config.num_labels)
            log.info("measuring the chosen configuration on this machine (%d repeats)",
                     s.repeats)
            m = measure(model, c.config, ctx.split, ctx.seq_len, s.batch, s.threads,
                        c.latency_ms, c.dense_ms, s.latency_ms, repeats=s.repeats,
                        device=s.device, seed=s.seed)
            c.measurement = m
            c.measure_note = "measured on this machine"
            c.config.meta["measured"] = m.to_dict()
            if not m.meets_target:
                log.warning("the chosen configuration MISSES the target when measured: "
                            "%.3f ms > %g ms (predicted %.3f ms, error %+.1f%%)",
                            m.chosen.median_ms, s.latency_ms, m.predicted_ms, m.error_pct)


# ---------------------------------------------------------------------------- entry point

def _search(s: SearchSettings, ctx: _Context, out_dir: Path, dense_ms: dict[str, float],
            fast: dict[str, tuple[PruningConfig, float]], common: dict[str, Any]
            ) -> SearchResult:
    from .report import pareto_table, trials_table
    from .storage import redact, storage_url

    out_dir.mkdir(parents=True, exist_ok=True)
    url = storage_url(s.storage, out_dir)
    identity = _identity(s, ctx)
    name = s.study_name or f"tp-search-{ctx.task_name}-" + hashlib.sha1(
        json.dumps(identity, sort_keys=True).encode()).hexdigest()[:12]
    study, created = open_study(url, name, identity)
    run = run_id()
    record = Record(study, ctx.space, run)
    known = sorted(record.pull(), key=lambda e: e.key)
    sampler_seed = s.seed if created else derived_seed(s.seed, len(known), run)
    work = WorkStudy(ctx.space, sampler_seed, s.population)
    checker = Checker(ctx.predictors, s.latency_ms, ctx.seq_len, s.flops_reduction)
    objective = Objective(ctx.space, checker, ctx.evaluator, sampler_seed)
    for e in known:
        objective.remember(e.attrs)
    work.migrate(known)
    log.info("%s study %s in %s: %d trials recorded, %d to go (sampler seed %d)",
             "created" if created else "resumed", name, redact(url), len(known),
             max(0, s.trials - len(known)), sampler_seed)
    dense_metric = study.user_attrs.get("dense_metric")
    if dense_metric is None:
        dense_metric = ctx.evaluator(PruningConfig.dense(ctx.shape))
        study.set_user_attr("dense_metric", dense_metric)
    dense_cfg = ctx.space.chain(())  # keep all 1: a point of the space
    objective.remember({"keep_key": keep_key(dense_cfg.keep), "metric": dense_metric})
    if not known:  # the fastest schedules first: a feasible trial exists from the start;
        seeds = [f[0] for f in fast.values()]  # and the dense model where it meets the
        if s.flops_reduction:  # target on some machine (it is that machine's best)
            seeds.append(ctx.space.chain())
        if any(t <= s.latency_ms for t in dense_ms.values()) and not s.flops_reduction:
            seeds.append(dense_cfg)
        for cfg in seeds:
            work.enqueue(ctx.space.to_params(cfg))
    ran = run_trials(work, record, objective, s.trials, s.progress)
    record.pull()  # other workers' last trials, record numbers of ours
    entries = record.sorted_entries()
    ids = list(ctx.predictors)
    df = trials_table(entries, ctx.space, ids, ctx.lengths, ctx.seq_len)
    choices = _searched_choices(s, ctx, df, dense_ms, fast, dense_metric, name)

    def expected(machine: str, key: str) -> float | None:
        keep = [float(k) for k in key.split(",")]
        return expected_latency(ctx.predictors[machine], PruningConfig.topk(ctx.shape, keep),
                                ctx.lengths)
    feasible = df[[c for c in df.columns if c.startswith("feasible")]].eq(True).any(axis=1)
    stats = {"complete": int(len(df)), "feasible": int(feasible.sum()),
             "infeasible": int((~feasible).sum()),
             "evaluated": int((df["evaluated"] != "skipped").sum()), "run_trials": ran,
             "evaluations": objective.evaluations, "cache_hits": objective.cache_hits,
             "skipped": objective.skipped}
    seeds_used = sorted({int(x) for x in df["sampler_seed"].dropna()} | {sampler_seed})
    return SearchResult("searched", dense_metric=dense_metric, choices=choices,
                        study_name=name, storage=redact(url), trials=df,
                        pareto=pareto_table(df, ids, expected), stats=stats,
                        sampler_seeds=seeds_used, **common)


def run_search(s: SearchSettings) -> SearchResult:
    """Run (or resume) the search of ``s``; write the outputs; return what was chosen."""
    import torch
    before = torch.get_num_threads()
    torch.set_num_threads(s.eval_threads or s.threads)  # restored below
    try:
        return _run_search(s)
    finally:
        torch.set_num_threads(before)


def _run_search(s: SearchSettings) -> SearchResult:
    from .report import write_outputs

    ctx = _prepare(s)
    dense_ms = {m: p.dense(ctx.seq_len) for m, p in ctx.predictors.items()}
    fast = {m: fastest(ctx.space, p, ctx.seq_len) for m, p in ctx.predictors.items()}
    for m in ctx.predictors:
        log.info("%s: dense %.3f ms, fastest in the space %.3f ms, target %g ms "
                 "(one input of %d real tokens, batch %d, %d thread(s))", m, dense_ms[m],
                 fast[m][1], s.latency_ms, ctx.seq_len, s.batch, s.threads)
    _check_feasible(s, ctx, fast)
    ids = list(ctx.predictors)
    out_dir = Path(s.out) if s.out else default_out_dir(
        ctx.task_name, _model_label(ctx.model_dir), ids, s.latency_ms, s.flops_reduction)
    common = dict(settings=s, out_dir=out_dir, task=ctx.task_name,
                  model=_model_label(ctx.model_dir), proxy_model=_model_label(ctx.proxy_dir),
                  metric_name=ctx.evaluator.metric, seq_len=ctx.seq_len, n_eval=len(ctx.split),
                  mean_length=sum(ctx.lengths) / len(ctx.lengths), space=ctx.space,
                  here_id=ctx.here_id, results_dir=str(s.results or "results"))

    dense_cfg = PruningConfig.dense(ctx.shape)
    if all(t <= s.latency_ms for t in dense_ms.values()) and not (
            s.flops_reduction and s.flops_reduction > 1):
        log.info("the dense model already meets the target on %s: no search needed",
                 ", ".join(ids))
        dense_metric = ctx.evaluator(dense_cfg)
        result = SearchResult("dense", dense_metric=dense_metric,
                              choices=_dense_choices(s, ctx, dense_ms, fast, dense_metric),
                              **common)
    else:
        result = _search(s, ctx, out_dir, dense_ms, fast, common)
    _measure_choices(s, ctx, result.choices)
    result.files = write_outputs(result)
    c = result.primary
    log.info("chosen for %s: keep %s, predicted %.3f ms (target %g ms), proxy %s %.4f "
             "(dense %.4f); outputs in %s", c.machine_id,
             keep_key(c.config.keep) if c.config.keep else "dense", c.latency_ms,
             s.latency_ms, result.metric_name, c.metric, result.dense_metric, out_dir)
    return result
