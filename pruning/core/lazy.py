"""Lazy package exports (PEP 562): a package's names load their module on first use, so
importing a package (and every CLI's ``--help``) does not pay for torch."""
from __future__ import annotations

import importlib
from typing import Any, Callable


def lazy_exports(package: str, exports: dict[str, str | None]
                 ) -> tuple[Callable[[str], Any], list[str]]:
    """``exports`` maps a public name to the submodule (relative to ``package``) defining
    it (``None``: the name is itself a submodule); returns the package's ``__getattr__``
    and ``__all__``."""
    def __getattr__(name: str) -> Any:
        if name in exports:
            module = importlib.import_module(f".{exports[name] or name}", package)
            return module if exports[name] is None else getattr(module, name)
        raise AttributeError(f"module {package!r} has no attribute {name!r}")
    return __getattr__, sorted(exports)
