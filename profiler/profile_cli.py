"""tp-profile: build this machine's latency lookup tables and validate the predictor."""
from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path
from typing import Any

from tp_search.pruning.core.cli_common import (
    Parser,
    add_common,
    device,
    dump_json,
    guarded,
    int_list,
    name_list,
    positive_int,
    print_table,
    require_device,
    setup_logging,
)
from tp_search.pruning.core.errors import TpError
from tp_search.pruning.core.atomic import atomic_write_text
from tp_search.pruning.model.archs import ARCHS
from tp_search.pruning.runtime.registry import REFERENCE, help_text

from tp_search.profiler.build_settings import BuildSettings, MeasureSettings

log = logging.getLogger("tp.profiler")


def build_parser() -> argparse.ArgumentParser:
    p = Parser(
        prog="tp-profile",
        description="Measure per-layer latency lookup tables for a model shape on this machine "
                    "(keyed by a hardware fingerprint) and validate the latency predictor "
                    "against end-to-end timings of random pruning schedules. Interrupted runs "
                    "resume; an existing table is reused unless --force.")
    src = p.add_mutually_exclusive_group()
    src.add_argument("--model", help="HF BERT-family checkpoint directory (default: bundled "
                                     "all-MiniLM-L6-v2)")
    src.add_argument("--arch", choices=sorted(ARCHS), help="a named shape with random weights "
                     "(latency does not depend on the weights)")
    p.add_argument("--device", type=device, default="cpu",
                   help="cpu, cuda or cuda:N (default: cpu)")
    p.add_argument("--backend", type=name_list, default=[REFERENCE],
                   help=f"runtimes to profile, comma-separated, one table each: {help_text()} "
                        f"(default: {REFERENCE})")
    p.add_argument("--threads", type=int_list, default=[1], help="thread counts, e.g. 1,2")
    p.add_argument("--batch", type=int_list, default=[1], help="batch sizes, e.g. 1,8")
    p.add_argument("--max-len", type=positive_int, default=512,
                   help="largest token count in the grid (default: %(default)s)")
    p.add_argument("--grid", help="explicit token counts, e.g. 1,2,4,8,16,32,64,128 "
                                  "(default: dense below 16, coarser above)")
    p.add_argument("--out", default=None, help="results directory (default: results/, or "
                                               "$TP_SEARCH_RESULTS)")
    redo = p.add_mutually_exclusive_group()
    redo.add_argument("--force", action="store_true",
                      help="re-measure the asked batch sizes and thread counts even if the "
                           "table has them")
    redo.add_argument("--recalibrate", action="store_true",
                      help="keep the measured grid, refit only the calibration against new "
                           "full passes (seconds)")
    d = MeasureSettings()
    p.add_argument("--point-budget", type=float, default=d.point_budget_s,
                   help="seconds of repeats per grid point (default: %(default)s)")
    p.add_argument("--min-repeats", type=positive_int, default=d.min_repeats,
                   help="passes per grid point at least (default: %(default)s)")
    p.add_argument("--quiet-wait", type=float, default=d.quiet_wait_s,
                   help="when other processes load the CPU during a point, wait up to this "
                        "many seconds for quiet before re-measuring; still busy after the "
                        "retries, the entry is flagged (default: %(default)s)")
    p.add_argument("--sweeps", type=positive_int, default=None,
                   help="passes over the grid, each point's repeats split across them "
                        "(default: 1 at one thread, 3 at more: multi-thread timings on a "
                        "shared VM drift for tens of seconds at a time)")
    p.add_argument("--validate", action="store_true",
                   help="measure random pruned schedules end to end and report prediction error")
    p.add_argument("--samples", type=positive_int, default=50, help="validation schedules")
    p.add_argument("--seq-len", type=int_list, default=[128],
                   help="validation sequence lengths, e.g. 128,384")
    p.add_argument("--format", choices=("table", "json"), default="table")
    p.add_argument("--seed", type=int, default=0)
    add_common(p)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging(args)
    return guarded("tp-profile", lambda: _run(args))


def _check_writable(res: Path) -> None:
    try:
        res.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise TpError(f"--out {res}: cannot create it ({e.strerror}); choose a writable "
                      "directory") from None
    if not os.access(res, os.W_OK):
        raise TpError(f"--out {res}: not writable; choose a writable directory")


