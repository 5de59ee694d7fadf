"""Machine fingerprint: what decides per-layer latency, as a readable id plus a short hash.

The id covers hardware only (CPU model, family and model number, ISA, cores, caches,
memory, or the GPU). The family/model numbers matter: a cloud "AMD EPYC" brand string is the
same on Zen 4 (family 25) and Zen 5 (family 26), whose GEMM kernels differ ~2x in speed.
The torch version is recorded beside it, so a table from another torch version on the same
machine is found and warned about instead of silently ignored.
"""
from __future__ import annotations

import functools
import hashlib
import json
import platform
import re
from dataclasses import asdict, dataclass, field, fields

import cpuinfo
import psutil

SOFTWARE = {"part_of_id": False}  # fields recorded beside the id, not hashed into it
ISA_FLAGS = ("avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "avx_vnni", "amx_tile",
             "amx_bf16", "amx_int8", "neon", "asimd", "sve")


@dataclass(frozen=True)
class Fingerprint:
    cpu_brand: str
    arch: str
    isa: tuple[str, ...]
    physical_cores: int
    logical_cores: int
    l2_cache_kb: int
    l3_cache_kb: int
    memory_gib: int
    device: str  # "cpu" or the CUDA device name
    torch: str = field(metadata=SOFTWARE)
    dtype: str = "float32"
    cpu_family: int | None = None  # CPUID family and model: the microarchitecture
    cpu_model: int | None = None
    threads: int | None = field(default=None, metadata=SOFTWARE)  # of the measurement

    @property
    def hardware_hash(self) -> str:
        soft = {f.name for f in fields(self) if f.metadata.get("part_of_id", True) is False}
        key = {k: v for k, v in asdict(self).items() if k not in soft}
        return hashlib.sha1(json.dumps(key, sort_keys=True).encode()).hexdigest()[:6]

    @property
    def machine_id(self) -> str:
        brand = self.device if self.device != "cpu" else self.cpu_brand
        words = re.sub(r"\((r|tm)\)|cpu|processor|@.*|\d+-core", " ", brand.lower())
        words = "-".join(re.findall(r"[a-z0-9]+", words)[:3]) or "unknown"
        isa = ("amx" if any(f.startswith("amx") for f in self.isa) else
               "avx512" if "avx512f" in self.isa else "avx2" if "avx2" in self.isa else
               self.arch)
        kind = f"{self.physical_cores}c-{isa}" if self.device == "cpu" else "cuda"
        if self.cpu_family is not None and self.device == "cpu":
            kind = f"f{self.cpu_family}m{self.cpu_model}-{kind}"
        return f"{words}-{kind}-{self.hardware_hash}"

    def to_dict(self) -> dict:
        d = asdict(self)
        d["isa"] = list(self.isa)
        d["machine_id"] = self.machine_id
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "Fingerprint":
        d = {k: v for k, v in d.items() if k in cls.__dataclass_fields__}
        d["isa"] = tuple(d.get("isa", ()))
        return cls(**d)


@functools.lru_cache(maxsize=None)
def _cpu_info() -> dict:
    try:
        return cpuinfo.get_cpu_info()
    except Exception:  # py-cpuinfo can fail in odd containers; fall back to platform
        return {"brand_raw": platform.processor() or platform.machine(), "flags": []}


def _cache_kb(v) -> int:
    if isinstance(v, int):
        return v // 1024 if v > 1 << 16 else v
    m = re.match(r"([\d.]+)\s*([KMG]i?B)?", str(v or "0"))
    if not m:
        return 0
    scale = {"K": 1, "M": 1024, "G": 1024 * 1024}.get((m.group(2) or "K")[0], 1)
    return int(float(m.group(1)) * scale)


def fingerprint(device: str = "cpu", threads: int | None = None) -> Fingerprint:
    import torch  # here, not at the top: profiler/__init__ imports this module for every --help
    info = _cpu_info()
    flags = set(info.get("flags", []))
    dev = "cpu"
    if device.startswith("cuda"):
        dev = torch.cuda.get_device_name(torch.device(device))
    return Fingerprint(
        cpu_brand=info.get("brand_raw", "unknown").strip(), arch=platform.machine(),
        isa=tuple(f for f in ISA_FLAGS if f in flags),
        physical_cores=psutil.cpu_count(logical=False) or 1,
        logical_cores=psutil.cpu_count(logical=True) or 1,
        l2_cache_kb=_cache_kb(info.get("l2_cache_size")),
        l3_cache_kb=_cache_kb(info.get("l3_cache_size")),
        memory_gib=round(psutil.virtual_memory().total / 2**30),
        device=dev, torch=torch.__version__.split("+")[0], threads=threads,
        cpu_family=_int_or_none(info.get("family")), cpu_model=_int_or_none(info.get("model")))


def _int_or_none(v) -> int | None:
    try:
        return int(v)
    except (TypeError, ValueError):
        return None
