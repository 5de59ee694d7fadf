"""Atomic file writes: a crash or Ctrl-C never leaves a half-written output behind.

Temporary files and directories are created private (``mkstemp`` 0600, ``mkdtemp`` 0700);
what is published gets the permissions the user's umask gives a normally created file or
directory, so a service running as another user can read a deployed model.
"""
from __future__ import annotations

import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator


def current_umask() -> int:
    mask = os.umask(0)  # the only portable way to read it: set it and put it back
    os.umask(mask)
    return mask


def apply_umask(path: Path) -> None:
    """Give ``path`` (recursively, for a directory) the modes ``open``/``mkdir`` would."""
    mask = current_umask()
    path = Path(path)
    items = [path] + (list(path.rglob("*")) if path.is_dir() else [])
    for p in items:
        if p.is_symlink():
            continue
        os.chmod(p, (0o777 if p.is_dir() else 0o666) & ~mask)


def atomic_write_text(path: Path, text: str) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        apply_umask(Path(tmp))
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


@contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """Yield a temporary sibling path; on success it replaces ``path`` (file or directory)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp"))
    target = tmp / "out"
    try:
        yield target
        apply_umask(target)
        if path.is_dir() and not path.is_symlink():
            old = path.with_name(f".{path.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            os.replace(path, old)
            os.replace(target, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(target, path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def atomic_file(path: Path, suffix: str = ".tmp") -> Iterator[Path]:
    """A temporary sibling file name for a writer that takes a path (``torch.save``,
    ``savefig``); on success it replaces ``path`` with the umask's permissions."""
    return _atomic_file(Path(path), suffix)


@contextmanager
def _atomic_file(path: Path, suffix: str) -> Iterator[Path]:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=suffix)
    os.close(fd)
    try:
        yield Path(tmp)
        apply_umask(Path(tmp))
        os.replace(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)


def atomic_save_figure(fig: "object", path: Path, dpi: int = 120) -> None:
    """``fig.savefig`` to a unique temporary name, then rename: two writers of the same
    report never leave a torn PNG."""
    with atomic_file(path, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=dpi)
