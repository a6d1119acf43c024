"""diffusers InstructPix2Pix checkpoint -> a pbmlx MLX folder (``pbmlx convert``).

:func:`convert` reads a diffusers-layout pipeline (a folder, or a Hugging Face Hub id downloaded
with only the files it needs), and writes the folder described in
:mod:`pbmlx.models.checkpoint`. For each network (:data:`~pbmlx.models.checkpoint.COMPONENTS`):

1. read the source tensors: safetensors, or -- only with ``allow_pickle`` -- PyTorch pickles
   (``.bin``/``.ckpt``/``.pt``/``.pth``, read with ``torch.load(weights_only=True)``);
2. adapt names and layouts once with the model file's ``sanitize`` (the single weight mapping:
   no renaming beyond it is needed, so there is no second table here);
3. build the module from the source's own ``config.json`` and load the tensors strictly (so a
   missing, extra or misshapen tensor fails here, naming it, not later at edit time);
4. cast floating tensors to ``dtype``; with ``quantize``, replace the layers that
   :data:`QUANTIZED_LAYERS` selects by MLX affine-quantized layers (``bits``, ``group_size``);
5. save the module's tensors to ``<component>/model.safetensors`` with the metadata
   ``{"format": "mlx", ...}`` (the loader then skips ``sanitize``), beside the source's
   unchanged ``config.json``.

Then the tokenizer files and ``scheduler_config.json`` are copied, the source's licence files
too, and ``README.md`` (model card) and ``pbmlx.json`` (manifest, with the SHA-256 of every
file) are written. Everything goes into a hidden sibling of ``out_dir`` that is renamed to
``out_dir`` only when complete: a failed or interrupted conversion leaves nothing behind.

What is quantized, and why (measured on the full-size InstructPix2Pix networks): MLX has fused
quantized kernels for ``Linear`` (quantized matmul) and ``Embedding`` (row gather), none for
convolutions. The UNet's Linear layers (attention, feed-forward, projections, time embedding:
295M of its 860M parameters) and the text encoder's Linear layers and token embedding (123M
of 123M but the 59K position embedding) are quantized. Convolutions (the UNet's other 564M,
and 81M of the VAE's 84M) stay in ``dtype``: a quantized convolution would have to be
dequantized to a full-precision copy on every call of every denoising step, trading speed for
size on the network that runs 20 times per edit. The VAE is not quantized at all: it is
almost all convolutions, and its decoder writes pixels directly, so its errors land in the
photo with no denoising step to absorb them.
"""

from __future__ import annotations

import contextlib
import json
import shlex
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mlx.core as mx
import mlx.nn as nn
from mlx.utils import tree_flatten
from pbmlx.convert.atomic import atomic_folder, refuse_existing

from pbmlx import __version__
from pbmlx.errors import PbmlxError
from pbmlx.hub import is_hub_id, is_local, snapshot
from pbmlx.models.checkpoint import (
    COMPONENTS,
    FORMAT,
    FORMAT_VERSION,
    MARKER,
    QUANTIZATION_GROUP_SIZES,
    WEIGHTS_NAME,
    build_component,
    quantize_layers,
    sha256_file,
)
from pbmlx.models.tokenizer import CLIPTokenizer
from pbmlx.models.weights import (
    CONFIG_NAME,
    MLX_FORMAT,
    PICKLE_SUFFIXES,
    load_strict,
    read_config,
    read_safetensors,
    weight_files,
)

DTYPES = {"float16": mx.float16, "bfloat16": mx.bfloat16, "float32": mx.float32}
DEFAULT_DTYPE = "float16"  # half the size of float32; what Apple GPUs and the ANE run fastest
QUANTIZE_BITS = (4, 8)  # what `--quantize` offers (MLX supports more; these are the useful two)
DEFAULT_GROUP_SIZE = 64  # MLX's default; divides every Linear input width of SD 1.5 / CLIP-L
MODEL_INDEX = "model_index.json"  # marks a diffusers pipeline folder
SCHEDULER_CONFIG = "scheduler/scheduler_config.json"
TOKENIZER_FILES = (
    "vocab.json",
    "merges.txt",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
)
LICENCE_PREFIXES = ("LICENSE", "LICENCE", "COPYING")  # licence files copied from the source
MODEL_CARD = "README.md"
# The single-file pickle names diffusers and transformers write, in the order looked for.
PICKLE_NAMES = ("diffusion_pytorch_model.bin", "pytorch_model.bin")
HUB_URL = "https://huggingface.co/"

