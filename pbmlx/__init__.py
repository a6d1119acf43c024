"""pbmlx: on-device, instruction-driven photo editing.

``pbmlx.edit(image, "instruction", ...)`` edits a PIL image (see :mod:`pbmlx.flow`; its
sampler settings are keywords or one ``pbmlx.SamplerSettings``);
``pbmlx.plan("instruction")`` shows what an instruction will do (see :mod:`pbmlx.plan`);
``pbmlx.judge(source, edited, "instruction")`` scores an edit on the Pico-Banana-400K rubric
(see :mod:`pbmlx.judge`).

Importing pbmlx first gives MLX an optimized BLAS on Linux (see :mod:`pbmlx.backend`); this
must happen before anything imports ``mlx.core``, so it is the first statement here. The
public functions are loaded on first use, so ``import pbmlx`` stays cheap.
"""

from pbmlx.backend import use_optimized_blas

use_optimized_blas()

import sys  # noqa: E402
import types  # noqa: E402

from pbmlx.errors import PbmlxError  # noqa: E402

__version__ = "0.1.0"
__all__ = [
    "EditResult",
    "Editor",
    "PbmlxError",
    "SamplerSettings",
    "__version__",
    "edit",
    "judge",
    "plan",
]

_LAZY = {
    "edit": ("pbmlx.flow", "edit"),
    "EditResult": ("pbmlx.flow", "EditResult"),
    "Editor": ("pbmlx.editor", "Editor"),
    "SamplerSettings": ("pbmlx.diffuse.settings", "SamplerSettings"),
    "plan": ("pbmlx.plan", "plan"),
}


class _Package(types.ModuleType):
    """pbmlx's module type: ``pbmlx.plan`` and ``pbmlx.edit`` stay the functions.

    Importing the submodule ``pbmlx.plan`` makes the import system set the package attribute
    ``plan`` to that module, after which ``pbmlx.plan("...")`` would fail with "'module'
    object is not callable". Setting a public function's name to a module is ignored here (the
    module stays in ``sys.modules["pbmlx.plan"]``, where ``from pbmlx.plan import ...`` finds
    it), so the attribute always resolves, through ``__getattr__``, to the function.
    """

    def __setattr__(self, name: str, value: object) -> None:
        if name in _FUNCTIONS and isinstance(value, types.ModuleType):
            return
        super().__setattr__(name, value)


_FUNCTIONS = frozenset({"plan", "edit"})
sys.modules[__name__].__class__ = _Package


def __getattr__(name: str):
    import importlib

    if name == "judge":
        # The package pbmlx.judge is callable (it is judge()); importing it also sets this
        # attribute, so the package and the function can never disagree.
        return importlib.import_module("pbmlx.judge")
    if name in _LAZY:
        module, attr = _LAZY[name]
        return getattr(importlib.import_module(module), attr)
    raise AttributeError(f"module 'pbmlx' has no attribute {name!r}")
