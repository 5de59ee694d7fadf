"""tp-train: fine-tune, distill and prune (ToP or LTP) a BERT encoder, stage by stage.

Stages chain through their output directories:

    tp-train finetune --task rotten_tomatoes --out runs/rt/finetune
    tp-train distill  --teacher runs/rt/finetune --out runs/rt/distill
    tp-train prune --method top --config best_config.json \\
        --teacher runs/rt/finetune --model runs/rt/distill --out runs/rt/top
    tp-train prune --method ltp --teacher runs/rt/finetune --model runs/rt/distill

Each writes OUT/model (loadable by tp-bench and the next stage) and OUT/metrics.json. An
interrupted stage resumes from OUT/checkpoint.pt when rerun; a finished one is reused
unless --force.
"""
from __future__ import annotations

import argparse
import json
import sys
from dataclasses import MISSING, fields
from pathlib import Path
from typing import Any

from tp_search.pruning.core.cli_common import (
    Parser,
    add_common,
    device,
    guarded,
    positive_int,
    print_table,
    require_device,
    setup_logging,
)
from tp_search.pruning.core.errors import TpError

METHODS = ("top", "ltp")


def _defaults(cls: type) -> dict[str, Any]:
    return {f.name: f.default for f in fields(cls) if f.default is not MISSING}


def _training_flags(p: argparse.ArgumentParser, d: dict[str, Any]) -> None:
    g = p.add_argument_group("training")
    g.add_argument("--task", help="rotten_tomatoes, bbc_news, a GLUE task dir, a CSV/TSV file "
                                  "or a dir of train/dev CSVs "
                                  f"(default: {d['task']})")
    g.add_argument("--out", help="output directory (default: runs/<task>/<stage>)")
    g.add_argument("--epochs", type=float, help=f"passes over the training set (default: "
                                                f"{d['epochs']:g})")
    g.add_argument("--max-steps", type=positive_int, help="optimizer steps (overrides --epochs)")
    g.add_argument("--lr", type=float, help=f"peak learning rate (default: {d['lr']:g})")
    g.add_argument("--batch-size", type=positive_int,
                   help=f"examples per step (default: {d['batch_size']})")
    g.add_argument("--max-len", type=positive_int,
                   help="max tokens per example (default: the task's, 128 for rotten_tomatoes)")
    g.add_argument("--warmup-ratio", type=float,
                   help=f"LR warm-up fraction (default: {d['warmup_ratio']:g})")
    g.add_argument("--weight-decay", type=float, help=f"default: {d['weight_decay']:g}")
    g.add_argument("--train-embeddings", dest="freeze_word_embeddings", action="store_false",
                   default=None, help="also train the word embeddings (frozen by default: "
                                      "faster on CPU)")
    g.add_argument("--seed", type=int, help=f"default: {d['seed']}")
    g.add_argument("--device", type=device, help="cpu, cuda or cuda:N (default: cpu)")
    g.add_argument("--holdout", type=int,
                   help="train examples no step trains on (the search scores candidates on "
                        "them; tp-search's main job holds out the task's budget) (default 0)")
    g.add_argument("--train-precision", dest="precision", choices=("auto", "fp32", "bf16"),
                   help="matmul precision of the training steps: bf16 autocast with fp32 "
                        "master weights; auto = bf16 where the CPU has native bf16 (AMX or "
                        "AVX512-BF16), else fp32 (default: auto)")
    g.add_argument("--train-threads", type=positive_int,
                   help="torch threads for training (default: torch's choice; use fewer when "
                        "the cores are shared, oversubscription is much slower)")
    g.add_argument("--checkpoint-every", type=positive_int,
                   help=f"steps between checkpoints (default: {d['checkpoint_every']})")
    g.add_argument("--eval-samples", type=int,
                   help="dev examples to evaluate on (default: all)")
    g.add_argument("--force", action="store_true", default=None,
                   help="retrain even if OUT holds a finished run (drops its checkpoint)")
    lat = p.add_argument_group("latency table (predicted latency in metrics.json)")
    lat.add_argument("--machine", help="use the table of this machine id instead of this "
                                       "machine's")
    lat.add_argument("--results", help="results directory holding machines/<id>/ tables "
                                       "(default: $TP_SEARCH_RESULTS or results/)")
    lat.add_argument("--threads", type=positive_int, help="table entry to use (default: 1)")
    lat.add_argument("--seq-len", type=positive_int,
                     help="workload length for latency (default: --max-len)")
    add_common(p)


