"""pbmlx.convert: checkpoint conversion (diffusers -> MLX, and -> Core ML).

Imported only by the ``convert`` and ``export-coreml`` commands, so the runtime never pays
for the conversion toolchain (torch, diffusers, transformers, coremltools: the ``convert`` and
``coreml`` extras).

- :mod:`pbmlx.convert.to_mlx` -- ``convert(source, out_dir, ...)``: a diffusers
  InstructPix2Pix pipeline (folder or hub id) -> a pbmlx MLX folder (cast, quantized);
- :mod:`pbmlx.convert.cli` -- the ``pbmlx convert`` command around it;
- :mod:`pbmlx.convert.coreml` -- ``pbmlx export-coreml``: the same model (or a converted
  folder) -> a Core ML app bundle (Neural Engine variant, palettization, proofs).

The runtime side (telling a converted folder apart and loading it) is
:mod:`pbmlx.models.checkpoint`; running a Core ML bundle is :mod:`pbmlx.diffuse.coreml`.
"""
