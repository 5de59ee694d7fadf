"""tp-search: find the most accurate token-pruning configuration under a latency target.

A thin wrapper: ``add_search_args`` builds the flags (reusable by the end-to-end pipeline),
``settings_from_args`` turns them into ``SearchSettings``, ``run_search`` does the work.
"""
from __future__ import annotations

import argparse
import signal
import sys
from contextlib import contextmanager
from typing import TYPE_CHECKING, Iterator

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
from tp_search.pruning.core.errors import EXIT_INFEASIBLE
from tp_search.pruning.runtime.registry import help_text

if TYPE_CHECKING:  # pragma: no cover
    from tp_search.search.result import SearchResult
    from tp_search.search.search_settings import SearchSettings

EPILOG = f"""\
exit codes: 0 success (also when the dense model already meets the target: no search
runs), 1 bad input (checked before any stage: missing latency table, unknown machine, bad
file, a flag the model or task cannot take), 2 usage error, {EXIT_INFEASIBLE} infeasible target
(below the fastest latency the search space can reach, or no contender measured within it
after --refits rounds: the report says which and by how much), 130 interrupted (rerun the
same command to resume).

The target holds for --percentile of the --workload's request latency, *measured*: the
search plans each backend's prediction under the target over that backend's tail, then
measures the contenders on this machine before one is chosen, trained and deployed.
"""


def positive_float(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}") from None
    if not v > 0:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}")
    return v


class DeprecatedAlias(argparse.Action):
    """An old flag name that still works, with a warning naming the new one."""

    def __call__(self, parser, namespace, values, option_string=None):  # noqa: ARG002
        new = next(o for o in parser._option_string_actions if o != option_string
                   and parser._option_string_actions[o].dest == self.dest)
        print(f"{parser.prog}: warning: {option_string} is deprecated; use {new}",
              file=sys.stderr)
        setattr(namespace, self.dest, values)


def machine_list(text: str) -> list[str]:
    ids = [m.strip() for m in text.split(",") if m.strip()]
    if not ids:
        raise argparse.ArgumentTypeError("expected one or more machine ids, comma-separated")
    return ids


def length_list(text: str) -> list[int]:
    if text.strip().lower() == "none":
        return [0]
    try:
        vals = sorted({int(x) for x in text.split(",") if x.strip()})
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated token counts or none, got "
                                         f"{text!r}") from None
    if not vals or vals[0] < 0:
        raise argparse.ArgumentTypeError(f"expected token counts >= 0, got {text!r}")
    return vals


