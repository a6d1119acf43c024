"""Test-session set-up shared by every test module.

The fixed layout puts ``convert/`` and ``kernels/`` at the repository root (installed as
``pbmlx.convert`` and ``pbmlx.kernels``). ``python -m pytest`` puts the working directory first on
``sys.path``, where that ``kernels/`` folder would shadow Hugging Face's ``kernels`` distribution,
which transformers >= 5.25 requires and imports (``from kernels import CUDAProperties``): every
transformers model import then fails. pbmlx is reached through its install, so the root is not
needed on the path; it is removed before any test module imports transformers.
"""

import os
import sys
from pathlib import Path

_REPO = Path(__file__).resolve().parents[1]


def _is_repo_root(entry: str) -> bool:
    try:
        return Path(entry or os.getcwd()).resolve() == _REPO
    except OSError:
        return False


sys.path[:] = [p for p in sys.path if not _is_repo_root(p)]
