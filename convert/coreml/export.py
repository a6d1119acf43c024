"""``export_coreml(model, out_dir, ...)``: an InstructPix2Pix model -> a Core ML app bundle.

For each package (:mod:`.modules`), the same recipe:

1. the export wrapper and its named sample inputs (fixed shapes: Core ML, and the Neural
   Engine above all, run fixed shapes fastest);
2. ``torch.export.export(...).run_decompositions({})`` -- not ``torch.jit.trace``, which fails
   inside coremltools on the diffusers UNet with NumPy 2 -- and the graph's ``aten.alias``
   nodes (identities that coremltools 9 has no converter for) removed;
3. ``coremltools.convert`` to an ``mlprogram`` computing in float16 for the chosen deployment
   target, with float32 inputs and outputs (int32 token ids) named as the wrapper names them;
4. optionally palettized (:mod:`.compress`);
5. a description on the model and on every input and output, and author / licence / version
   metadata from the source model card;
6. saved as ``<Name>.mlpackage``, then the memory freed before the next one.

Then ``vocab.json`` and ``merges.txt`` are copied and ``pbmlx-coreml.json`` (:mod:`.bundle`)
written. Everything goes into a hidden sibling of ``out_dir`` renamed into place when complete:
a failed or interrupted export leaves nothing behind.
"""

from __future__ import annotations

import gc
import logging
import shutil
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pbmlx.convert.atomic import atomic_folder, refuse_existing

from pbmlx import __version__
from pbmlx.errors import PbmlxError

ATTENTIONS = ("split-einsum", "original")
DEFAULT_ATTENTION = "split-einsum"  # runs on every compute unit, the Neural Engine included
TARGETS = ("macOS14", "macOS15", "iOS17", "iOS18")
DEFAULT_TARGET = "macOS14"
UNET_BATCHES = (3, 1)
DEFAULT_UNET_BATCH = 3  # the three guidance branches in one call
DEFAULT_SIZE = (512, 512)  # (width, height): what SD 1.5 / InstructPix2Pix was trained at
MAX_SIDE = 2048
TOKENIZER_FILES = ("vocab.json", "merges.txt")

Log = Callable[[str], None]


@dataclass(frozen=True)
class ExportOptions:
    """What to export; see :func:`export_coreml`."""

    attention: str = DEFAULT_ATTENTION
    palettize: int | None = None
    size: tuple[int, int] = DEFAULT_SIZE  # (width, height) of the working image
    unet_batch: int = DEFAULT_UNET_BATCH
    chunk_unet: bool = False
    target: str = DEFAULT_TARGET


def parse_size(text: str) -> tuple[int, int]:
    """``"512"`` -> ``(512, 512)``; ``"512x384"`` -> ``(512, 384)`` (width x height)."""
    parts = text.lower().split("x")
    try:
        if len(parts) == 1:
            side = int(parts[0])
            return side, side
        if len(parts) == 2:
            return int(parts[0]), int(parts[1])
    except ValueError:
        pass
    raise PbmlxError(f"--size {text!r} is not N or WIDTHxHEIGHT (e.g. 512 or 512x384).")


def check_size(size: tuple[int, int], multiple: int) -> None:
    """Each side a multiple of ``multiple`` (VAE factor x the UNet's down factor, 64 for SD)
    in ``[multiple, MAX_SIDE]``."""
    for side in size:
        if side < multiple or side > MAX_SIDE or side % multiple:
            raise PbmlxError(
                f"--size {size[0]}x{size[1]} is not supported: each side must be a multiple of "
                f"{multiple} between {multiple} and {MAX_SIDE} pixels for this model."
            )


def check_options(options: ExportOptions) -> None:
    from pbmlx.convert.coreml.compress import PALETTE_BITS

    if options.attention not in ATTENTIONS:
        raise PbmlxError(f"--attention {options.attention!r} must be one of {ATTENTIONS}.")
    if options.target not in TARGETS:
        raise PbmlxError(f"--target {options.target!r} must be one of {TARGETS}.")
    if options.unet_batch not in UNET_BATCHES:
        raise PbmlxError(f"--unet-batch {options.unet_batch!r} must be one of {UNET_BATCHES}.")
    if options.palettize is not None and options.palettize not in PALETTE_BITS:
        raise PbmlxError(f"--palettize {options.palettize!r} must be one of {PALETTE_BITS}.")