# --quantize: the layer types quantized in each component (see the module docstring for why),
# and layers excluded by path: the text encoder reads position_embedding.weight directly (not
# through the layer's call), which a quantized layer does not have.
QUANTIZED_LAYERS: dict[str, tuple[type[nn.Module], ...]] = {
    "unet": (nn.Linear,),
    "text_encoder": (nn.Linear, nn.Embedding),
    "vae": (),
}
NOT_QUANTIZED = frozenset({"text_encoder:embeddings.position_embedding"})

Log = Callable[[str], None]


@dataclass(frozen=True)
class Source:
    """Where a conversion reads from: the local folder, and what the user named."""

    folder: Path
    name: str  # as given: a path or a hub id
    hub_id: str | None = None
    revision: str | None = None  # the hub snapshot's commit


# ---------------------------------------------------------------------------- the source


def resolve_source(source: str | Path, *, allow_pickle: bool = False) -> Source:
    """The local folder of ``source``: the folder itself, or the Hub snapshot of an id.

    Hub ids are fetched by the editor's resolver (:func:`pbmlx.editor.resolve_model`: only
    configs, tokenizer files and safetensors weights; pickle-only repositories refused), plus
    the model card and licence files, best effort. With ``allow_pickle``, a repository whose
    components lack safetensors gets their pickle weights too, and only those.
    """
    from pbmlx.editor import resolve_model

    text = str(source)
    if is_local(source) or isinstance(source, Path) or not is_hub_id(text):
        return Source(resolve_model(source), text)
    folder = _fetch_with_pickles(text) if allow_pickle else resolve_model(text)
    _fetch_card(text)
    revision = folder.name if folder.parent.name == "snapshots" else None
    return Source(folder, text, hub_id=text, revision=revision)


def _fetch_with_pickles(repo_id: str) -> Path:
    """The editor's safetensors download, then pickle weights for the components that lack
    safetensors (never both formats of one component: real repositories often carry both)."""
    from pbmlx.editor import HUB_PATTERNS

    folder = snapshot(repo_id, HUB_PATTERNS)
    lacking = [c for c in COMPONENTS if not any((folder / c).glob("*.safetensors"))]
    if lacking:
        patterns = [
            f"{c}/{name}{suffix}"
            for c in lacking
            for name in ("diffusion_pytorch_model", "pytorch_model")
            for suffix in (".bin", ".bin.index.json", "-*-of-*.bin")
        ]
        folder = snapshot(repo_id, patterns)
    return folder


def _fetch_card(repo_id: str) -> None:
    """Download the repository's model card and licence files into the same snapshot; their
    absence or a failed download only makes the model card's licence line less specific."""
    with contextlib.suppress(PbmlxError):
        snapshot(repo_id, [MODEL_CARD, *(f"{p}*" for p in LICENCE_PREFIXES)])


def _check_pipeline(folder: Path) -> dict[str, dict[str, Any]]:
    """The three components' configs, after checking that ``folder`` is a diffusers
    InstructPix2Pix pipeline whose configs agree with each other."""
    if (folder / MARKER).is_file():
        raise PbmlxError(
            f"Source {folder} was already converted by pbmlx ({MARKER}); convert from the "
            "diffusers checkpoint it came from."
        )
    if not (folder / MODEL_INDEX).is_file():
        raise PbmlxError(
            f"Source {folder} is not a diffusers pipeline folder (it has no {MODEL_INDEX})."
        )
    read_config(folder / MODEL_INDEX)
    for sub in (*COMPONENTS, "tokenizer", "scheduler"):
        if not (folder / sub).is_dir():
            raise PbmlxError(
                f"Source {folder} has no {sub}/ folder (a diffusers pipeline has one)."
            )
    configs = {c: read_config(folder / c / CONFIG_NAME) for c in COMPONENTS}
    u, v, t = configs["unet"], configs["vae"], configs["text_encoder"]
    unet_cfg = folder / "unet" / CONFIG_NAME
    latent = v.get("latent_channels", 4)
    if u.get("in_channels", 4) != 2 * latent:
        raise PbmlxError(
            f"Source {folder} is not an InstructPix2Pix checkpoint: its UNet ({unet_cfg}) takes "
            f"{u.get('in_channels', 4)} input channels, an InstructPix2Pix UNet takes "
            f"{2 * latent} (noisy latents + image latents)."
        )
    if u.get("out_channels", 4) != latent:
        raise PbmlxError(
            f"UNet config {unet_cfg} predicts {u.get('out_channels', 4)} channels but the VAE's "
            f"latents have {latent}: the configs do not match."
        )
    if u.get("cross_attention_dim", 768) != t.get("hidden_size", 512):
        raise PbmlxError(
            f"UNet config {unet_cfg} has cross_attention_dim {u.get('cross_attention_dim', 768)} "
            f"but the text encoder's hidden_size is {t.get('hidden_size', 512)}: the configs do "
            "not match."
        )
    return configs


