"""The adjust stage: exact, parametric global edits (see :mod:`pbmlx.adjust.ops`).

``SPECS`` declares the op vocabulary (names, ranges, units); ``OPS`` maps each name to its
function; ``apply_ops(img, [{"op": name, "amount": a}, ...], seed=0)`` runs a plan.

``OPS`` and ``apply_ops`` are loaded on first use: they need MLX, while the planner (which
imports ``specs`` and ``presets`` from here) must stay cheap to import for dry runs.
"""

from pbmlx.adjust.specs import SPECS, OpSpec

__all__ = ["OPS", "SPECS", "OpSpec", "apply_ops"]


def __getattr__(name: str):
    if name in ("OPS", "apply_ops"):
        from pbmlx.adjust import ops

        return getattr(ops, name)
    raise AttributeError(f"module 'pbmlx.adjust' has no attribute {name!r}")