def add_search_args(p: argparse.ArgumentParser) -> None:
    """Every tp-search flag except -v/-q and --format (callers add those once)."""
    t = p.add_argument_group("target and workload")
    t.add_argument("--latency-ms", type=positive_float, required=True,
                   help="latency target (ms) at --percentile of the --workload's requests")
    t.add_argument("--macs-reduction", type=positive_float, metavar="R",
                   help="also require a MACs reduction >= R at the workload")
    t.add_argument("--flops-reduction", type=positive_float, metavar="R",
                   dest="macs_reduction", action=DeprecatedAlias,
                   help="deprecated alias of --macs-reduction (the constraint counts MACs)")
    t.add_argument("--seq-len", type=positive_int,
                   help="workload max length: the constraint holds for an input of this many "
                        "real tokens, and the proxy evaluation truncates to it (default: the "
                        "task's max length, 128 for rotten_tomatoes)")
    t.add_argument("--workload", choices=("max", "dev"), default="max",
                   help="max: every request is one input of --seq-len real tokens (the "
                        "worst case); dev: the task's real dev inputs truncated to --seq-len "
                        "(default: max)")
    t.add_argument("--percentile", type=positive_float, default=90.0,
                   help="the target holds for this percentile of request latency, predicted "
                        "and measured (default 90)")
    t.add_argument("--batch", type=positive_int, default=1, help="workload batch (default 1)")
    t.add_argument("--threads", type=positive_int, default=1,
                   help="workload threads (default 1)")
    t.add_argument("--device", type=device, default="cpu",
                   help="cpu, cuda or cuda:N (default: cpu)")
    t.add_argument("--machine", type=machine_list, default=[],
                   help="plan for these machines' latency tables (comma-separated ids; "
                        "default: this machine). With several: candidates feasible on any "
                        "are evaluated once, NSGA-II minimises the first one's latency, and "
                        "each machine gets the most accurate trial feasible on it "
                        "(best_config.<id>.json, machines.csv)")
    t.add_argument("--results", help="latency tables root (default: results, or "
                                     "$TP_SEARCH_RESULTS)")
    m = p.add_argument_group("model and data")
    m.add_argument("--task", default="bbc_news",
                   help="rotten_tomatoes, bbc_news, a GLUE task dir, a CSV/TSV file or a dir "
                        "of train/dev CSVs (default: %(default)s)")
    m.add_argument("--model", help="checkpoint to deploy (default: bundled all-MiniLM-L6-v2)")
    m.add_argument("--proxy-model", help="checkpoint whose static top-k metric ranks the "
                                         "candidates, e.g. a ranking-distilled one "
                                         "(default: --model)")
    m.add_argument("--dense-model", help="checkpoint that scores candidates which prune no "
                                         "token (the levers alone), e.g. the fine-tuned "
                                         "teacher when --proxy-model is a distilled student "
                                         "(default: --proxy-model); the main job deploys "
                                         "it when such a candidate wins")
    m.add_argument("--eval-samples", type=positive_int,
                   help="held-out train examples every trial's proxy metric is scored on "
                        "(default: the task's budget: 300; 200 for bbc_news)")
    m.add_argument("--holdout", type=positive_int,
                   help="train examples held out of every training stage for the proxy; "
                        "contenders are re-scored on all of them before one is chosen "
                        "(default: the task's budget: 600; 400 for bbc_news; at most a third "
                        "of a small train set). Never dev: dev reports accuracy")
    m.add_argument("--eval-threads", type=positive_int,
                   help="torch threads for the proxy evaluation (default: --threads, which "
                        "also suits several workers on one machine)")
    s = p.add_argument_group("search")
    s.add_argument("--backend", type=name_list, default=[],
                   help=f"runtimes to search over, comma-separated: {help_text()} (default: "
                        "every one that runs here, with a latency table for this machine; "
                        "the main job profiles the missing tables)")
    s.add_argument("--truncation", type=length_list,
                   help="max input lengths to search over, e.g. 512,384,256,128, or none "
                        "(default: 1, 3/4, 1/2, 3/8 and 1/4 of --seq-len)")
    s.add_argument("--trials", type=positive_int, default=100,
                   help="finished trials in the study in total (evaluated, or rejected by "
                        "the predictor at ~1 ms each), resumed runs and other workers "
                        "included: a rerun runs only the missing ones (default 100)")
    s.add_argument("--population", type=positive_int, default=20,
                   help="NSGA-II population size (default 20)")
    s.add_argument("--seed", type=int, default=0, help="search and dev-subset seed")
    s.add_argument("--layers", type=int_list, default=[],
                   help="candidate pruning layers, e.g. 1,2,3 (default: all but layer 0)")
    s.add_argument("--min-ratio", type=positive_float, default=0.2,
                   help="smallest fraction a pruning layer keeps of its input (default 0.2)")
    s.add_argument("--max-ratio", type=positive_float, default=0.95,
                   help="largest such fraction (default 0.95)")
    s.add_argument("--floor", type=positive_float, default=0.02,
                   help="smallest keep fraction of the real length (default 0.02)")
    o = p.add_argument_group("storage and outputs")
    o.add_argument("--out", help="output directory (default: "
                                 "runs/<task>-<model>-<machine>-<target>ms)")
    o.add_argument("--storage", help="Optuna RDB URL shared by workers, e.g. "
                                     "postgresql://user:pw@host/db (default: sqlite "
                                     "<out>/study.db). Workers join the same study when they "
                                     "run the same settings (same --machine ids, model, task)")
    o.add_argument("--study-name", help="study name (default: derived from the settings, so "
                                        "the same command resumes the same study)")
    o.add_argument("--no-measure", action="store_true",
                   help="choose on predictions alone: do not measure the contenders on this "
                        "machine before choosing")
    o.add_argument("--repeats", type=positive_int, default=30,
                   help="timed rounds of every measurement (default 30)")
    o.add_argument("--verify", type=positive_int, default=4,
                   help="contenders measured before choosing, per round (default 4)")
    o.add_argument("--refits", type=int, default=2,
                   help="when no contender measures within the target: rounds of refitting "
                        "the predictions from the measurements and searching again before "
                        f"stopping with exit code {EXIT_INFEASIBLE} (default 2)")
    o.add_argument("--margin", type=float, default=0.05,
                   help="plan every backend's prediction under target x (1 - margin) at "
                        "least; the plan is target / (tail x (1 + validated error)) where "
                        "that is lower (default 0.05)")