def _distill_flags(p: argparse.ArgumentParser, d: dict[str, Any], ranking: bool = True
                   ) -> None:
    g = p.add_argument_group("distillation")
    g.add_argument("--teacher", help="the fine-tuned dense model (a model or stage directory)")
    g.add_argument("--temperature", type=float,
                   help=f"logit distillation temperature (default: {d['temperature']:g})")
    if ranking:
        g.add_argument("--rank-weight", type=float,
                       help=f"alpha, weight of the ranking loss (default: {d['rank_weight']:g})")
        g.add_argument("--rank-k", type=positive_int,
                       help=f"teacher's top-K tokens with relevance (default: {d['rank_k']})")
        g.add_argument("--rank-layers", type=lambda t: tuple(int_list_or_zero(t)),
                       help="0-based student layers to distil the ranking into "
                            "(default: 1..L/3)")


def int_list_or_zero(text: str) -> list[int]:
    try:
        vals = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated layer numbers, got {text!r}"
                                         ) from None
    if not vals or min(vals) < 0:
        raise argparse.ArgumentTypeError(f"expected layer numbers >= 0, got {text!r}")
    return vals


def build_parser() -> argparse.ArgumentParser:
    from tp_search.pruning.train.train_settings import DistillSettings, FinetuneSettings, LtpSettings, TopSettings
    p = Parser(
        prog="tp-train", description=__doc__.split("\n\n")[0],
        epilog="Exit codes: 0 ok, 1 bad input, 2 usage, 3 latency target infeasible, "
               "130 interrupted (rerun to resume).",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="stage", required=True, metavar="STAGE")

    d = _defaults(FinetuneSettings)
    ft = sub.add_parser("finetune", help="fine-tune the dense model (the teacher)")
    ft.add_argument("--model", help="BERT-family checkpoint directory (default: bundled "
                                    "all-MiniLM-L6-v2, fresh classification head)")
    _training_flags(ft, d)

    d = _defaults(DistillSettings)
    ds = sub.add_parser("distill", help="ToP ranking + logit distillation into a dense student")
    ds.add_argument("--model", help="student initialisation (default: the teacher)")
    _distill_flags(ds, d)
    ds.add_argument("--prune-prob", type=float,
                    help=f"fraction of steps trained under a random static top-k schedule, so "
                         f"the student learns to work on pruned sequences (default: "
                         f"{d['prune_prob']:g}; 0 = ToP's plain distillation)")
    ds.add_argument("--min-ratio", type=float,
                    help=f"per-layer keep ratio of those schedules ~ U(min-ratio, 1) "
                         f"(default: {d['min_ratio']:g})")
    _training_flags(ds, d)

    d = {**_defaults(TopSettings), **_defaults(LtpSettings)}
    pr = sub.add_parser("prune", help="train a pruned model: --method top (a searched topk "
                                      "configuration) or ltp (learned thresholds)")
    pr.add_argument("--method", required=True, help="top or ltp")
    pr.add_argument("--model", help="the student to prune (the output of tp-train distill)")
    pr.add_argument("--latency-ms", type=float,
                    help="latency target (ms, batch 1) from this machine's table: top "
                         "constrains the prediction at --seq-len tokens; ltp scales its "
                         "thresholds so the mean prediction over dev examples meets it")
    _distill_flags(pr, d)
    top = pr.add_argument_group("ToP (--method top)")
    top.add_argument("--config", help="the searched topk configuration (best_config.json)")
    top.add_argument("--bins", type=positive_int, help=f"token gates per layer "
                                                       f"(default: {d['bins']})")
    top.add_argument("--target-sparsity", type=float,
                     help="MACs sparsity target (default: the configuration's)")
    top.add_argument("--target-warmup", type=float,
                     help=f"fraction of steps over which the target ramps and alpha decays "
                          f"(default: {d['target_warmup']:g})")
    top.add_argument("--gate-lr", type=float, help=f"default: {d['gate_lr']:g}")
    top.add_argument("--lambda-lr", type=float,
                     help=f"dual ascent step of the multipliers (default: {d['lambda_lr']:g})")
    top.add_argument("--penalty", type=float,
                     help=f"initial quadratic multiplier l2, damps the constraint "
                          f"(default: {d['penalty']:g})")
    ltp = pr.add_argument_group("LTP (--method ltp)")
    ltp.add_argument("--reg-lambda", type=float,
                     help=f"weight of the keep-mask regulariser (default: {d['reg_lambda']:g})")
    ltp.add_argument("--mask-temperature", type=float,
                     help="soft-mask temperature T (default: 0.125 / mean length)")
    ltp.add_argument("--final-threshold", type=float,
                     help="initial threshold of the last layer (default: 0.5 / mean length)")
    ltp.add_argument("--threshold-lr", type=float,
                     help="threshold learning rate (default: 0.01 / mean length)")
    ltp.add_argument("--soft-fraction", type=float,
                     help=f"fraction of steps in the soft phase (default: {d['soft_fraction']:g})")
    ltp.add_argument("--calib-samples", type=positive_int,
                     help=f"dev examples for the --latency-ms calibration "
                          f"(default: {d['calib_samples']})")
    _training_flags(pr, {**_defaults(DistillSettings), **d})
    return p


