"""A checkpoint's identity from its bytes: studies, cached proxy metrics and run
directories are keyed by it, so a changed checkpoint of the same shape is never mistaken
for the old one. sha256 of a 90 MB weights file takes ~0.1 s; digests are cached per
(path, size, mtime) within a process."""
from __future__ import annotations

import hashlib
from functools import lru_cache
from pathlib import Path

# what decides a model's outputs; tokenizer files change what text becomes
IDENTITY_SUFFIXES = (".safetensors", ".bin", ".json", ".txt", ".model")


def checkpoint_digest(path: str | Path) -> str:
    p = Path(path).resolve()
    files = sorted(f for f in p.iterdir() if f.is_file() and f.suffix in IDENTITY_SUFFIXES) \
        if p.is_dir() else []
    stamp = tuple((f.name, f.stat().st_size, f.stat().st_mtime_ns) for f in files)
    return _digest(str(p), stamp)


@lru_cache(maxsize=64)
def _digest(path: str, stamp: tuple) -> str:
    h = hashlib.sha256()
    for name, _, _ in stamp:
        h.update(name.encode() + b"\0")
        with open(Path(path) / name, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
    return h.hexdigest()[:16]
