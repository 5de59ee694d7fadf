"""The tree's own rules: layers point down (pruning <- profiler <- search, entry points
excepted), modules import no circle, stay small and have names unique enough to grep, every
package is shipped, and CLI modules import without torch."""
from __future__ import annotations

import ast
import re
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
NAMESPACE = "tp_search"
LAYERS = ("pruning", "profiler", "search")  # each may import only those before it
MAX_LINES = 400
CLI_MODULES = ("tp_search.pruning.bench_cli", "tp_search.pruning.train_cli",
               "tp_search.profiler.profile_cli", "tp_search.search.search_cli")


def modules() -> dict[str, Path]:
    """Every module of the three layers under its import name (tp_search.<layer>...)."""
    out = {}
    for layer in LAYERS:
        for f in (ROOT / layer).rglob("*.py"):
            parts = f.relative_to(ROOT).with_suffix("").parts
            name = ".".join((NAMESPACE,) + (parts[:-1] if parts[-1] == "__init__" else parts))
            out[name] = f
    return out


def layer_of(name: str) -> str:
    return name.split(".")[1]


def imports(name: str, path: Path, known: dict[str, Path]) -> set[str]:
    """Project modules ``name`` imports at run time (``if TYPE_CHECKING:`` blocks skipped)."""
    tree = ast.parse(path.read_text())
    skip = {id(n) for node in ast.walk(tree) if isinstance(node, ast.If)
            and "TYPE_CHECKING" in ast.unparse(node.test) for n in ast.walk(node)}
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(tree):
        if id(node) in skip or not isinstance(node, (ast.Import, ast.ImportFrom)):
            continue
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        else:
            base = node.module or ""
            if node.level:
                up = package.split(".")[:len(package.split(".")) - node.level + 1]
                base = ".".join(up + ([base] if base else []))
            targets = [f"{base}.{a.name}" for a in node.names] + [base]
        for t in targets:
            while t and t not in known:  # `from pkg import name`: name may be a symbol
                t = t.rpartition(".")[0]
            if t and t != name:
                found.add(t)
    return found


@pytest.fixture(scope="module")
def graph() -> dict[str, set[str]]:
    known = modules()
    return {n: imports(n, p, known) for n, p in known.items()}


def test_layers_only_point_down_outside_entry_points(graph):
    bad = []
    for name, deps in graph.items():
        if "cli" in name.rpartition(".")[2]:
            continue  # entry points wire the layers together
        rank = LAYERS.index(layer_of(name))
        bad += [f"{name} -> {d}" for d in deps if LAYERS.index(layer_of(d)) > rank]
    assert not bad, "upward imports: " + ", ".join(sorted(bad))


def test_no_import_cycles(graph):
    state: dict[str, int] = {}  # 1 visiting, 2 done
    stack: list[str] = []

    def visit(n: str) -> list[str] | None:
        state[n] = 1
        stack.append(n)
        for d in sorted(graph.get(n, ())):
            if d.startswith(n + "."):
                continue  # a package importing its own submodules is not a cycle
            if state.get(d) == 1 and not n.startswith(d + "."):
                return stack[stack.index(d):] + [d]
            if d not in state and (cycle := visit(d)):
                return cycle
        stack.pop()
        state[n] = 2
        return None

    for n in sorted(graph):
        if n not in state and (cycle := visit(n)):
            pytest.fail("import cycle: " + " -> ".join(cycle))


def test_modules_stay_small():
    big = {n: len(p.read_text().splitlines()) for n, p in modules().items()}
    big = {n: k for n, k in big.items() if k > MAX_LINES}
    assert not big, f"modules over {MAX_LINES} lines: {big}"


def test_module_names_are_unique_enough_to_grep():
    names = Counter(p.stem for p in modules().values()
                    if p.stem not in ("__init__", "__main__"))
    repeated = sorted(n for n, k in names.items() if k > 1)
    assert not repeated, f"module names used more than once: {repeated}"


def test_every_package_is_listed_for_the_wheel():
    listed = set(re.findall(r'"(tp_search[\w.]*)"', (ROOT / "pyproject.toml").read_text()))
    packages = {n for n, p in modules().items() if p.name == "__init__.py"} | {NAMESPACE}
    assert packages <= listed, f"not in pyproject's packages: {sorted(packages - listed)}"


@pytest.mark.parametrize("module", CLI_MODULES)
def test_cli_modules_import_without_torch(module):
    code = f"import sys, {module}; sys.exit(1 if 'torch' in sys.modules else 0)"
    assert subprocess.run([sys.executable, "-c", code], cwd=ROOT).returncode == 0, \
        f"importing {module} loads torch: --help would pay for it"


def _backend_literals(path: Path, backends: set[str]) -> list[str]:
    """String constants naming a backend; a dict key whose value reads the ``torch`` module
    (``{"torch": torch.__version__}``) names the package, not the backend."""
    tree = ast.parse(path.read_text())
    package_keys = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Dict):
            for k, v in zip(node.keys, node.values):
                if isinstance(k, ast.Constant) and any(
                        isinstance(n, ast.Name) and n.id == k.value for n in ast.walk(v)):
                    package_keys.add(id(k))
    return [f"{path.relative_to(ROOT)}:{n.lineno} {n.value!r}" for n in ast.walk(tree)
            if isinstance(n, ast.Constant) and isinstance(n.value, str)
            and n.value in backends and id(n) not in package_keys]


def test_backend_names_are_spelled_only_in_the_runtime_package():
    from tp_search.pruning.runtime import names
    backends = set(names())
    runtime = ROOT / "pruning" / "runtime"
    files = [p for p in modules().values() if runtime not in p.parents]
    files += sorted((ROOT / "benchmarks").rglob("*.py"))
    found = [hit for f in files for hit in _backend_literals(f, backends)]
    assert not found, "backend names outside pruning/runtime/ (ask the registry): " + \
        ", ".join(found)


def test_the_backend_name_check_tells_a_backend_from_the_package(tmp_path):
    f = ROOT / "tests" / f".probe_{tmp_path.name}.py"
    f.write_text('import torch\nv = {"torch": torch.__version__}\nok = b == "ort-int8"\n')
    try:
        hits = _backend_literals(f, {"torch", "ort-int8"})
    finally:
        f.unlink()
    assert len(hits) == 1 and "'ort-int8'" in hits[0]
