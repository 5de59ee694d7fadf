"""The built wheel, installed into a fresh virtual environment, is the package a user gets:
one top-level ``tp_search`` (never a generic ``pruning``, ``profiler`` or ``search``), its
console scripts and ``python -m tp_search`` run, its lazy exports resolve and every module
that ships imports (a package missing from pyproject's ``packages`` list breaks this).

The fresh environment borrows the outer venv's third-party packages (torch etc.) through a
``.pth`` line naming the outer site-packages: a path line is only appended to ``sys.path``,
the ``.pth`` files there are not run, so the outer editable install of tp-search stays off.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import warnings
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
NAMESPACE = "tp_search"
LAYERS = ("pruning", "profiler", "search")  # top-level folders mapped to tp_search.<layer>


def _run(cmd: list[str], *, cwd: Path, env: dict[str, str] | None = None,
         timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(c) for c in cmd], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=timeout)


def _report(proc: subprocess.CompletedProcess[str]) -> str:
    return (f"command: {' '.join(map(str, proc.args))}\nexit code: {proc.returncode}\n"
            f"--- stdout ---\n{proc.stdout[-4000:]}\n--- stderr ---\n{proc.stderr[-4000:]}")


def _check(proc: subprocess.CompletedProcess[str], what: str) -> subprocess.CompletedProcess[str]:
    rc = proc.returncode
    assert rc == 0, f"{what} failed\n{_report(proc)}"
    return proc


def _clean_env() -> dict[str, str]:
    """An environment that adds nothing to a child interpreter's sys.path."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP", "VIRTUAL_ENV")}
    env["PYTHONNOUSERSITE"] = "1"
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    return env


def _build_leftovers() -> set[Path]:
    return {p for p in (ROOT / "build", *ROOT.glob("*.egg-info")) if p.exists()}


def _build_wheel(out: Path, scratch: Path) -> Path:
    """``pip wheel`` of the repository, in place; setuptools' build/ and egg-info go to
    ``scratch`` (via DIST_EXTRA_CONFIG) and whatever the build still creates in the
    repository is removed again."""
    cfg = scratch / "redirect.cfg"
    cfg.write_text(f"[egg_info]\negg_base = {scratch}\n[build]\nbuild_base = {scratch / 'build'}\n")
    env = _clean_env() | {"DIST_EXTRA_CONFIG": str(cfg)}
    before = _build_leftovers()
    try:
        proc = _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
                     "--no-index", "--no-cache-dir", "-w", out, ROOT], cwd=scratch, env=env)
    finally:
        created = _build_leftovers() - before
        for p in created:
            shutil.rmtree(p, ignore_errors=True)
        if created:
            warnings.warn(f"the wheel build left {sorted(p.name for p in created)} in the "
                          "repository (removed)", stacklevel=1)
    _check(proc, "building the wheel")
    wheels = list(out.glob("tp_search-*.whl"))
    assert len(wheels) == 1, \
        f"expected one tp_search wheel in {out}, found {wheels}\n{_report(proc)}"
    return wheels[0]


class Fresh:
    """A fresh venv with the wheel installed; runs commands from a neutral cwd."""

    def __init__(self, venv: Path, cwd: Path, wheel: Path):
        self.venv, self.cwd, self.wheel = venv, cwd, wheel
        self.bin = venv / ("Scripts" if os.name == "nt" else "bin")
        self.python = self.bin / ("python.exe" if os.name == "nt" else "python")
        self.env = _clean_env()
        self.site = Path(self.py("import sysconfig; print(sysconfig.get_paths()['purelib'])")
                         .stdout.strip())

    def run(self, *cmd, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        return _run(list(cmd), cwd=self.cwd, env=self.env, timeout=timeout)

    def py(self, code: str, what: str | None = None, timeout: float = 120):
        proc = self.run(self.python, "-c", code, timeout=timeout)
        return _check(proc, what or f"python -c {code!r}")


@pytest.fixture(scope="module")
def fresh(tmp_path_factory) -> Fresh:
    tmp = tmp_path_factory.mktemp("wheel")
    dist, scratch, cwd = tmp / "dist", tmp / "scratch", tmp / "cwd"
    for d in (dist, scratch, cwd):
        d.mkdir()

    probe = _run([sys.executable, "-m", "pip", "--help"], cwd=cwd, env=_clean_env())
    if "--python" not in probe.stdout:
        pytest.skip("this pip has no --python option (needs pip >= 22.3)")

    wheel = _build_wheel(dist, scratch)

    venv = tmp / "venv"
    _check(_run([sys.executable, "-m", "venv", "--without-pip", venv], cwd=cwd),
           "creating the fresh venv")
    env = Fresh(venv, cwd, wheel)
    _check(_run([sys.executable, "-m", "pip", "--python", env.python, "install", "--no-deps",
                 "--no-index", "--no-cache-dir", wheel], cwd=cwd, env=_clean_env()),
           "installing the wheel into the fresh venv")

    outer = {sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]}
    (env.site / "_outer_site_packages.pth").write_text("".join(f"{p}\n" for p in sorted(outer)))
    return env