def _check_tokenizer(folder: Path, text_config: dict[str, Any]) -> list[Path]:
    """The tokenizer files to copy, after loading them as the runtime will (any problem
    raises here, not at edit time) and checking every id fits the text encoder."""
    tok_dir = folder / "tokenizer"
    CLIPTokenizer.from_folder(tok_dir)
    vocab_file = tok_dir / "vocab.json"
    if vocab_file.is_file():
        n_ids = max(read_config(vocab_file).values()) + 1
        vocab_size = text_config.get("vocab_size", 49408)
        if n_ids > vocab_size:
            raise PbmlxError(
                f"Tokenizer {vocab_file} has ids up to {n_ids - 1} but the text encoder's "
                f"vocab_size is {vocab_size}: the tokenizer and the text encoder do not match."
            )
    return [tok_dir / n for n in TOKENIZER_FILES if (tok_dir / n).is_file()]


def pickle_files(folder: Path) -> list[Path]:
    """The pickle weight files of one component folder: those an index
    (``*.bin.index.json``) names, else a standard single-file name, else the folder's only
    pickle file; ``[]`` when there is none."""
    indexes = sorted(folder.glob("*.bin.index.json"))
    if indexes:
        weight_map = read_config(indexes[0]).get("weight_map")
        if not isinstance(weight_map, dict) or not weight_map:
            raise PbmlxError(f"Pickle index {indexes[0]} has no weight_map.")
        files = [folder / n for n in sorted(set(weight_map.values()))]
        for f in files:
            if not f.is_file():
                raise PbmlxError(f"Shard {f} listed in {indexes[0].name} does not exist.")
        return files
    for name in PICKLE_NAMES:
        if (folder / name).is_file():
            return [folder / name]
    found = sorted(p for p in folder.iterdir() if p.suffix in PICKLE_SUFFIXES and p.is_file())
    if len(found) > 1:
        names = ", ".join(p.name for p in found)
        raise PbmlxError(
            f"Model folder {folder} holds several pickle files ({names}) and no index."
        )
    return found


def _require_torch(path: Path) -> Any:
    try:
        import torch
    except ImportError:
        raise PbmlxError(
            f"Reading the pickle weights {path} needs PyTorch, which is not installed "
            "(pip install 'pbmlx[convert]')."
        ) from None
    return torch


def read_pickles(files: list[Path]) -> tuple[dict[str, mx.array], dict[str, Path]]:
    """Tensors of PyTorch pickle checkpoints, read with ``torch.load(weights_only=True)``
    (tensors and plain containers only: a file asking to run other code is refused)."""
    torch = _require_torch(files[0])
    tensors: dict[str, mx.array] = {}
    origin: dict[str, Path] = {}
    for path in files:
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as e:  # truncated zip, foreign pickle, refused global: one line
            reason = (str(e).strip().splitlines() or [type(e).__name__])[0]
            raise PbmlxError(f"Pickle weights file {path} could not be read ({reason}).") from None
        if not isinstance(state, dict):
            raise PbmlxError(f"Pickle weights file {path} does not hold a dict of tensors.")
        for name, t in state.items():
            if not isinstance(t, torch.Tensor):
                raise PbmlxError(f"Entry '{name}' of pickle weights file {path} is not a tensor.")
            if name in tensors:
                raise PbmlxError(f"Tensor '{name}' appears in both {origin[name]} and {path}.")
            # numpy has no bfloat16: go through float32, which holds every bfloat16 exactly.
            bf16 = t.dtype == torch.bfloat16
            array = mx.array(t.detach().float().numpy() if bf16 else t.detach().numpy())
            tensors[name] = array.astype(mx.bfloat16) if bf16 else array
            origin[name] = path
    return tensors, origin


