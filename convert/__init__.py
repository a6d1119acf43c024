"""pbmlx.convert: checkpoint conversion (diffusers -> MLX, and -> Core ML).

Imported only by the ``convert`` and ``export-coreml`` commands, so the runtime never pays
for the conversion toolchain (torch, diffusers, transformers, coremltools: the ``convert``
extra).
"""
