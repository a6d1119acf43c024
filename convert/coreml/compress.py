"""Post-training palettization of a converted package (``--palettize 4|6|8``).

Each large weight tensor ``W`` is replaced by ``2**bits`` float16 centroids (a lookup table)
and one ``bits``-wide index per weight, the centroids chosen by k-means on the weights' values
(coremltools' 1-D optimal k-means for float16 tensors):

    W[i] ~ lut[g(i)][index[i]],   index[i] = argmin_j |W[i] - lut[g(i)][j]|

On targets that support it (iOS 18 / macOS 15 and later), ``g`` groups ``GROUP_SIZE`` output
channels per table (per-grouped-channel), which keeps more precision per table for a small
overhead; on older targets there is one table per tensor (what their ``constexpr_lut_to_dense``
op allows). Gathers (the text encoder's token and position embeddings) are never palettized:
an embedding row is read once per token, so its table would buy little and cost precision in
every prompt. Only the weights of convolutions and linear layers are palettized
(:data:`PALETTIZED_OPS`), so neither gathers nor constants that the converter folds (the
text encoder's position embeddings, read at the fixed positions 0..76, become one) are; and
tensors under ``WEIGHT_THRESHOLD`` elements stay float16.
"""

from __future__ import annotations

from typing import Any

PALETTE_BITS = (4, 6, 8)
GROUP_SIZE = 16  # output channels sharing one table on per-grouped-channel targets
WEIGHT_THRESHOLD = 2048  # smaller tensors are left alone (coremltools' default)
# Targets whose constexpr_lut_to_dense takes per-channel-group tables.
GROUPED_TARGETS = frozenset({"macOS15", "iOS18"})
# The layers whose weights are palettized: every convolution and linear layer (all but a few
# per cent of each network's weights); nothing else.
PALETTIZED_OPS = ("conv", "linear")


def granularity(target: str) -> str:
    """``"per_grouped_channel"`` where ``target`` supports it, else ``"per_tensor"``."""
    return "per_grouped_channel" if target in GROUPED_TARGETS else "per_tensor"


def palettize(mlmodel: Any, bits: int, target: str) -> Any:
    """``mlmodel`` with its weights palettized to ``bits`` (see the module docstring)."""
    import coremltools.optimize.coreml as cto

    if bits not in PALETTE_BITS:
        raise ValueError(f"palettization bits must be one of {PALETTE_BITS}, not {bits!r}")
    grain = granularity(target)
    op_config = cto.OpPalettizerConfig(
        mode="kmeans",
        nbits=bits,
        granularity=grain,
        group_size=GROUP_SIZE if grain == "per_grouped_channel" else 0,
        weight_threshold=WEIGHT_THRESHOLD,
    )
    config = cto.OptimizationConfig(
        global_config=None, op_type_configs=dict.fromkeys(PALETTIZED_OPS, op_config)
    )
    return cto.palettize_weights(mlmodel, config)