def _run(args: argparse.Namespace) -> int:
    # imported here, not at the top: they load torch, which --help does not need
    from tp_search.pruning.measure.memory import check_fits
    from tp_search.pruning.model.checkpoint import from_pretrained, random_model
    from tp_search.pruning.runtime import require_available

    from tp_search.profiler.fingerprint import fingerprint
    from tp_search.profiler.store import results_dir
    from tp_search.profiler.table import parse_grid
    require_device(args.device)
    for b in args.backend:
        require_available(b)  # an unknown or unavailable backend fails before any measuring
    model = random_model(args.arch) if args.arch else from_pretrained(args.model, tokenizer=False)
    if args.max_len > model.config.max_len and not args.recalibrate:
        raise TpError(f"--max-len {args.max_len} exceeds the model's "
                      f"{model.config.max_len} positions")
    check_fits(model.shape, max(args.batch), args.max_len, "--batch or --max-len")
    grid = parse_grid(args.grid, args.max_len) if args.grid else None
    res = results_dir(args.out)
    _check_writable(res)
    fp = fingerprint(args.device)
    tables = [_profile(args, model, fp, res, grid, b) for b in args.backend]
    summary = {"machine_id": fp.machine_id, "tables": tables}
    if len(tables) == 1:  # one backend: its summary at the top level, as before
        summary.update(tables[0])
    if args.format == "json":
        sys.stdout.write(dump_json(summary))
        return 0
    rows = [("machine", fp.machine_id)]
    for tab in tables:
        rows.append((f"table ({tab['backend']})", tab["table"]))
        for k, c in tab["calibration"].items():
            rows.append((f"  calibration {k}", f"scale {c['scale']:.3f}, offset "
                         f"{c['offset_ms']:.3f} ms, built in {c.get('total_seconds', '?')} s"))
        for v in tab.get("validation", []):
            rows.append((f"  validation b{v['batch']} t{v['threads']} n{v['seq_len']}",
                         f"median |err| {v['median_abs_error']:.1%}, p90 {v['p90_abs_error']:.1%},"
                         f" within 10%: {v['within_10pct']:.0%} of {v['samples']} (machine spread "
                         f"{v['machine_spread']:.1%}; relative to dense: median "
                         f"{v['relative_median_abs_error']:.1%}, within 10% "
                         f"{v['relative_within_10pct']:.0%})"))
    print_table(rows)
    return 0


def _profile(args: argparse.Namespace, model: Any, fp: Any, res: Path, grid: Any,
             backend: str) -> dict[str, Any]:
    """Build (or recalibrate) and validate one backend's table; returns its summary."""
    import torch  # here: the CLI module stays torch-free for --help

    from tp_search.profiler.build import build_table, recalibrate_table
    from tp_search.profiler.fingerprint import Fingerprint
    from tp_search.profiler.predictor import Predictor
    from tp_search.profiler.store import table_path
    from tp_search.profiler.table import LatencyTable
    from tp_search.profiler.validate import store_validation, validate
    path = table_path(res, fp.machine_id, model.shape, backend)
    existing = LatencyTable.load(path) if path.is_file() else None
    was = Fingerprint.from_dict(existing.machine).torch if existing is not None else fp.torch
    if was != fp.torch and not args.force:
        log.warning("existing table was measured with torch %s (now %s); pass --force to "
                    "re-measure", was, fp.torch)
    s = BuildSettings(batches=args.batch, threads=args.threads, max_len=args.max_len,
                      grid=grid, device=args.device, force=args.force, seed=args.seed,
                      backend=backend,
                      measure=MeasureSettings(min_repeats=args.min_repeats,
                                              point_budget_s=args.point_budget,
                                              quiet_wait_s=args.quiet_wait,
                                              sweeps=args.sweeps))
    log.info("machine %s; profiling %s for batch %s, threads %s, up to %d tokens",
             fp.machine_id, path.stem, args.batch, args.threads, args.max_len)
    if args.recalibrate:
        if existing is None:
            raise TpError(f"--recalibrate: no table at {path}; build one first (drop "
                          "--recalibrate)")
        table = recalibrate_table(model, existing, res, s)
    else:
        table = build_table(model, fp, res, s, existing)
    summary: dict[str, Any] = {"backend": backend, "machine_id": fp.machine_id,
                               "table": str(path), "combos": table.combos(),
                               "calibration": table.calibration}
    if not args.validate:
        return summary
    summary["validation"] = []
    for b in args.batch:
        for t in args.threads:
            torch.set_num_threads(t)
            pred = Predictor(table, batch=b, threads=t)
            mine = []
            for n in args.seq_len:
                if n > pred.max_len:
                    raise TpError(f"--seq-len {n} is above the table's {pred.max_len} tokens")
                df, v = validate(model, pred, n, args.samples, args.device, seed=args.seed)
                out = path.parent / f"{path.stem}-validate-b{b}-t{t}-n{n}"
                atomic_write_text(Path(f"{out}.csv"), df.to_csv(index=False))
                d = v.to_dict() | {"machine_id": fp.machine_id, "shape": path.stem,
                                   "backend": backend,
                                   "calibration": table.calibration.get(f"b{b}-t{t}")}
                atomic_write_text(Path(f"{out}.json"), json.dumps(d, indent=2) + "\n")
                summary["validation"].append(d)
                mine.append(d)
            store_validation(table, res, f"b{b}-t{t}", mine)  # the plan reads it
    return summary


if __name__ == "__main__":
    sys.exit(main())
