"""``pbmlx-coreml.json``: everything an app needs to drive the bundle, in one file.

The input/output names, shapes and dtypes are read back from the saved packages (not from
what the exporter meant to write), so the file cannot disagree with them. Beside them: the
tokenizer rule, the scheduler config, the guidance defaults and the exact dual-guidance
formula, the latent scaling factor (and that image latents are not scaled), the order of the
three UNet branches, and the working-size rule. The README's "Core ML" section walks a Swift
developer through the same steps.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pbmlx import __version__
from pbmlx.diffuse.coreml import FORMAT, FORMAT_VERSION, MANIFEST
from pbmlx.diffuse.pipeline import DEFAULT_GUIDANCE, DEFAULT_IMAGE_GUIDANCE, DEFAULT_STEPS
from pbmlx.diffuse.schedulers import DEFAULT_SCHEDULER

# The file's name and format are the runtime reader's (pbmlx.diffuse.coreml), defined once.

GUIDANCE_FORMULA = (
    "eps = eps_uncond + guidance_scale * (eps_text - eps_image) "
    "+ image_guidance_scale * (eps_image - eps_uncond)"
)
BATCH_ORDER = [
    {"row": 0, "name": "eps_text", "text": "instruction", "image_latents": "image_latents"},
    {"row": 1, "name": "eps_image", "text": '""', "image_latents": "image_latents"},
    {"row": 2, "name": "eps_uncond", "text": '""', "image_latents": "zeros"},
]


def package_io(package: Path) -> dict[str, Any]:
    """``{"inputs": [...], "outputs": [...], "description": ...}`` of a saved package: each
    feature's name, shape, dtype and description, as its spec records them."""
    import coremltools as ct

    spec = ct.utils.load_spec(str(package))
    dtypes = ct.proto.FeatureTypes_pb2.ArrayFeatureType.ArrayDataType

    def features(items) -> list[dict[str, Any]]:
        return [
            {
                "name": f.name,
                "shape": list(f.type.multiArrayType.shape),
                "dtype": dtypes.Name(f.type.multiArrayType.dataType).lower(),
                "description": f.shortDescription,
            }
            for f in items
        ]

    return {
        "description": spec.description.metadata.shortDescription,
        "inputs": features(spec.description.input),
        "outputs": features(spec.description.output),
    }


def folder_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def _tokenizer_rule(source: Any) -> dict[str, Any]:
    config: dict[str, Any] = {}
    for f in source.tokenizer_files:
        if f.name == "tokenizer_config.json":
            config = json.loads(f.read_text(encoding="utf-8"))

    def token(value: Any, default: str) -> str:
        if isinstance(value, dict):
            return value.get("content", default)
        return value if isinstance(value, str) else default

    return {
        "vocab": "vocab.json",
        "merges": "merges.txt",
        "kind": "CLIP byte-level BPE (lower-cased, whitespace collapsed, </w> word ends)",
        "max_length": 77,
        "bos": token(config.get("bos_token"), "<|startoftext|>"),
        "eos": token(config.get("eos_token"), "<|endoftext|>"),
        "pad": token(config.get("pad_token"), "<|endoftext|>"),
        "rule": "ids = [bos] + bpe(prompt)[:75] + [eos], then pad with pad to 77",
    }


def saved_models(folder: Path, names: list[str]) -> dict[str, Any]:
    """``{name: {"file", "bytes", "description", "inputs", "outputs"}}`` of the packages
    ``<name>.mlpackage`` saved in ``folder``."""
    models = {}
    for name in names:
        package = folder / f"{name}.mlpackage"
        models[name] = {"file": package.name, "bytes": folder_bytes(package), **package_io(package)}
    return models


def manifest(
    source: Any, options: Any, models: dict[str, Any], metadata: dict[str, str]
) -> dict[str, Any]:
    """The contents of ``pbmlx-coreml.json``: ``models`` as :func:`saved_models` gives them,
    the rest from the source model and the export ``options``."""
    width, height = options.size
    factor = source.vae_factor
    vae_config = source.configs["vae"]
    unet_names = ["UnetChunk1", "UnetChunk2"] if options.chunk_unet else ["Unet"]
    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "pbmlx_version": __version__,
        "source": {
            "model": source.name,
            "kind": source.kind,
            "hub_id": source.hub_id,
            "revision": source.revision,
            "license": metadata["license"],
            "quantized_in_source": source.quantized,
        },
        "export": {
            "attention": options.attention,
            "compute_precision": "float16",
            "palettize_bits": options.palettize,
            "target": options.target,
            "unet_batch": options.unet_batch,
            "chunk_unet": options.chunk_unet,
        },
        "models": models,
        "unet": unet_names,
        "chain": (
            "UnetChunk2's inputs are UnetChunk1's outputs of the same names plus "
            "encoder_hidden_states (the same array given to UnetChunk1)"
            if options.chunk_unet
            else None
        ),
        "working_size": {
            "width": width,
            "height": height,
            "latent_width": width // factor,
            "latent_height": height // factor,
            "vae_factor": factor,
            "rule": (
                f"Shapes are fixed: resize the photo to exactly {width}x{height} (RGB, values "
                "in [0, 1], channels first) before VAEEncoder, and the VAEDecoder output back "
                "to the photo's size; export with --size WxH near the photos' aspect ratio."
            ),
        },
        "tokenizer": _tokenizer_rule(source),
        "scheduler": {
            "default": DEFAULT_SCHEDULER,
            "config": source.scheduler_config,
            "steps": DEFAULT_STEPS,
        },
        "guidance": {
            "guidance_scale": DEFAULT_GUIDANCE,
            "image_guidance_scale": DEFAULT_IMAGE_GUIDANCE,
            "formula": GUIDANCE_FORMULA,
            "batch_order": BATCH_ORDER,
            "unet_batch": options.unet_batch,
            "with_unet_batch_1": "call the UNet once per row of batch_order, then combine",
        },
        "latents": {
            "channels": vae_config.get("latent_channels", 4),
            "scaling_factor": vae_config.get("scaling_factor", 0.18215),
            "image_latents_scaled": False,
            "initial": "latents = init_noise_sigma * N(0, 1), shape (1, C, h, w)",
            "unet_input": (
                "sample = concat([scale_model_input(latents, t)] * rows, axis=0) on the batch, "
                "then concat on channels with [image_latents, image_latents, zeros]"
            ),
            "decoder_input": "the final latents as they are: VAEDecoder divides by "
            "scaling_factor itself",
        },
    }


def write_manifest(
    folder: Path, source: Any, options: Any, names: list[str], metadata: dict[str, str]
) -> Path:
    """Write ``pbmlx-coreml.json`` for the packages ``names`` saved in ``folder``."""
    path = folder / MANIFEST
    data = manifest(source, options, saved_models(folder, names), metadata)
    path.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    return path