def component_files(folder: Path, *, allow_pickle: bool) -> tuple[list[Path], bool]:
    """``(files, pickled)``: the weight files of one source component folder -- safetensors
    when there are any, else pickle files when ``allow_pickle`` -- or a refusal naming them."""
    if any(folder.glob("*.safetensors")):
        return weight_files(folder), False
    pickles = pickle_files(folder)
    if not pickles:
        weight_files(folder)  # raises its "no safetensors weights" error
    if not allow_pickle:
        names = ", ".join(p.name for p in pickles)
        raise PbmlxError(
            f"Model folder {folder} has only pickle weights ({names}); pickle files can run "
            "code when loaded, so pbmlx refuses them unless you pass --allow-pickle (only for "
            "a source you trust)."
        )
    return pickles, True


def read_component(
    folder: Path, *, allow_pickle: bool
) -> tuple[dict[str, mx.array], dict[str, Path], list[Path], bool]:
    """``(tensors, origin, files, mlx_layout)`` of one source component folder (see
    :func:`component_files` for which files)."""
    files, pickled = component_files(folder, allow_pickle=allow_pickle)
    if pickled:
        tensors, origin = read_pickles(files)
        return tensors, origin, files, False
    tensors, origin, mlx_layout = read_safetensors(files)
    return tensors, origin, files, mlx_layout


# ---------------------------------------------------------------------------- converting


def quantizable_layers(name: str, model: nn.Module, group_size: int) -> list[str]:
    """Paths of the layers of component ``name`` that ``--quantize`` turns into quantized
    layers: the types :data:`QUANTIZED_LAYERS` lists, minus :data:`NOT_QUANTIZED`, whose input
    width (the last axis of the weight) is a multiple of ``group_size`` (MLX's requirement;
    every such layer of the full-size networks qualifies at 32, 64 or 128)."""
    kinds = QUANTIZED_LAYERS[name]
    if not kinds:
        return []
    paths: list[str] = []
    for path, module in tree_flatten(model.leaf_modules(), is_leaf=nn.Module.is_module):
        if (
            isinstance(module, kinds)
            and f"{name}:{path}" not in NOT_QUANTIZED
            and module.weight.shape[-1] % group_size == 0
        ):
            paths.append(path)
    return paths


def convert_component(
    source: Path,
    name: str,
    out: Path,
    *,
    dtype: mx.Dtype,
    bits: int | None,
    group_size: int,
    allow_pickle: bool,
) -> list[str]:
    """Convert ``source/<name>`` into ``out/<name>`` (steps 1-5 of the module docstring);
    returns the paths of the layers it quantized."""
    component = COMPONENTS[name]
    src = source / name
    config_file = src / CONFIG_NAME
    model = build_component(name, config_file)
    tensors, origin, files, mlx_layout = read_component(src, allow_pickle=allow_pickle)
    if not mlx_layout:
        tensors = component.sanitize(tensors)
    load_strict(model, tensors, origin=origin, files=files, config_file=config_file, dtype=dtype)
    del tensors
    layers: list[str] = []
    if bits is not None:
        layers = quantizable_layers(name, model, group_size)
        quantize_layers(model, layers, bits=bits, group_size=group_size)
    dst = out / name
    dst.mkdir()
    shutil.copyfile(config_file, dst / CONFIG_NAME)
    metadata = {
        "format": MLX_FORMAT,
        "pbmlx_version": __version__,
        "component": name,
        "dtype": str(dtype).removeprefix("mlx.core."),
        "quantization": json.dumps(
            {"bits": bits, "group_size": group_size, "mode": "affine"} if layers else None
        ),
    }
    mx.save_safetensors(str(dst / WEIGHTS_NAME), dict(tree_flatten(model.parameters())), metadata)
    return layers


