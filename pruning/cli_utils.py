"""What every tp-* command shares: logging flags, one-line errors, exit codes, output formats."""
from __future__ import annotations

import argparse
import json
import logging
import sys
from typing import Any, Callable

from .errors import EXIT_INTERRUPTED, TpError

log = logging.getLogger("tp")


def add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument("-v", "--verbose", action="count", default=0, help="more log output")
    p.add_argument("-q", "--quiet", action="store_true", help="only errors on stderr")


def setup_logging(args: argparse.Namespace) -> None:
    level = logging.ERROR if args.quiet else (logging.DEBUG if args.verbose > 1 else
                                              logging.INFO)
    logging.basicConfig(level=level, format="%(message)s", stream=sys.stderr, force=True)
    for noisy in ("transformers", "optuna", "huggingface_hub", "matplotlib"):
        logging.getLogger(noisy).setLevel(max(level, logging.WARNING))


def guarded(prog: str, body: Callable[[], int]) -> int:
    """Run a command body; user errors become one line on stderr and their exit code."""
    try:
        return body()
    except TpError as e:
        print(f"{prog}: error: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print(f"{prog}: interrupted; finished work is kept and a rerun resumes", file=sys.stderr)
        return EXIT_INTERRUPTED


def positive_int(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if v < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {v}")
    return v


def int_list(text: str) -> list[int]:
    try:
        vals = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None
    if not vals or min(vals) < 1:
        raise argparse.ArgumentTypeError(f"expected positive integers, got {text!r}")
    return vals


def dump_json(obj: Any) -> str:
    return json.dumps(obj, indent=2, default=float) + "\n"


def print_table(rows: list[tuple[str, str]]) -> None:
    width = max(len(k) for k, _ in rows)
    for k, v in rows:
        print(f"{k:<{width}}  {v}")