def add_pipeline_args(p: argparse.ArgumentParser) -> None:
    """The main job's stages around the search (profile, teacher, distill, train, measure)."""
    g = p.add_argument_group(
        "pipeline (default: profile -> fine-tune teacher -> ranking distillation -> search "
        "-> train the chosen configuration -> measure)")
    g.add_argument("--search-only", action="store_true",
                   help="only the search, on --model as given (no profiling or training)")
    g.add_argument("--no-train", action="store_true",
                   help="stop after the search (the teacher and distilled proxy are still made)")
    g.add_argument("--method", choices=("top", "ltp", "auto"), default="top",
                   help="the pruning policy searched and trained: top (ToP: top-k schedules, "
                        "trained with L0 gates), ltp (LTP: input-adaptive thresholds, their "
                        "latency predicted request by request from the counts they keep on "
                        "the workload's inputs), or auto (both: the search chooses) "
                        "(default: top)")
    g.add_argument("--teacher", help="an already fine-tuned teacher: skip fine-tuning")
    g.add_argument("--cache", help="where the teacher and distilled student are kept "
                   "(default: cache/<task>-<model>-seed<seed>-h<holdout>-n<train length> "
                   "under the runs root, or under --out when given)")
    g.add_argument("--finetune-epochs", type=positive_float,
                   help="teacher fine-tuning epochs (default: the task's budget, 1)")
    g.add_argument("--distill-epochs", type=positive_float,
                   help="ranking distillation epochs (default: the task's budget: 1; 0.5 "
                        "for bbc_news)")
    g.add_argument("--prune-epochs", type=positive_float,
                   help="final training epochs (default: as --distill-epochs)")
    g.add_argument("--train-max-len", type=positive_int,
                   help="the training stages truncate inputs to this many tokens (default: "
                        "the task's budget: 256 for bbc_news, else --seq-len); the teacher's "
                        "reference metric, the search and the measurement use --seq-len")
    g.add_argument("--rank-weight", type=float,
                   help="ranking distillation weight alpha in the distill and train stages "
                        "(default 0.02; 0: logit distillation only, the ablation)")
    g.add_argument("--max-steps", type=positive_int,
                   help="cap every training stage at this many steps (smoke runs)")
    g.add_argument("--train-precision", choices=("auto", "fp32", "bf16"), default="auto",
                   help="matmul precision of the training stages: bf16 autocast with fp32 "
                        "master weights where the CPU has native bf16 (auto), or as asked "
                        "(default: auto)")
    g.add_argument("--max-loss", type=positive_float, default=1.0,
                   help="the accuracy verdict: within this many points of the fp32 teacher "
                        "only when the 95%% interval of the difference excludes a larger "
                        "loss (default 1.0)")
    g.add_argument("--final-eval-samples", type=int, default=0,
                   help="dev examples for the final metric (default 0 = all)")


def pipeline_from_args(args: argparse.Namespace):
    from tp_search.search.pipeline.main_job import PipelineSettings
    return PipelineSettings(
        search=settings_from_args(args), method=args.method, train=not args.no_train,
        teacher=args.teacher, cache=args.cache, finetune_epochs=args.finetune_epochs,
        distill_epochs=args.distill_epochs, prune_epochs=args.prune_epochs,
        max_steps=args.max_steps, final_eval_samples=args.final_eval_samples,
        train_max_len=args.train_max_len, rank_weight=args.rank_weight,
        train_precision=args.train_precision, max_loss=args.max_loss)


def settings_from_args(args: argparse.Namespace) -> "SearchSettings":
    from tp_search.search.search_settings import SearchSettings
    return SearchSettings(
        latency_ms=args.latency_ms, task=args.task, model=args.model,
        proxy_model=args.proxy_model, dense_model=args.dense_model,
        machines=tuple(args.machine), results=args.results,
        seq_len=args.seq_len, workload=args.workload, percentile=args.percentile,
        backends=tuple(args.backend),
        truncation=None if args.truncation is None else tuple(args.truncation),
        batch=args.batch, threads=args.threads, device=args.device,
        min_macs_reduction=args.macs_reduction, trials=args.trials, population=args.population,
        eval_samples=args.eval_samples, holdout=args.holdout, eval_threads=args.eval_threads,
        seed=args.seed, margin=args.margin, verify=args.verify, refits=args.refits,
        out=args.out, storage=args.storage, study_name=args.study_name,
        measure=not args.no_measure, repeats=args.repeats,
        policies={"top": ("topk",), "ltp": ("threshold",),
                  "auto": ("topk", "threshold")}[args.method],
        layers=tuple(args.layers), min_ratio=args.min_ratio, max_ratio=args.max_ratio,
        floor=args.floor, progress=not args.quiet)