def _licence(folder: Path) -> dict[str, str]:
    """``license``, ``license_name``, ``license_link`` from the source model card's YAML front
    matter (flat ``key: value`` lines; no YAML parser needed for these three)."""
    card = folder / MODEL_CARD
    try:
        text = card.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return {}
    lines = text.splitlines()
    if not lines or lines[0].strip() != "---":
        return {}
    found: dict[str, str] = {}
    for line in lines[1:]:
        if line.strip() == "---":
            break
        key, sep, value = line.partition(":")
        if sep and key.strip() in ("license", "license_name", "license_link") and value.strip():
            found[key.strip()] = value.strip().strip("'\"")
    return found


def model_card(
    source: Source, out_dir: Path, manifest: dict[str, Any], licence_files: list[str]
) -> str:
    """The converted folder's README.md: source, licence note, settings, how to use it."""
    licence = manifest["source"].get("license", {})
    where = f"{HUB_URL}{source.hub_id}" if source.hub_id else f"`{source.folder.resolve()}`"
    if licence.get("license"):
        named = licence.get("license_name") or licence["license"]
        link = f" ({licence['license_link']})" if licence.get("license_link") else ""
        licence_line = (
            f"These weights are a format conversion of the source's and keep its licence: "
            f"**{named}**{link}, as its model card at {where} declares."
        )
    else:
        licence_line = (
            "These weights are a format conversion of the source's and keep its licence, which "
            f"its files do not state: check the licence at {where} before using or sharing them."
        )
    if licence_files:
        licence_line += (
            " The source's licence files are copied here: "
            + ", ".join(f"`{f}`" for f in licence_files)
            + "."
        )
    q = manifest["quantization"]
    if q:
        counts = ", ".join(f"{len(v)} layers of the {c}" for c, v in q["layers"].items() if v)
        quant = (
            f"{q['bits']}-bit affine (MLX), group size {q['group_size']}: {counts} (Linear "
            "layers and the text encoder's token embedding); convolutions and the VAE are "
            f"kept in {manifest['dtype']}"
        )
    else:
        quant = "none"
    front = ["---", f"license: {licence.get('license', 'other')}"]
    front += [f"{k}: {licence[k]}" for k in ("license_name", "license_link") if k in licence]
    if source.hub_id:
        front.append(f"base_model: {source.hub_id}")
    front += ["library_name: pbmlx", "tags: [pbmlx, mlx, instruct-pix2pix, image-editing]", "---"]
    revision = f" (revision {source.revision})" if source.revision else ""
    return "\n".join(
        [
            *front,
            "",
            f"# {out_dir.name}: {source.name} for pbmlx (MLX)",
            "",
            f"An InstructPix2Pix model converted from {where}{revision} by `pbmlx convert` "
            f"(pbmlx {__version__}) to MLX safetensors, for instruction-driven photo editing "
            "on the device with [pbmlx](https://pypi.org/project/pbmlx/).",
            "",
            "## Licence",
            "",
            licence_line,
            "",
            "## Conversion",
            "",
            f"- dtype: {manifest['dtype']}",
            f"- quantization: {quant}",
            "- `unet/`, `vae/`, `text_encoder/`: the source's `config.json` and "
            f"`{WEIGHTS_NAME}` in MLX layout (NHWC convolution kernels)",
            "- `tokenizer/`, `scheduler/`: copied unchanged",
            f"- `{MARKER}`: these settings and the SHA-256 of every file",
            "",
            "## Use",
            "",
            "```",
            f'pbmlx edit photo.jpg "make it winter" --model {shlex.quote(str(out_dir))}',
            "```",
            "",
            "```python",
            "from pbmlx.editor import Editor",
            f"editor = Editor.from_pretrained({str(out_dir)!r})",
            'result = editor.edit(image, "make it winter")  # image: a PIL image',
            "```",
            "",
        ]
    )


