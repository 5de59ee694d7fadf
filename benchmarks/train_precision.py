"""bf16 against fp32 training on the main job's stages: speed per step and dev accuracy.

    .venv/bin/python benchmarks/train_precision.py [--task bbc_news] [--steps 24]
        [--finetune-epochs 0.3] [--runs runs/train-precision]

Speed: each stage the main job trains (fine-tune, ranking distillation, ToP pruning) runs
``--steps`` optimizer steps under fp32 and under bf16 autocast (fp32 master weights), the
two alternating stage by stage, at the task's training length and batch; seconds per step
from each stage's own train_time_s. Accuracy: the teacher fine-tuned for
``--finetune-epochs`` under each precision, its dev metric (all dev examples, fp32 inference)
and the paired bootstrap interval of bf16 minus fp32. Whether the CPU computes bf16 natively
(AMX or AVX512-BF16) is recorded: elsewhere autocast emulates it and tp-search's ``auto``
trains in fp32. Writes results/<machine>/train_precision-<task>.{json,md}.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from tp_search.profiler.fingerprint import fingerprint
from tp_search.pruning.core.atomic import atomic_write_text
from tp_search.pruning.core.cpu import native_bf16
from tp_search.pruning.data import load_task, task_spec
from tp_search.pruning.measure.accuracy import evaluate
from tp_search.pruning.measure.bootstrap import paired_difference
from tp_search.pruning.model.checkpoint import from_pretrained
from tp_search.pruning.train import DistillSettings, FinetuneSettings, TopSettings
from tp_search.pruning.train import distill, finetune, prune_top

PRECISIONS = ("fp32", "bf16")


def per_step(out: Path) -> float:
    m = json.loads((out / "metrics.json").read_text())
    return m["train_time_s"] / m["steps"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--task", default="bbc_news")
    ap.add_argument("--steps", type=int, default=24)
    ap.add_argument("--finetune-epochs", type=float, default=0.3)
    ap.add_argument("--runs", default="runs/train-precision")
    ap.add_argument("--out", default="results")
    a = ap.parse_args()
    spec = task_spec(a.task)
    n = spec.budget.train_max_len or spec.max_len
    runs = Path(a.runs)
    common = dict(task=a.task, max_len=n, progress=True, holdout=spec.budget.holdout)
    speed: dict[str, dict[str, float]] = {}
    for p in PRECISIONS:  # speed: the same steps of every stage, precision by precision
        ft = finetune(FinetuneSettings(out=str(runs / f"speed-finetune-{p}"), precision=p,
                                       max_steps=a.steps, **common))
        teacher = str(ft / "model")
        ds = distill(DistillSettings(model=teacher, teacher=teacher, precision=p,
                                     out=str(runs / f"speed-distill-{p}"), max_steps=a.steps,
                                     **common))
        cfg = runs / "keep.json"
        from tp_search.pruning import PruningConfig
        shape = from_pretrained(teacher, tokenizer=False).shape
        PruningConfig.topk(shape, [1, 0.6, 0.6, 0.4, 0.4, 0.3]).save(cfg)
        tp = prune_top(TopSettings(model=str(ds / "model"), teacher=teacher, config=str(cfg),
                                   precision=p, out=str(runs / f"speed-prune-{p}"),
                                   max_steps=a.steps, **common))
        speed[p] = {"finetune": per_step(ft), "distill": per_step(ds), "prune-top": per_step(tp)}
    dev = load_task(a.task, "dev")
    acc = {}
    for p in PRECISIONS:  # accuracy: the teacher after the same short fine-tune
        out = finetune(FinetuneSettings(out=str(runs / f"acc-finetune-{p}"), precision=p,
                                        epochs=a.finetune_epochs, **common))
        model = from_pretrained(out / "model")
        acc[p] = evaluate(model, dev, spec.max_len, progress=True)
    d = paired_difference(dev.task.metric, acc["bf16"].preds, acc["fp32"].preds,
                          acc["fp32"].labels)
    report = {"machine": fingerprint().machine_id, "native_bf16": native_bf16(),
              "task": a.task, "train_max_len": n, "steps": a.steps,
              "seconds_per_step": speed,
              "speedup_bf16": {k: speed["fp32"][k] / speed["bf16"][k] for k in speed["fp32"]},
              "finetune_epochs": a.finetune_epochs,
              "dev_metric": {p: r.score for p, r in acc.items()},
              "bf16_minus_fp32": d.to_dict() | {"verdict": d.verdict(1.0)}}
    out = Path(a.out) / report["machine"]
    atomic_write_text(out / f"train_precision-{a.task}.json", json.dumps(report, indent=2) + "\n")
    lines = [f"# bf16 vs fp32 training on {report['machine']} ({a.task}, {n} tokens)", "",
             f"- native bf16 (AMX or AVX512-BF16): {'yes' if report['native_bf16'] else 'no: torch.autocast emulates it'}",
             "", "| stage | fp32 s/step | bf16 s/step | bf16 speedup |", "|---|---|---|---|"]
    for k in speed["fp32"]:
        lines.append(f"| {k} | {speed['fp32'][k]:.3f} | {speed['bf16'][k]:.3f} | "
                     f"{report['speedup_bf16'][k]:.2f}x |")
    lines += ["", f"- teacher after {a.finetune_epochs:g} epoch: dev {dev.task.metric} fp32 "
              f"{acc['fp32'].score:.4f}, bf16 {acc['bf16'].score:.4f}; bf16 - fp32: "
              f"{d.verdict(1.0)}", ""]
    atomic_write_text(out / f"train_precision-{a.task}.md", "\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