def quiet_toolchain() -> None:
    """Keep the conversion libraries' chatter off the terminal, so that a refusal is one line:
    coremltools warns at import that torch newer than the last one it was tested with is
    untested (the conversions pbmlx makes are tested here, see the README) and, on Linux,
    that its runtime library is absent (expected); diffusers suggests installing accelerate;
    torch.export warns about its own internals."""
    logging.getLogger("coremltools").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", message=".*has not been tested with coremltools.*")
    warnings.filterwarnings("ignore", category=FutureWarning)
    from diffusers.utils import logging as diffusers_logging
    from transformers.utils import logging as transformers_logging

    diffusers_logging.set_verbosity_error()
    transformers_logging.set_verbosity_error()
    for bar in (diffusers_logging, transformers_logging):
        bar.disable_progress_bar()


def drop_aliases(program: Any) -> Any:
    """Remove ``aten.alias`` nodes (identities) from an exported program, in place."""
    import torch

    graph = program.graph
    for node in list(graph.nodes):
        if node.op == "call_function" and node.target is torch.ops.aten.alias.default:
            node.replace_all_uses_with(node.args[0])
            graph.erase_node(node)
    program.graph_module.recompile()
    return program


def to_mlprogram(spec: Any, target: str) -> Any:
    """Steps 2-3 of the module docstring for one :class:`~.modules.ExportSpec`."""
    import coremltools as ct
    import numpy as np
    import torch

    args = tuple(spec.inputs.values())
    with torch.no_grad():
        program = torch.export.export(spec.module, args).run_decompositions({})
    drop_aliases(program)
    placeholders = list(program.graph_signature.user_inputs)  # in argument order
    mlmodel = ct.convert(
        program,
        inputs=[
            ct.TensorType(
                name=placeholder,
                shape=tuple(t.shape),
                dtype=np.float32 if t.dtype.is_floating_point else np.int32,
            )
            for placeholder, t in zip(placeholders, spec.inputs.values(), strict=True)
        ],
        outputs=[ct.TensorType(name=name, dtype=np.float32) for name in spec.outputs],
        convert_to="mlprogram",
        compute_precision=ct.precision.FLOAT16,
        minimum_deployment_target=getattr(ct.target, target),
        skip_model_load=True,
    )
    # The wrapper's argument names are the placeholders' unless torch renamed them (varargs,
    # clashes): give every input the name the bundle documents.
    model_spec = mlmodel.get_spec()
    for placeholder, wanted in zip(placeholders, spec.inputs, strict=True):
        if placeholder != wanted:
            ct.utils.rename_feature(model_spec, placeholder, wanted)
    if any(p != w for p, w in zip(placeholders, spec.inputs, strict=True)):
        mlmodel = ct.models.MLModel(
            model_spec, weights_dir=mlmodel.weights_dir, skip_model_load=True
        )
    return mlmodel


def describe(mlmodel: Any, spec: Any, metadata: dict[str, str]) -> None:
    """Step 5: descriptions of the model, its inputs and outputs; source metadata."""
    mlmodel.short_description = spec.description
    for name, text in spec.input_descriptions.items():
        mlmodel.input_description[name] = text
    for name, text in spec.output_descriptions.items():
        mlmodel.output_description[name] = text
    mlmodel.author = metadata["author"]
    mlmodel.license = metadata["license"]
    mlmodel.version = metadata["version"]
    for key, value in metadata.items():
        mlmodel.user_defined_metadata[f"pbmlx.{key}"] = value


