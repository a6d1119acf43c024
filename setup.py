"""Build the one compiled piece of pbmlx: the CBLAS forwarding shim for MLX's CPU backend on Linux.

Everything else is declared in pyproject.toml. The shim is optional: if no C compiler is
available the install still succeeds and pbmlx falls back (with a warning) to MLX's bundled BLAS.
"""

import sys

from setuptools import Extension, setup

ext_modules = []
if sys.platform.startswith("linux"):
    ext_modules.append(
        Extension("pbmlx._cblas_shim", sources=["pbmlx/_cblas_shim.c"], optional=True)
    )

setup(ext_modules=ext_modules)