def convert(
    source: str | Path,
    out_dir: str | Path,
    *,
    quantize: int | None = None,
    dtype: str = DEFAULT_DTYPE,
    allow_pickle: bool = False,
    group_size: int = DEFAULT_GROUP_SIZE,
    log: Log | None = None,
) -> Path:
    """Convert the InstructPix2Pix pipeline ``source`` (a diffusers-layout folder or a Hub id)
    into a new pbmlx folder ``out_dir``; returns ``out_dir``.

    ``dtype``: ``"float16"`` (default), ``"bfloat16"`` or ``"float32"`` for every floating
    tensor. ``quantize``: ``4`` or ``8`` bits for the layers :data:`QUANTIZED_LAYERS` selects
    (``group_size`` weights share a scale and a bias). ``allow_pickle`` lets PyTorch pickle
    weights be read (with torch) when a component has no safetensors. ``log`` receives one line
    per stage. Any problem (bad source, not InstructPix2Pix, truncated file, missing or
    misshapen tensor, configs that do not match, unreachable hub id, existing ``out_dir``)
    raises :class:`PbmlxError` naming the file or tensor, and ``out_dir`` is left untouched.
    """
    if dtype not in DTYPES:
        raise PbmlxError(f"dtype {dtype!r} is not one of {', '.join(DTYPES)}.")
    if quantize is not None and quantize not in QUANTIZE_BITS:
        raise PbmlxError(f"--quantize {quantize!r} must be one of {QUANTIZE_BITS}.")
    if group_size not in QUANTIZATION_GROUP_SIZES:
        raise PbmlxError(f"Group size {group_size!r} must be one of {QUANTIZATION_GROUP_SIZES}.")
    log = log or (lambda _: None)
    out_dir = Path(out_dir).expanduser()
    refuse_existing(out_dir)  # before any download
    # Every check that needs no tensor comes first: a refusal costs no conversion time.
    src = resolve_source(source, allow_pickle=allow_pickle)
    configs = _check_pipeline(src.folder)
    tokenizer_files = _check_tokenizer(src.folder, configs["text_encoder"])
    read_config(src.folder / SCHEDULER_CONFIG)  # a JSON object; copied byte for byte below
    for name in COMPONENTS:
        files, pickled = component_files(src.folder / name, allow_pickle=allow_pickle)
        if pickled:
            _require_torch(files[0])

    with atomic_folder(out_dir) as tmp:
        layers: dict[str, list[str]] = {}
        for name in COMPONENTS:
            log(f"converting {name}")
            layers[name] = convert_component(
                src.folder,
                name,
                tmp,
                dtype=DTYPES[dtype],
                bits=quantize,
                group_size=group_size,
                allow_pickle=allow_pickle,
            )
            mx.clear_cache()
        log("copying tokenizer, scheduler and licence files")
        (tmp / "tokenizer").mkdir()
        for f in tokenizer_files:
            shutil.copyfile(f, tmp / "tokenizer" / f.name)
        (tmp / "scheduler").mkdir()
        shutil.copyfile(src.folder / SCHEDULER_CONFIG, tmp / SCHEDULER_CONFIG)
        licence_files = sorted(
            p.name
            for p in src.folder.iterdir()
            if p.is_file() and p.name.upper().startswith(LICENCE_PREFIXES)
        )
        for f in licence_files:
            shutil.copyfile(src.folder / f, tmp / f)

        index = read_config(src.folder / MODEL_INDEX)
        manifest: dict[str, Any] = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "pbmlx_version": __version__,
            "source": {
                "model": src.name,
                "hub_id": src.hub_id,
                "revision": src.revision,
                "pipeline_class": index.get("_class_name"),
                "license": _licence(src.folder),
            },
            "dtype": dtype,
            "quantization": (
                {
                    "bits": quantize,
                    "group_size": group_size,
                    "mode": "affine",
                    "layers": {c: v for c, v in layers.items() if v},
                }
                if quantize is not None
                else None
            ),
            "components": {
                c: {"config": f"{c}/{CONFIG_NAME}", "weights": f"{c}/{WEIGHTS_NAME}"}
                for c in COMPONENTS
            },
            "tokenizer": "tokenizer",
            "scheduler": SCHEDULER_CONFIG,
        }
        (tmp / MODEL_CARD).write_text(
            model_card(src, out_dir, manifest, licence_files), encoding="utf-8"
        )
        log("hashing files")
        manifest["files"] = {
            p.relative_to(tmp).as_posix(): {"bytes": p.stat().st_size, "sha256": sha256_file(p)}
            for p in sorted(tmp.rglob("*"))
            if p.is_file()
        }
        (tmp / MARKER).write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    return out_dir
