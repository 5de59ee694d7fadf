"""tp-bench: measure Hugging Face, our dense and our pruned encoder side by side."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .bench import BenchSettings, default_max_len, run_bench
from .checkpoint import ARCHS, from_pretrained, random_model
from .cli_utils import add_common, dump_json, guarded, positive_int, print_table, setup_logging
from .config import PruningConfig, parse_keep
from .errors import TpError
from .io_utils import atomic_write_text


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="tp-bench",
        description="Measure latency (median, p10/p90), speedup, MACs reduction (padded and "
                    "real-length baselines), accuracy and logit parity of a pruning "
                    "configuration: Hugging Face vs our dense vs our pruned encoder, timed "
                    "interleaved in one process.")
    src = p.add_mutually_exclusive_group()
    src.add_argument("--model", help="HF BERT checkpoint or tp-search model directory "
                                     "(default: the bundled all-MiniLM-L6-v2)")
    src.add_argument("--arch", choices=sorted(ARCHS),
                     help="random weights of a named shape (latency only, no accuracy)")
    p.add_argument("--task", default="rotten_tomatoes",
                   help="rotten_tomatoes, a GLUE task dir or a CSV/TSV file (default: %(default)s)")
    how = p.add_mutually_exclusive_group()
    how.add_argument("--keep", help="topk keep fractions per layer, e.g. 1,1,0.7,0.5,0.4,0.3")
    how.add_argument("--thresholds", help="LTP thresholds per layer, e.g. 0,0.01,0.01,0.02,...")
    how.add_argument("--config", help="a pruning configuration JSON (best_config.json ...)")
    p.add_argument("--seq-len", type=positive_int, help="real tokens per timed input "
                   "(default: the task's max length, 128 for rotten_tomatoes)")
    p.add_argument("--batch", type=positive_int, default=1)
    p.add_argument("--threads", type=positive_int, default=1)
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument("--repeats", type=positive_int, default=50, help="timed rounds")
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--eval-samples", type=int, default=300,
                   help="dev examples for accuracy (0 = skip)")
    p.add_argument("--workload", choices=("fixed", "dev"), default="fixed",
                   help="fixed: inputs of exactly --seq-len real tokens; dev: real dev "
                        "batches with dynamic padding")
    p.add_argument("--no-hf", action="store_true", help="skip the Hugging Face baseline")
    p.add_argument("--format", choices=("table", "json"), default="table")
    p.add_argument("--out", help="also write the JSON report to this file")
    p.add_argument("--seed", type=int, default=0)
    add_common(p)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging(args)
    return guarded("tp-bench", lambda: _run(args))


def _run(args: argparse.Namespace) -> int:
    import torch
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        raise TpError("--device cuda: no CUDA device visible to torch; use --device cpu")
    if args.arch:
        model, task = random_model(args.arch), None
    else:
        from .data import task_spec
        spec = task_spec(args.task)
        model, task = from_pretrained(args.model, num_labels=spec.num_labels), args.task
    if args.config:
        cfg = PruningConfig.load(args.config)
    elif args.thresholds:
        cfg = PruningConfig.threshold(model.shape, parse_keep(args.thresholds))
    elif args.keep:
        cfg = PruningConfig.topk(model.shape, parse_keep(args.keep))
    else:
        cfg = model.pruning
    cfg.check_shape(model.shape)
    seq_len = args.seq_len or default_max_len(task)
    if seq_len > model.config.max_position_embeddings:
        raise TpError(f"--seq-len {seq_len} exceeds the model's "
                      f"{model.config.max_position_embeddings} positions")
    s = BenchSettings(seq_len=seq_len, batch=args.batch, threads=args.threads,
                      repeats=args.repeats, warmup=args.warmup, eval_samples=args.eval_samples,
                      workload=args.workload, device=args.device, hf=not args.no_hf,
                      seed=args.seed)
    report = run_bench(model, cfg, task, s)
    report["model"] = args.arch or str(getattr(model, "source", args.model))
    report["task"] = task
    if args.out:
        atomic_write_text(Path(args.out), dump_json(report))
    if args.format == "json":
        sys.stdout.write(dump_json(report))
    else:
        print_table(table_rows(report))
    return 0


def table_rows(r: dict) -> list[tuple[str, str]]:
    w = r["workload"]
    rows = [("model", r["model"]), ("config", f"{r['config']['policy']} "
             f"{r['config'].get('keep') or r['config'].get('thresholds') or ''}"),
            ("workload", f"seq {w['seq_len']} x batch {w['batch']}, {w['threads']} thread(s), "
                         f"{w['device']}, {w['kind']} ({w['note']})")]
    for k, t in r["latency_ms"].items():
        rows.append((f"latency {k}", f"{t['median_ms']:.2f} ms (p10 {t['p10_ms']:.2f}, "
                                     f"p90 {t['p90_ms']:.2f}, n={t['repeats']})"))
    for k, v in r["speedup"].items():
        rows.append((f"speedup {k}", f"{v:.2f}x"))
    if "macs_workload" in r:
        m = r["macs_workload"]
        rows.append(("MACs reduction (workload)", f"{m['reduction_real']:.2f}x"))
    if "macs_dev" in r:
        m = r["macs_dev"]
        rows.append(("MACs reduction (dev)", f"{m['reduction_real']:.2f}x vs real length, "
                     f"{m['reduction_padded']:.2f}x vs padded to {w['seq_len']} "
                     f"(mean dev length {r['dev_mean_length']:.1f})"))
    if "accuracy" in r:
        a = r["accuracy"]
        rows.append((f"dev {a['metric']}", f"dense {a['dense']:.4f}, pruned {a['pruned']:.4f} "
                                           f"(n={a['eval_samples']})"))
    if "max_logit_diff_vs_hf" in r:
        rows.append(("max |logit - HF|", f"{r['max_logit_diff_vs_hf']:.2e}"))
    return rows


if __name__ == "__main__":
    sys.exit(main())
