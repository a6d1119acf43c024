"""The judge package's structure: no import cycle, and the runtime never loads the fitting.

Oracles: the import graph is read from the source with :mod:`ast` (every ``import`` and
``from ... import`` anywhere in a module, function bodies included, since a late import is
still a dependency); a fresh interpreter per module checks that each one imports on its own
(a cycle that only bites in some import order shows there), and that judging a pair loads
neither :mod:`pbmlx.judge.fitting` nor the offline tool.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "pbmlx" / "judge"
MODULES = sorted(p.stem for p in PACKAGE.glob("*.py") if p.stem != "__init__")
# The modules a verdict needs: none of them may reach the fitting code.
RUNTIME = ("core", "criteria", "maps", "measure", "verdict", "retry")


def _judge_imports(module: str) -> set[str]:
    """The pbmlx.judge submodules ``module`` imports (anywhere in its body)."""
    tree = ast.parse((PACKAGE / f"{module}.py").read_text())
    out: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        else:
            continue
        for n in names:
            parts = n.split(".")
            if parts[:2] == ["pbmlx", "judge"] and len(parts) >= 3 and parts[2] in MODULES:
                out.add(parts[2])
    out.discard(module)
    return out


def test_the_judge_modules_import_graph_has_no_cycle():
    graph = {m: _judge_imports(m) for m in MODULES}
    assert "calibrate" not in MODULES  # the old mixed module is gone
    state: dict[str, int] = {}  # 1: on the current path, 2: done

    def visit(m: str, path: list[str]) -> None:
        state[m] = 1
        for n in sorted(graph[m]):
            if state.get(n) == 1:
                pytest.fail(f"import cycle: {' -> '.join([*path, m, n])}")
            if n not in state:
                visit(n, [*path, m])
        state[m] = 2

    for m in MODULES:
        if m not in state:
            visit(m, [])


def test_the_runtime_never_imports_the_fitting():
    graph = {m: _judge_imports(m) for m in MODULES}
    reach: set[str] = set()
    todo = list(RUNTIME)
    while todo:
        m = todo.pop()
        if m not in reach:
            reach.add(m)
            todo.extend(graph[m])
    assert "fitting" not in reach and "bench" not in reach, sorted(reach)
    assert graph["fitting"] == set()  # numpy only
    # The offline tool lives outside the package.
    assert not (PACKAGE / "judge_fit.py").exists() and (ROOT / "tests" / "judge_fit.py").exists()


@pytest.mark.parametrize("module", ["pbmlx.judge", *(f"pbmlx.judge.{m}" for m in MODULES)])
def test_each_judge_module_imports_in_a_fresh_interpreter(module):
    code = f"import importlib; importlib.import_module({module!r})"
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr


def test_judging_loads_no_fitting_code():
    code = (
        "import sys, numpy as np, pbmlx\n"
        "from pbmlx.judge import Judge, criteria\n"
        "x = np.linspace(0, 1, 64 * 64 * 3, dtype=np.float32).reshape(64, 64, 3)\n"
        "j = Judge(providers=criteria.default_providers(criteria.ClipCompliance(None)))\n"
        "j(x, np.clip(x * 1.1, 0, 1), 'brighten this picture')\n"
        "bad = [m for m in ('pbmlx.judge.fitting', 'pbmlx.judge.bench', 'judge_fit') if m in sys.modules]\n"
        "assert not bad, bad\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