def test_wheel_ships_only_tp_search(fresh: Fresh):
    names = zipfile.ZipFile(fresh.wheel).namelist()
    tops = {n.split("/")[0] for n in names}
    others = {t for t in tops if t != NAMESPACE and not t.endswith(".dist-info")}
    assert NAMESPACE in tops and not others, \
        f"unexpected top-level entries in {fresh.wheel.name}: {sorted(tops)}"
    for layer in LAYERS:
        for entry in (layer, f"{layer}.py"):
            assert not (fresh.site / entry).exists(), \
                f"the wheel installs a generic top-level {entry!r} into site-packages: " \
                f"{sorted(p.name for p in fresh.site.iterdir())}"


def test_installed_copy_is_used(fresh: Fresh):
    """Guards the set-up: the fresh interpreter must import the wheel's tp_search."""
    where = Path(fresh.py("import tp_search; print(tp_search.__file__)").stdout.strip())
    assert where.is_relative_to(fresh.site), \
        f"tp_search imported from {where}, not from the fresh site-packages {fresh.site}"
    assert not where.is_relative_to(ROOT), f"tp_search imported from the repository: {where}"


@pytest.mark.parametrize("name", LAYERS)
def test_no_generic_top_level_import(fresh: Fresh, name: str):
    proc = fresh.run(fresh.python, "-c", f"import {name}")
    not_found = proc.returncode != 0 and "ModuleNotFoundError" in proc.stderr
    assert not_found, \
        f"`import {name}` should fail with ModuleNotFoundError in the fresh venv\n{_report(proc)}"


@pytest.mark.parametrize("script", ["tp-search", "tp-bench", "tp-profile", "tp-train"])
def test_console_script_help(fresh: Fresh, script: str):
    exe = fresh.bin / script
    assert exe.exists(), f"{script} not installed; {fresh.bin} holds " \
                         f"{sorted(p.name for p in fresh.bin.iterdir())}"
    proc = _check(fresh.run(exe, "--help"), f"{script} --help")
    assert "usage" in proc.stdout.lower(), f"{script} --help printed no usage\n{_report(proc)}"


def test_python_m_and_lazy_export(fresh: Fresh):
    proc = _check(fresh.run(fresh.python, "-m", NAMESPACE, "--help"), "python -m tp_search --help")
    assert "usage" in proc.stdout.lower(), \
        f"python -m tp_search --help printed no usage\n{_report(proc)}"
    out = fresh.py("import tp_search; print(tp_search.load)", "resolving tp_search.load").stdout
    assert "function" in out and "load" in out, f"tp_search.load is not a function: {out!r}"


WALK = """
import importlib, pkgutil, sys, traceback, tp_search
failed, names = [], []
for m in pkgutil.walk_packages(tp_search.__path__, "tp_search.",
                               onerror=lambda n: failed.append((n, traceback.format_exc()))):
    names.append(m.name)
    if m.name.rsplit(".", 1)[-1] == "__main__":
        continue
    try:
        importlib.import_module(m.name)
    except BaseException:
        failed.append((m.name, traceback.format_exc()))
for name, tb in failed:  # full tracebacks first, the one-line summary last (kept if cut)
    print(f"=== {name} ===", tb, sep="\\n", file=sys.stderr)
for name, tb in failed:
    print(f"FAILED {name}: {tb.strip().splitlines()[-1]}", file=sys.stderr)
print("\\n".join(names))
raise SystemExit(1 if failed else 0)
"""


def _source_modules() -> set[str]:
    """Module names the repository's source tree maps into tp_search."""
    out = set()
    for folder, prefix in [(NAMESPACE, (NAMESPACE,))] + [(la, (NAMESPACE, la)) for la in LAYERS]:
        base = ROOT / folder
        for f in base.rglob("*.py"):
            rel = f.relative_to(base).with_suffix("").parts
            if "__pycache__" in rel or not all((base.joinpath(*rel[:i]) / "__init__.py").exists()
                                               for i in range(len(rel))):
                continue  # not inside a package
            parts = prefix + (rel[:-1] if rel[-1] == "__init__" else rel)
            out.add(".".join(parts))
    out.discard(NAMESPACE)
    return out


def test_every_module_imports(fresh: Fresh):
    proc = fresh.run(fresh.python, "-c", WALK, timeout=300)
    missing = sorted(_source_modules() - set(proc.stdout.split()))
    assert not missing, ("modules in the source tree but not in the installed wheel "
                         f"(a package missing from pyproject's packages list?): {missing}")
    _check(proc, "importing every module of the installed tp_search")
