import os
import sys

# `python -m pbmlx` puts the working directory first on sys.path. From a source checkout that is
# the repository root, whose top-level `kernels/` and `convert/` folders (installed as
# pbmlx.kernels and pbmlx.convert) would shadow installed packages of the same name: Hugging
# Face's `kernels`, which transformers imports during `pbmlx convert` and `export-coreml`. pbmlx is
# already imported by now, so the entry is not needed.
if sys.path and sys.path[0] in ("", os.getcwd()):
    del sys.path[0]

from pbmlx.cli import main

raise SystemExit(main())
