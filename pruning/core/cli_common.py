"""What every tp-* command shares: logging flags, one-line errors, exit codes, output formats."""
from __future__ import annotations

import argparse
import json
import logging
import re
import sys
from typing import Any, Callable, NoReturn

from tp_search.pruning.core.errors import EXIT_INTERRUPTED, EXIT_USAGE, TpError

log = logging.getLogger("tp")


class Parser(argparse.ArgumentParser):
    """argparse whose usage errors are one line: the problem, and where to read more."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def device(text: str) -> str:
    """``--device``: cpu, cuda or cuda:N (checked for availability when the command runs)."""
    d = text.strip().lower()
    if d == "cpu" or re.fullmatch(r"cuda(:\d+)?", d):
        return d
    raise argparse.ArgumentTypeError(f"unknown device {text!r}: use cpu, cuda or cuda:N")


def require_device(name: str) -> None:
    """Refuse a CUDA device torch cannot see, before any model is built on it."""
    if not name.startswith("cuda"):
        return
    import torch  # at run time only: CLI modules stay torch-free for --help
    if not torch.cuda.is_available():
        raise TpError(f"--device {name}: no CUDA device visible to torch; use --device cpu")
    index = int(name.split(":")[1]) if ":" in name else 0
    if index >= torch.cuda.device_count():
        raise TpError(f"--device {name}: torch sees {torch.cuda.device_count()} CUDA "
                      "device(s); pick one of them")


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


def name_list(text: str) -> list[str]:
    """A comma-separated list of names, e.g. ``--backend torch,ort``."""
    names = [m.strip() for m in text.split(",") if m.strip()]
    if not names:
        raise argparse.ArgumentTypeError("expected one or more names, comma-separated")
    return names


def dump_json(obj: Any) -> str:
    return json.dumps(obj, indent=2, default=float) + "\n"


def print_table(rows: list[tuple[str, str]]) -> None:
    width = max(len(k) for k, _ in rows)
    for k, v in rows:
        print(f"{k:<{width}}  {v}")