def source_metadata(source: Any, options: ExportOptions) -> dict[str, str]:
    """Author, licence and version from the source model card, plus the export settings."""
    origin = source.hub_id or str(Path(source.folder).resolve())
    licence = source.licence or {}
    if licence.get("license"):
        named = licence.get("license_name") or licence["license"]
        link = f" ({licence['license_link']})" if licence.get("license_link") else ""
        licence_text = f"{named}{link}, as declared by the model card of {origin}"
    else:
        licence_text = f"not stated by the source's files: see the model card of {origin}"
    revision = source.revision or "local files"
    return {
        "author": f"{origin} (Core ML export by pbmlx {__version__})",
        "license": licence_text,
        "version": f"{origin}@{revision}; pbmlx {__version__}",
        "source": source.name,
        "attention": options.attention,
        "palettize": str(options.palettize or "none"),
        "target": options.target,
    }


def build_specs(source: Any, options: ExportOptions) -> list[Any]:
    """The packages to export, in bundle order (text encoder, UNet, VAE encoder, decoder)."""
    from pbmlx.convert.coreml import modules

    width, height = options.size
    factor = source.vae_factor
    unet = source.unet
    if options.attention == "split-einsum":
        from pbmlx.convert.coreml.ane import to_neural_engine

        try:
            unet = to_neural_engine(unet)
        except ValueError as e:
            raise PbmlxError(
                f"--attention split-einsum cannot rewrite this UNet ({e}); export it with "
                "--attention original."
            ) from None
    text_dim = source.configs["text_encoder"].get("hidden_size", 768)
    return [
        modules.text_encoder_spec(source.text_encoder),
        *modules.unet_specs(
            unet,
            batch=options.unet_batch,
            latent_hw=(height // factor, width // factor),
            text_dim=text_dim,
            chunk=options.chunk_unet,
        ),
        *modules.vae_specs(source.vae, (height, width), factor),
    ]


def export_coreml(
    model: str | Path,
    out_dir: str | Path,
    options: ExportOptions | None = None,
    *,
    log: Log | None = None,
) -> Path:
    """Export the InstructPix2Pix ``model`` (diffusers folder, hub id, or ``pbmlx convert``
    folder) into a new Core ML app bundle ``out_dir``; returns ``out_dir``.

    The bundle: ``TextEncoder``, ``Unet`` (or ``UnetChunk1`` + ``UnetChunk2``),
    ``VAEEncoder``, ``VAEDecoder`` (``.mlpackage``), ``vocab.json``, ``merges.txt`` and
    ``pbmlx-coreml.json``. Any problem (bad or text-to-image model, damaged component,
    unsupported size, existing or unwritable ``out_dir``) raises :class:`PbmlxError`, and
    nothing is left behind.
    """
    from pbmlx.convert.coreml.bundle import write_manifest
    from pbmlx.convert.coreml.compress import palettize
    from pbmlx.convert.coreml.source import load_source

    options = options or ExportOptions()
    check_options(options)
    log = log or (lambda _: None)
    out_dir = Path(out_dir).expanduser()
    refuse_existing(out_dir)  # before any download or conversion
    quiet_toolchain()
    # An unwritable out_dir is refused before any work too; nothing is left on failure.
    with atomic_folder(out_dir) as tmp:
        source = load_source(model)
        check_size(options.size, source.vae_factor * source.unet_factor)
        log(f"read {model} ({source.kind} layout)")
        metadata = source_metadata(source, options)
        exported: list[str] = []
        for spec in build_specs(source, options):
            log(f"converting {spec.name}")
            mlmodel = to_mlprogram(spec, options.target)
            if options.palettize:
                log(f"palettizing {spec.name} to {options.palettize} bits")
                mlmodel = palettize(mlmodel, options.palettize, options.target)
            describe(mlmodel, spec, metadata)
            mlmodel.save(str(tmp / f"{spec.name}.mlpackage"))
            exported.append(spec.name)
            del mlmodel, spec
            gc.collect()
        for f in source.tokenizer_files:
            if f.name in TOKENIZER_FILES:
                shutil.copyfile(f, tmp / f.name)
        missing = [n for n in TOKENIZER_FILES if not (tmp / n).is_file()]
        if missing:
            raise PbmlxError(
                f"Model {model} has no tokenizer/{missing[0]}: the bundle needs CLIP's "
                "vocab.json and merges.txt."
            )
        log("writing pbmlx-coreml.json")
        write_manifest(tmp, source, options, exported, metadata)
    return out_dir
