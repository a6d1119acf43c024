"""The adjust stage: exact, parametric global edits (see :mod:`pbmlx.adjust.ops`).

``SPECS`` declares the op vocabulary (names, ranges, units); ``OPS`` maps each name to its
function; ``apply_ops(img, [{"op": name, "amount": a}, ...], seed=0)`` runs a plan.
"""

from pbmlx.adjust.ops import OPS, apply_ops
from pbmlx.adjust.specs import SPECS, OpSpec

__all__ = ["OPS", "SPECS", "OpSpec", "apply_ops"]
