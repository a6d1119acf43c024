"""Core ML export of the InstructPix2Pix editor (``pbmlx export-coreml``).

The stages, one module each, in the order an export runs them:

- :mod:`.source` -- the source model as PyTorch modules: a diffusers folder or hub id, or a
  folder written by ``pbmlx convert`` (MLX tensors mapped back to diffusers' names);
- :mod:`.ane` -- the Neural Engine variant of the UNet (split-einsum attention, 1x1
  convolutions, channels-first ``(B, C, 1, S)`` layout), loading the same state dict;
- :mod:`.modules` -- the five export wrappers with named inputs and outputs (text encoder,
  UNet whole or in two chunks, VAE encoder, VAE decoder) and their sample inputs;
- :mod:`.export` -- ``export_coreml(...)``: trace, convert with coremltools, describe,
  compress, save the app bundle atomically;
- :mod:`.compress` -- post-training k-means palettization;
- :mod:`.bundle` -- ``pbmlx-coreml.json``, the contract an app drives the bundle by;
- :mod:`.readback` -- weights read back from a saved package (the proof that runs on Linux);
- :mod:`.cli` -- the command.

Needs the ``coreml`` extra (torch, diffusers, transformers, coremltools); the runtime of pbmlx
never imports this package.
"""
