"""One run, one directory: a run's identity covers every setting that changes its result,
the checkpoints' and the data's *content* included, and is kept in ``run.json``.

The same command again resumes in the same directory. A run with other settings gets a
directory of its own: the default name carries a short digest of whatever differs from the
defaults (``...-20ms`` for ``make run``; ``...-20ms-s1a2b3c4d`` for ``--seq-len 384``); an
explicit ``--out`` holding another run is refused with one line naming the settings that
differ. Nothing of another run is ever overwritten.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Mapping

from tp_search.pruning.core.atomic import atomic_write_text
from tp_search.pruning.core.errors import TpError

RUN_FILE = "run.json"
FORMAT = "tp-search/run"
NAMED_BY = ("task", "model_label", "machines", "latency_ms")  # already in the default name


def differences(a: Mapping[str, Any], b: Mapping[str, Any]) -> list[str]:
    return [k for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)]


def default_name(base: Path, identity: Mapping[str, Any], defaults: Mapping[str, Any]) -> Path:
    """``base``, or ``base-s<digest>`` when the identity differs from the defaults' beyond
    what the base name already says."""
    diff = {k: identity.get(k) for k in differences(identity, defaults) if k not in NAMED_BY}
    if not diff:
        return base
    tag = hashlib.sha1(json.dumps(diff, sort_keys=True, default=str).encode()).hexdigest()[:8]
    return base.with_name(f"{base.name}-s{tag}")


def claim(run_dir: Path, identity: Mapping[str, Any], explicit: bool) -> None:
    """Make ``run_dir`` this run's, or refuse: a file, another run's directory, or (for an
    explicit --out) a directory tp-search did not make."""
    if run_dir.exists() and not run_dir.is_dir():
        raise TpError(f"--out {run_dir} is a file; pass a directory (new, or one this command "
                      "made before)")
    f = run_dir / RUN_FILE
    if f.is_file():
        try:
            stored = json.loads(f.read_text()).get("identity", {})
        except json.JSONDecodeError:
            raise TpError(f"{f} is unreadable; pass another --out or delete {run_dir}") from None
        diff = differences(stored, identity)
        if diff:
            shown = "; ".join(f"{k}: {_short(stored.get(k))} there, {_short(identity.get(k))} "
                              f"now" for k in diff[:4])
            more = f" (and {len(diff) - 4} more)" if len(diff) > 4 else ""
            raise TpError(f"{run_dir} holds a run with other settings ({shown}{more}); pass "
                          "another --out, or delete that directory to redo it")
        return
    if explicit and run_dir.is_dir() and any(run_dir.iterdir()):
        raise TpError(f"--out {run_dir} exists and is not a tp-search run directory (no "
                      f"{RUN_FILE}); pass a new or empty directory")
    run_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(f, json.dumps({"format": FORMAT, "version": 1,
                                     "identity": dict(identity)}, indent=2, default=str) + "\n")


def _short(v: Any) -> str:
    text = json.dumps(v, default=str) if not isinstance(v, str) else v
    return text if len(text) <= 40 else text[:37] + "..."
