"""pbmlx: on-device, instruction-driven photo editing.

Importing pbmlx first gives MLX an optimized BLAS on Linux (see :mod:`pbmlx.backend`); this
must happen before anything imports ``mlx.core``, so it is the first statement here.
"""

from pbmlx.backend import use_optimized_blas

use_optimized_blas()

from pbmlx.errors import PbmlxError  # noqa: E402

__version__ = "0.1.0"
__all__ = ["PbmlxError", "__version__"]
