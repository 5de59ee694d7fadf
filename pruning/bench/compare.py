"""tp-bench's measurement: Hugging Face vs our dense vs our pruned encoder, in one process.

Every speedup tp-search claims comes from here: wall-clock medians of a model that
physically gathers the kept tokens, timed interleaved with the dense baselines.
"""
from __future__ import annotations

import platform
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import transformers
from tqdm.auto import tqdm

from tp_search.pruning.config import PruningConfig
from tp_search.pruning.data import batches, load_task, task_spec
from tp_search.pruning.macs import macs_report
from tp_search.pruning.model.checkpoint import to_hf_state_dict
from tp_search.pruning.model.encoder import PrunedBert
from tp_search.pruning.model.families import FAMILIES
from tp_search.pruning.core.versions import library_versions
from tp_search.pruning.runtime import REFERENCE, get_backend
from tp_search.pruning.measure.accuracy import evaluate, evaluate_runner
from tp_search.pruning.measure.calibration_data import calibration_batches
from tp_search.pruning.measure.timed_inputs import fixed_inputs
from tp_search.pruning.measure.timing import Timing, time_interleaved


@dataclass
class BenchSettings:
    seq_len: int = 128
    batch: int = 1
    threads: int = 1
    repeats: int = 50
    warmup: int = 5
    eval_samples: int = 300
    workload: str = "fixed"  # fixed: every input has seq_len real tokens; dev: real dev batches
    device: str = "cpu"
    hf: bool = True
    seed: int = 0
    backends: tuple[str, ...] = (REFERENCE,)  # each times its dense and its pruned runner
    pruned_max_len: int = 0  # a deployed model's input truncation (0: none)


def hf_twin(model: PrunedBert) -> torch.nn.Module:
    """The same weights in transformers' own class of the model's family
    (BertForSequenceClassification, RobertaForSequenceClassification ...; default SDPA)."""
    c = model.config
    fam = FAMILIES[c.family]
    fields = fam.write(c)
    cfg = transformers.AutoConfig.for_model(fields.pop("model_type"), **fields,
                                            num_labels=c.num_labels)
    hf = getattr(transformers, fam.hf_class)(cfg)
    missing, unexpected = hf.load_state_dict(to_hf_state_dict(model), strict=False)
    if missing or unexpected:  # the mapping must cover the twin exactly
        raise RuntimeError(f"{fam.hf_class} twin: missing {missing[:3]}, "
                           f"unexpected {unexpected[:3]}")
    return hf.eval()


