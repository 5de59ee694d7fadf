"""Backends a pruned encoder runs on, behind one registry; export, deployment, loading.

    runner = get_backend("ort-int8").build(model, cfg, threads=1)
    logits = runner(batch)

``registry.py`` names the backends (torch-free, for ``--help``); each backend's module
implements ``base.Backend`` and is imported only when that backend is asked for.
"""
from __future__ import annotations

import importlib
import importlib.util
from typing import TYPE_CHECKING

from ..core.errors import TpError
from ..core.lazy import lazy_exports
from .registry import REFERENCE, SPECS, help_text, names, spec  # noqa: F401 (re-exported)

if TYPE_CHECKING:  # pragma: no cover
    from .base import Backend

_CACHE: dict[str, "Backend"] = {}


def missing_package(name: str) -> str | None:
    """The first Python package ``name`` needs that is not installed, else None."""
    return next((m for m in spec(name).requires if importlib.util.find_spec(m) is None), None)


def get_backend(name: str) -> "Backend":
    """The backend called ``name`` (one instance per process); a one-line TpError when the
    name is unknown or its runtime is not installed."""
    if name not in _CACHE:
        sp = spec(name)
        miss = missing_package(name)
        if miss is not None:
            raise TpError(f"backend {name}: {miss} is not installed; {sp.install}, or use "
                          f"--backend {REFERENCE}")
        module = importlib.import_module(f".{sp.module}", __name__)
        _CACHE[name] = getattr(module, sp.factory)(sp)
    return _CACHE[name]


def why_unavailable(name: str) -> str | None:
    """None when ``name`` runs on this machine, else one line saying why not."""
    try:
        return get_backend(name).unavailable()
    except TpError as e:
        return str(e)


def available_backends() -> list[str]:
    """Every backend that runs here, in order of preference."""
    return [n for n in names() if why_unavailable(n) is None]


def require_available(name: str) -> "Backend":
    """The backend, or a one-line TpError saying why it cannot run on this machine."""
    b = get_backend(name)
    why = b.unavailable()
    if why is not None:
        raise TpError(f"backend {name} cannot run here: {why}; choose one of "
                      f"{', '.join(available_backends())}")
    return b


__getattr__, _lazy = lazy_exports(__name__, {"Backend": "base", "Runner": "base"})
__all__ = sorted(_lazy + ["REFERENCE", "SPECS", "available_backends", "get_backend",
                          "help_text", "missing_package", "names", "require_available",
                          "spec", "why_unavailable"])
