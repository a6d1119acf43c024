"""The wheel's package list names every Python package of the source tree.

``pyproject.toml`` lists packages explicitly (``convert/`` and ``kernels/`` install inside
``pbmlx``), so a new subpackage left off the list works in an editable install and in every
test here, and is missing from a wheel. This compares the list with the folders that hold an
``__init__.py``.
"""

from __future__ import annotations

from pathlib import Path

try:
    import tomllib
except ImportError:  # Python 3.10: pytest itself depends on tomli there
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[1]


def test_every_package_folder_is_in_the_wheel():
    tool = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    listed = set(tool["packages"])
    found = set()
    for name, folder in tool["package-dir"].items():
        base = ROOT / folder
        for init in base.rglob("__init__.py"):
            rel = init.parent.relative_to(base)
            found.add(".".join([name, *rel.parts]))
    assert found - listed == set(), "add to [tool.setuptools] packages"
    assert listed - found == set(), "listed but no such package folder"


def test_no_script_module_shadows_an_installed_one():
    """A script run as ``python benchmarks/x.py`` has its folder first on ``sys.path`` (pytest
    puts tests/ there too): a module in it named like an installed one is imported in its place
    by whatever imports that name. ``benchmarks/kernels.py`` shadowed Hugging Face's
    ``kernels``, which diffusers imports, and broke every diffusers import in the benchmarks."""
    import importlib.machinery
    import sys

    mine = {ROOT.resolve(), (ROOT / "tests").resolve(), (ROOT / "benchmarks").resolve()}
    others = [p for p in sys.path if p and Path(p).resolve() not in mine]
    for folder in ("tests", "benchmarks"):
        for f in sorted((ROOT / folder).glob("*.py")):
            spec = importlib.machinery.PathFinder.find_spec(f.stem, others)
            assert spec is None, f"{folder}/{f.name} shadows {spec.origin}"