def hf_inputs(model: PrunedBert, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The inputs the twin takes: no token_type_ids for a family without them."""
    if FAMILIES[model.config.family].token_types:
        return batch
    return {k: v for k, v in batch.items() if k != "token_type_ids"}


def _name(backend: str, kind: str) -> str:
    """Runner names: the PyTorch encoder keeps the plain "dense"/"pruned" of earlier
    reports; other backends are prefixed ("ort-int8 pruned")."""
    return kind if backend == REFERENCE else f"{backend} {kind}"


def run_bench(model: PrunedBert, cfg: PruningConfig, task: str | None,
              s: BenchSettings, machine_id: str | None = None) -> dict[str, Any]:
    """The tp-bench report; ``machine_id`` (the profiler's fingerprint, from the caller)
    is recorded in its environment."""
    torch.set_num_threads(s.threads)
    model = model.to(s.device).eval()
    dense = PruningConfig.dense(model.shape)
    dev = load_task(task, "dev") if task and model.tokenizer is not None else None
    max_len = s.seq_len
    cut = min(max_len, s.pruned_max_len) if s.pruned_max_len else max_len
    hf = hf_twin(model).to(s.device) if s.hf else None

    def feed_at(n: int) -> list[dict[str, torch.Tensor]]:
        if s.workload == "dev" and dev is not None:
            return [{k: v.to(s.device) for k, v in b.items() if k not in ("labels", "index")}
                    for b in batches(model.tokenizer, dev.subset(s.batch * 16, s.seed), n,
                                     s.batch)]
        return [{k: v.to(s.device) for k, v in
                 fixed_inputs(model, dev, n, s.batch, s.seed).items()}]

    feed, feed_cut = feed_at(max_len), feed_at(cut)
    runners: dict[str, tuple[Any, list]] = {}
    if hf is not None:
        runners["hf"] = (lambda b: hf(**b).logits, [hf_inputs(model, b) for b in feed])
    calib = (calibration_batches(model.tokenizer, load_task(task, "train"), max_len)
             if dev is not None and any(get_backend(b).calibrated for b in s.backends)
             else None)
    for backend in s.backends:
        make = get_backend(backend)
        runners[_name(backend, "dense")] = (
            make.build(model, dense, threads=s.threads, calibration=calib), feed)
        runners[_name(backend, "pruned")] = (
            make.build(model, cfg, threads=s.threads, calibration=calib), feed_cut)
    cursor = dict.fromkeys(runners, 0)

    def call(name: str):
        fn, data = runners[name]

        def run():
            b = data[cursor[name] % len(data)]
            cursor[name] += 1
            return fn(b)
        return run

    with tqdm(total=s.repeats, desc="timing", unit="round", leave=False) as bar:
        samples = time_interleaved({n: call(n) for n in runners}, repeats=s.repeats,
                                   warmup=s.warmup, device=s.device,
                                   on_round=lambda r: bar.update(1))
    lat = {k: Timing.of(v) for k, v in samples.items()}

    def paired(a: str, b: str) -> float:
        return float(np.median(samples[a] / samples[b]))

    out: dict[str, Any] = {
        "config": cfg.to_dict(), "backends": list(s.backends),
        "runners": {n: (r[0].describe() if hasattr(r[0], "describe") else
                        {"backend": "transformers", "precision": "fp32",
                         "runtime": f"transformers {transformers.__version__} eager"})
                    for n, r in runners.items()},
        "workload": {"kind": s.workload, "seq_len": s.seq_len, "batch": s.batch,
                     "threads": s.threads, "device": s.device, "repeats": s.repeats,
                     "pruned_max_len": s.pruned_max_len,
                     "note": ("every input has seq_len real tokens (no padding)"
                              if s.workload != "dev" else "real dev batches, dynamic padding")
                     + (f"; the pruned model's inputs truncated to {cut}" if cut < max_len
                        else "")},
        "latency_ms": {k: v.to_dict() for k, v in lat.items()}, "speedup": {}}
    for b in s.backends:
        d, p = _name(b, "dense"), _name(b, "pruned")
        pre = "" if b == REFERENCE else f"{b}_"
        out["speedup"][f"{pre}pruned_vs_dense"] = paired(d, p)
        if hf is not None:
            out["speedup"][f"{pre}dense_vs_hf"] = paired("hf", d)
            out["speedup"][f"{pre}pruned_vs_hf"] = paired("hf", p)
    with torch.inference_mode():
        b = feed[0]
        ours = {k: model(b["input_ids"], b["attention_mask"], b["token_type_ids"],
                         pruning=dense if k == "dense" else cfg) for k in ("dense", "pruned")}
        if hf is not None:
            ref = hf(**hf_inputs(model, b)).logits
            out["max_logit_diff_vs_hf"] = float((ref - ours["dense"]).abs().max())
        if cut == max_len:  # every other backend against the reference encoder
            out["max_logit_diff_vs_reference"] = {
                bk: {k: float((runners[_name(bk, k)][0](b) - ours[k]).abs().max())
                     for k in ("dense", "pruned")} for bk in s.backends if bk != REFERENCE}
    lengths = [int(x.sum()) for b in feed_cut for x in b["attention_mask"]]
    if cfg.policy != "threshold":
        out["macs_workload"] = macs_report(cfg, lengths, max_len).to_dict()
    if dev is not None and s.eval_samples > 0:
        sub = dev.subset(s.eval_samples, s.seed)
        d = evaluate(model, sub, max_len, pruning=dense, device=s.device, progress=True)
        p = evaluate(model, sub, cut, pruning=cfg, device=s.device, progress=True)
        out["accuracy"] = {"metric": d.primary, "dense": d.score, "pruned": p.score,
                           "eval_samples": len(sub), "by_backend": {}}
        for b in s.backends:
            if b == REFERENCE:
                continue  # the PyTorch encoder's are the plain dense/pruned scores
            out["accuracy"]["by_backend"][b] = {
                k: evaluate_runner(runners[_name(b, k)][0], sub, n, model.tokenizer).score
                for k, n in (("dense", max_len), ("pruned", cut))}
        out["macs_dev"] = p.macs(cfg, max_len).to_dict()
        out["dev_mean_length"] = float(np.mean(p.lengths))
    out["environment"] = environment(s.threads, s.device, machine_id)
    return out


def environment(threads: int, device: str, machine_id: str | None = None) -> dict[str, Any]:
    env = {**library_versions(torch, transformers),
           "python": platform.python_version(), "threads": threads, "device": device,
           "machine": platform.machine()}
    if machine_id:
        env["machine_id"] = machine_id
    return env


def default_max_len(task: str | None) -> int:
    return task_spec(task).max_len if task else 128