def build_parser() -> argparse.ArgumentParser:
    p = Parser(
        prog="tp-search", epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter,
        description="The main job: profile this machine, fine-tune a teacher, distil its\n"
                    "token ranking into early layers, search, train the chosen configuration\n"
                    "and measure it (--no-train stops after the search). --search-only:\n"
                    "search which layers prune and how many tokens each keeps (coarse to\n"
                    "fine, NSGA-II), maximising the dev metric of static top-k pruning (no\n"
                    "retraining) under a predicted-latency target from this machine's (or\n"
                    "--machine's) latency table. Resumable; workers may share one --storage.")
    add_search_args(p)
    add_pipeline_args(p)
    p.add_argument("--format", choices=("table", "json"), default="table",
                   help="summary on stdout (logs go to stderr)")
    add_common(p)
    return p


@contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """``kill`` (SIGTERM) ends the run like Ctrl-C: the running trial is marked FAIL."""
    def handler(signum, frame):  # noqa: ARG001
        raise KeyboardInterrupt
    try:
        old = signal.signal(signal.SIGTERM, handler)
    except ValueError:  # not the main thread
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, old)


def summary_rows(r: "SearchResult") -> list[tuple[str, str]]:
    status = {"dense": "dense model meets the target (no search)",
              "missed": "NO CONTENDER MEASURED WITHIN THE TARGET"}
    rows = [("status", status.get(r.status, f"searched ({r.stats.get('complete', 0)} "
                                            "complete trials)")),
            ("workload", r.workload_text()),
            ("target", f"{r.target_ms:g} ms at p{r.workload.percentile:g}"
                       + (f", MACs reduction >= {r.settings.min_macs_reduction:g}x"
                          if r.settings.min_macs_reduction else ""))]
    for c in r.choices:
        rows += [(f"{c.machine_id}", c.candidate.describe()),
                 ("  predicted", f"{c.latency_ms:.3f} ms, plan {c.limit_ms:.3f} ms (dense "
                                 f"{c.dense_ms:.3f} ms); over dev lengths "
                                 f"{c.expected_ms or float('nan'):.3f} ms"),
                 ("  proxy " + r.metric_name, f"{c.metric:.4f} (dense {r.dense_metric:.4f})"),
                 ("  MACs reduction", f"{c.macs['workload']:.2f}x at the workload, "
                                      f"{c.macs['real']:.2f}x dev real lengths, "
                                      f"{c.macs['padded']:.2f}x vs padded to {r.seq_len}")]
        m = c.measurement
        rows.append(("  measured", c.measure_note if m is None else
                     f"p{m.percentile:g} {m.chosen_ms:.3f} ms, median "
                     f"{m.chosen.median_ms:.3f} ms (dense on {c.backend} "
                     f"{m.dense.median_ms:.3f} ms), prediction error {m.error_pct:+.1f}%"
                     + ("" if m.meets_target else " -- MISSES THE TARGET")))
    rows += [("seed", str(r.settings.seed)), ("outputs", str(r.out_dir))]
    return rows


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging(args)
    return guarded("tp-search", lambda: _run(args))


def _run(args: argparse.Namespace) -> int:
    require_device(args.device)
    from tp_search.search.run import run_search
    if not args.search_only:
        from tp_search.search.pipeline.main_job import run_pipeline
        with sigterm_as_interrupt():
            res = run_pipeline(pipeline_from_args(args))
        if args.format == "json":
            sys.stdout.write(dump_json(res.summary))
        else:
            sys.stdout.write((res.run_dir / "report.md").read_text())
        return 0
    with sigterm_as_interrupt():
        result = run_search(settings_from_args(args))
    if args.format == "json":
        sys.stdout.write(dump_json(result.to_dict()))
    else:
        print_table(summary_rows(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
