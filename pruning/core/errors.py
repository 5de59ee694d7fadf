"""User-facing errors: one line naming the problem and the fix, mapped to exit codes."""
from __future__ import annotations

# Exit codes shared by every tp-* command (documented in the README).
EXIT_OK = 0
EXIT_ERROR = 1  # bad input: missing file, wrong shape, malformed config ...
EXIT_USAGE = 2  # argparse usage error
EXIT_INFEASIBLE = 3  # no configuration can meet the requested constraint
EXIT_INTERRUPTED = 130


class TpError(Exception):
    """An input problem the user can fix; CLIs print it as one line and exit non-zero."""

    exit_code = EXIT_ERROR


class InfeasibleError(TpError):
    """The constraint cannot be met by any configuration in the space."""

    exit_code = EXIT_INFEASIBLE
