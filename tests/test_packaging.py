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
