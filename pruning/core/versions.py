"""Library versions for reports and manifests, keyed by each package's import name."""
from __future__ import annotations

from types import ModuleType


def library_versions(*modules: ModuleType) -> dict[str, str]:
    """``{name: version}`` of imported packages (e.g. ``library_versions(torch)``)."""
    return {m.__name__: str(getattr(m, "__version__", "unknown")) for m in modules}
