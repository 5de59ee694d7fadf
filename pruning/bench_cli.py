"""tp-bench: measure Hugging Face, our dense and our pruned encoder side by side."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from tp_search.pruning.core.cli_common import (
    Parser,
    add_common,
    device,
    dump_json,
    guarded,
    name_list,
    positive_int,
    print_table,
    require_device,
    setup_logging,
)
from tp_search.pruning.config import PruningConfig, parse_keep
from tp_search.pruning.core.errors import TpError
from tp_search.pruning.core.atomic import atomic_write_text
from tp_search.pruning.model.archs import ARCHS
from tp_search.pruning.runtime.registry import REFERENCE, help_text

DEFAULT_TASK = "rotten_tomatoes"


def build_parser() -> argparse.ArgumentParser:
    p = Parser(
        prog="tp-bench",
        description="Measure latency (median, p10/p90), speedup, MACs reduction (padded and "
                    "real-length baselines), accuracy and logit parity of a pruning "
                    "configuration: transformers eager vs our dense vs our pruned encoder on "
                    "every available backend, timed interleaved in one process. A deployed "
                    "model directory (RUN/model) is benched, unless flags say otherwise, on "
                    "its own task, input length, truncation and backend, beside the dense "
                    "model on the same backend and on PyTorch.")
    src = p.add_mutually_exclusive_group()
    src.add_argument("--model", help="HF BERT-family checkpoint (bert, roberta, xlm-roberta, "
                                     "distilbert, electra) or tp-search model directory "
                                     "(default: the bundled all-MiniLM-L6-v2)")
    src.add_argument("--arch", choices=sorted(ARCHS),
                     help="random weights of a named shape (latency only, no accuracy)")
    p.add_argument("--task",
                   help="rotten_tomatoes, bbc_news, a GLUE task dir, a CSV/TSV file or a dir "
                        "of train/dev CSVs (default: a deployed model's own task, else "
                        "rotten_tomatoes)")
    how = p.add_mutually_exclusive_group()
    how.add_argument("--keep", help="topk keep fractions per layer, e.g. 1,1,0.7,0.5,0.4,0.3")
    how.add_argument("--thresholds", help="LTP thresholds per layer, e.g. 0,0.01,0.01,0.02,...")
    how.add_argument("--config", help="a pruning configuration JSON (best_config.json ...)")
    p.add_argument("--seq-len", type=positive_int, help="real tokens per timed input "
                   "(default: the task's max length, 128 for rotten_tomatoes)")
    p.add_argument("--batch", type=positive_int, default=1)
    p.add_argument("--threads", type=positive_int,
                   help="threads (default: a deployed model's own, else 1)")
    p.add_argument("--device", type=device, default="cpu",
                   help="cpu, cuda or cuda:N (default: cpu)")
    p.add_argument("--repeats", type=positive_int, default=50, help="timed rounds")
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--eval-samples", type=int, default=300,
                   help="dev examples for accuracy (0 = skip)")
    p.add_argument("--workload", choices=("fixed", "dev"), default="fixed",
                   help="fixed: inputs of exactly --seq-len real tokens; dev: real dev "
                        "batches with dynamic padding")
    p.add_argument("--backend", type=name_list, default=None,
                   help=f"runtimes to time the dense and the pruned model on, comma-separated: "
                        f"{help_text()} (default: a deployed model's own backend and "
                        f"{REFERENCE}, else every one available here)")
    p.add_argument("--no-hf", action="store_true", help="skip the Hugging Face baseline")
    p.add_argument("--list-backends", action="store_true",
                   help="list every backend of the registry, its precision and whether it "
                        "runs on this machine (and why not), then exit")
    p.add_argument("--format", choices=("table", "json"), default="table")
    p.add_argument("--out", help="also write the JSON report to this file")
    p.add_argument("--seed", type=int, default=0)
    add_common(p)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging(args)
    return guarded("tp-bench", lambda: _run(args))


def _list_backends(args: argparse.Namespace) -> int:
    """What the registry offers and what this machine can run: a CPU without native bf16
    is reported as such, not emulated."""
    from tp_search.pruning.runtime import why_unavailable
    from tp_search.pruning.runtime.registry import SPECS
    rows = [{"backend": s.name, "precision": s.precision, "what": s.summary,
             "why_unavailable": why_unavailable(s.name)} for s in SPECS]
    if args.format == "json":
        sys.stdout.write(dump_json({"backends": rows}))
    else:
        print_table([(r["backend"], f"{r['precision']:<5} " + (
            "runs here" if r["why_unavailable"] is None
            else f"unavailable: {r['why_unavailable']}")) for r in rows])
    return 0


def _run(args: argparse.Namespace) -> int:
    if args.list_backends:
        return _list_backends(args)
    # imported here, not at the top: they load torch, which --help does not need

    from tp_search.pruning.bench import BenchSettings, default_max_len, run_bench
    from tp_search.pruning.measure.memory import check_fits
    from tp_search.pruning.data import task_spec
    from tp_search.pruning.model.checkpoint import from_pretrained, random_model
    from tp_search.pruning.runtime import available_backends, require_available
    from tp_search.pruning.runtime.deploy import manifest
    require_device(args.device)
    deployed = manifest(Path(args.model)) if args.model and Path(args.model).is_dir() else None
    own = deployed or {}  # a deployed model's own settings are the defaults
    backends = tuple(args.backend or (dict.fromkeys([REFERENCE, own["backend"]]) if deployed
                                      else available_backends()))
    for b in backends:
        require_available(b)  # an unknown or unusable backend fails before loading a model
    if args.arch:
        model, task = random_model(args.arch), None
    else:
        task = args.task or own.get("task") or DEFAULT_TASK
        spec = task_spec(task)
        model = from_pretrained(args.model, num_labels=spec.num_labels)
    if args.config:
        cfg = PruningConfig.load(args.config)
    elif args.thresholds:
        cfg = PruningConfig.threshold(model.shape, parse_keep(args.thresholds))
    elif args.keep:
        cfg = PruningConfig.topk(model.shape, parse_keep(args.keep))
    else:
        cfg = model.pruning
    cfg.check_shape(model.shape)
    seq_len = args.seq_len or own.get("seq_len") or default_max_len(task)
    if seq_len > model.config.max_len:
        raise TpError(f"--seq-len {seq_len} exceeds the model's {model.config.max_len} "
                      "positions")
    check_fits(model.shape, args.batch, seq_len)
    if deployed and model.tokenizer is not None:  # its tokenizer truncates to the deployed
        model.tokenizer.model_max_length = seq_len  # length; the dense baseline needs all
    threads = args.threads or int(own.get("threads") or 1)
    s = BenchSettings(seq_len=seq_len, batch=args.batch, threads=threads,
                      repeats=args.repeats, warmup=args.warmup, eval_samples=args.eval_samples,
                      workload=args.workload, device=args.device, hf=not args.no_hf,
                      seed=args.seed, backends=backends,
                      pruned_max_len=int(deployed.get("max_len") or 0) if deployed else 0)
    report = run_bench(model, cfg, task, s, machine_id(args.device, threads))
    report["model"] = args.arch or str(getattr(model, "source", args.model))
    report["task"] = task
    if deployed:
        report["deployment"] = deployed
    if args.out:
        atomic_write_text(Path(args.out), dump_json(report))
    if args.format == "json":
        sys.stdout.write(dump_json(report))
    else:
        print_table(table_rows(report))
    return 0


def machine_id(device: str, threads: int) -> str | None:
    """The profiler's machine id, recorded in the report (informative, never fatal)."""
    try:
        from tp_search.profiler.fingerprint import fingerprint  # entry point: may wire any layer
        return fingerprint(device=device, threads=threads).machine_id
    except Exception:  # py-cpuinfo can fail in odd containers
        return None


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
        for b, v in a.get("by_backend", {}).items():
            rows.append((f"dev {a['metric']} {b}", f"dense {v['dense']:.4f}, pruned "
                                                   f"{v['pruned']:.4f}"))
    if "max_logit_diff_vs_hf" in r:
        rows.append(("max |logit - HF|", f"{r['max_logit_diff_vs_hf']:.2e}"))
    for b, diffs in r.get("max_logit_diff_vs_reference", {}).items():
        for k, v in diffs.items():
            rows.append((f"max |logit {b} - {REFERENCE}| {k}", f"{v:.2e}"))
    if "deployment" in r:
        d = r["deployment"]
        rows.append(("deployed on", f"{d['backend']} (inputs truncated to "
                                    f"{d.get('max_len') or 'the model maximum'})"))
    return rows


if __name__ == "__main__":
    sys.exit(main())