def _settings(cls: type, args: argparse.Namespace) -> Any:
    names = {f.name for f in fields(cls)}
    given = {k: v for k, v in vars(args).items() if k in names and v is not None}
    given["progress"] = not args.quiet
    return cls(**given)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging(args)
    return guarded("tp-train", lambda: _run(args))


def latency_model(s: Any) -> Any:
    """The latency predictor for the stage's model (this machine's table, or --machine's);
    None when there is none and the stage does not need one (metrics then go without)."""
    from tp_search.profiler import load_predictor  # entry point: wires the profiler into training

    from tp_search.pruning.model.checkpoint import checkpoint_config
    from tp_search.pruning.train.train_settings import resolve_model_arg
    shape = checkpoint_config(resolve_model_arg(s.model, "--model")).shape
    try:
        return load_predictor(shape, device=s.device, machine=s.machine, threads=s.threads,
                              batch=1, results=s.results)
    except TpError:
        if getattr(s, "latency_ms", None) is not None:
            raise
        return None


def _run(args: argparse.Namespace) -> int:
    from tp_search.pruning import train  # imports torch: not needed for --help
    require_device(args.device or "cpu")
    if args.stage == "finetune":
        s = _settings(train.FinetuneSettings, args)
        out = train.finetune(s, latency_model(s))
    elif args.stage == "distill":
        s = _settings(train.DistillSettings, args)
        out = train.distill(s, latency_model(s))
    else:
        method = args.method.lower()
        if method not in METHODS:
            raise TpError(f"unknown --method {args.method!r}: use top (ToP gates on a searched "
                          "configuration) or ltp (learned thresholds)")
        top_only = [f for f in ("config", "bins", "target_sparsity", "target_warmup",
                                "gate_lr", "lambda_lr", "penalty", "rank_weight", "rank_k", "rank_layers")
                    if getattr(args, f) is not None]
        ltp_only = [f for f in ("reg_lambda", "mask_temperature", "final_threshold",
                                "threshold_lr", "soft_fraction", "calib_samples")
                    if getattr(args, f) is not None]
        wrong = ltp_only if method == "top" else top_only
        if wrong:
            raise TpError(f"--{wrong[0].replace('_', '-')} does not apply to --method {method}")
        if method == "top":
            s = _settings(train.TopSettings, args)
            out = train.prune_top(s, latency_model(s) if s.model else None)
        else:
            s = _settings(train.LtpSettings, args)
            out = train.prune_ltp(s, latency_model(s) if s.model else None)
    _report(Path(out))
    return 0


def _report(out: Path) -> None:
    m = json.loads((out / "metrics.json").read_text())
    rows = [("stage", m["stage"]), ("output", str(out / "model")),
            (f"dev {m['primary']}", f"{m['score']:.4f} ({m['dev_examples']} examples)"),
            ("MACs reduction", f"{m['macs']['reduction_real']:.2f}x real lengths, "
                               f"{m['macs']['reduction_padded']:.2f}x padded")]
    if "latency" in m and "speedup" in m["latency"]:
        rows.append(("predicted speedup", f"{m['latency']['speedup']:.2f}x at "
                                          f"{m['latency']['seq_len']} tokens"))
    elif "latency" in m:
        rows.append(("predicted speedup", f"{m['latency']['dev_speedup']:.2f}x on dev lengths"))
    rows.append(("train time", f"{m['train_time_s']:.0f} s, {m['steps']} steps"))
    print_table(rows)


if __name__ == "__main__":
    sys.exit(main())
