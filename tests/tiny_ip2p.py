"""Tiny InstructPix2Pix checkpoints for tests, in the exact on-disk layout of a real one.

``build_tiny_ip2p(path, seed)`` writes what ``StableDiffusionInstructPix2PixPipeline.
save_pretrained`` writes for ``timbrooks/instruct-pix2pix`` (``model_index.json``, ``unet/``,
``vae/``, ``text_encoder/``, ``tokenizer/``, ``scheduler/``), from small configs with seeded
random weights. The per-component builders return the diffusers/transformers modules (the
reference implementations) so tests can compare against them on the same weights.

The tiny configs keep every structural feature of the real one: all four UNet block types,
cross-attention, several heads, 2 layers per block, norm groups > 1, attention mid blocks, an
8-channel UNet input, 4 UNet resolutions (so non-multiple-of-8 latents take the reference's
resize-to-skip path) and the legacy CLIP ``eos_token_id = 2`` of SD 1.5's text encoder config.

All weights, norms' scales and biases included, are drawn from one seeded generator (not the
libraries' default init, which leaves norms at 1/0): a mix-up of any two tensors shows. Import
as ``from tiny_ip2p import build_tiny_ip2p`` (tests/ is on sys.path under pytest). Needs torch,
diffusers, transformers and tokenizers (test-only dependencies).
"""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path
from typing import Any

import torch
from tiny_clip import byte_symbols

from pbmlx.bench.configs import IP2P_UNET

BOS, EOS = "<|startoftext|>", "<|endoftext|>"
MAX_LENGTH = 77  # CLIP's context, as SD pads/truncates prompts
TOKENIZER_VOCAB_SIZE = 1000  # requested from the BPE trainer (bytes + merges + 2 specials)
NORM_SCALE_STD = 0.1  # 1-D "weight" tensors (norm scales): 1 + N(0, 0.1)
BIAS_STD = 0.1

# -- configs (diffusers/transformers config.json fields) ---------------------------------------

TINY_UNET_CONFIG: dict[str, Any] = {
    "sample_size": 16,
    "in_channels": 8,  # InstructPix2Pix: noisy latents + image latents
    "out_channels": 4,
    "block_out_channels": [32, 32, 64, 64],
    "layers_per_block": 2,
    "down_block_types": [
        "CrossAttnDownBlock2D",
        "CrossAttnDownBlock2D",
        "CrossAttnDownBlock2D",
        "DownBlock2D",
    ],
    "up_block_types": [
        "UpBlock2D",
        "CrossAttnUpBlock2D",
        "CrossAttnUpBlock2D",
        "CrossAttnUpBlock2D",
    ],
    "attention_head_dim": 2,  # diffusers quirk: 2 heads (of 16 or 32 channels)
    "cross_attention_dim": 32,  # = the tiny text encoder's hidden_size
    "norm_num_groups": 8,
    "norm_eps": 1e-5,
    "act_fn": "silu",
    "flip_sin_to_cos": True,
    "freq_shift": 0,
    "downsample_padding": 1,
    "mid_block_scale_factor": 1,
    "center_input_sample": False,
    "use_linear_projection": False,  # SD 1.x: 1x1 conv proj_in/proj_out
}

TINY_VAE_CONFIG: dict[str, Any] = {
    "in_channels": 3,
    "out_channels": 3,
    "latent_channels": 4,
    "block_out_channels": [32, 32, 64],  # 2 downsamplings: 4x smaller latents
    "layers_per_block": 2,
    "down_block_types": ["DownEncoderBlock2D"] * 3,
    "up_block_types": ["UpDecoderBlock2D"] * 3,
    "norm_num_groups": 8,
    "act_fn": "silu",
    "sample_size": 32,
    "scaling_factor": 0.18215,
}

TINY_TEXT_CONFIG: dict[str, Any] = {
    "hidden_size": 32,
    "intermediate_size": 64,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "max_position_embeddings": MAX_LENGTH,
    "hidden_act": "quick_gelu",
    "layer_norm_eps": 1e-5,
    # SD 1.5's text_encoder/config.json values (eos 2: the legacy pooling rule).
    "bos_token_id": 0,
    "eos_token_id": 2,
    "pad_token_id": 1,
}

# InstructPix2Pix's scheduler_config.json.
SCHEDULER_CONFIG: dict[str, Any] = {
    "beta_start": 0.00085,
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "num_train_timesteps": 1000,
    "prediction_type": "epsilon",
    "steps_offset": 1,
    "trained_betas": None,
}

# Instruction-like text the tiny BPE is trained on.
TOKENIZER_CORPUS = [
    "make it winter",
    "add a red scarf to the dog",
    "turn the sky into a golden sunset",
    "remove the person on the left",
    "replace the coffee cup with a glass of orange juice",
    "change the color of the car to matte black",
    "make it look like a watercolor painting",
    "add snow on the trees and the roof",
    "give the cat sunglasses",
    "convert the photo into a pencil sketch",
    "make the woman smile",
    "add the text 'open' on the sign",
    "make it night time with street lights",
    "change the season to autumn with orange leaves",
    "put a hat on the man",
    "turn the house into a castle",
    "make the water look like lava",
    "add fireworks in the sky",
    "the quick brown fox jumps over the lazy dog",
    "a photo of a cat, a photo of a dog",
]


# -- random weights --------------------------------------------------------------------------


def randomize_(module: torch.nn.Module, seed: int) -> torch.nn.Module:
    """Overwrite every parameter from one generator seeded with ``seed``, in name order.

    Matrices and kernels ~ N(0, 1/fan_in) (activations keep about unit scale through the
    depth); 1-D weights (norm scales) ~ 1 + N(0, 0.1^2); biases ~ N(0, 0.1^2).
    """
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in sorted(module.named_parameters()):
            noise = torch.randn(p.shape, generator=gen, dtype=torch.float32)
            if p.ndim >= 2:
                p.copy_(noise / math.sqrt(math.prod(p.shape[1:])))
            elif name.endswith("weight"):
                p.copy_(1.0 + NORM_SCALE_STD * noise)
            else:
                p.copy_(BIAS_STD * noise)
    return module.eval()


# -- components --------------------------------------------------------------------------------


# The full-size UNet: timbrooks/instruct-pix2pix unet/config.json (SD 1.5 with 8 inputs), for the
# slow parity test and the benchmarks; one copy, pbmlx bench's (it builds the same network).
IP2P_UNET_CONFIG: dict[str, Any] = IP2P_UNET


# The full-size VAE and text encoder of timbrooks/instruct-pix2pix (SD 1.5's; CLIP ViT-L/14's
# text tower), for the slow Core ML export test and benchmarks/coreml_export.py.
IP2P_VAE_CONFIG: dict[str, Any] = {
    "in_channels": 3,
    "out_channels": 3,
    "latent_channels": 4,
    "block_out_channels": [128, 256, 512, 512],
    "layers_per_block": 2,
    "down_block_types": ["DownEncoderBlock2D"] * 4,
    "up_block_types": ["UpDecoderBlock2D"] * 4,
    "norm_num_groups": 32,
    "act_fn": "silu",
    "sample_size": 256,
    "scaling_factor": 0.18215,
}
IP2P_TEXT_CONFIG: dict[str, Any] = {
    **TINY_TEXT_CONFIG,
    "hidden_size": 768,
    "intermediate_size": 3072,
    "num_hidden_layers": 12,
    "num_attention_heads": 12,
    "projection_dim": 768,
}


def build_tiny_unet(seed: int = 0, **overrides: Any):
    """A diffusers ``UNet2DConditionModel`` from :data:`TINY_UNET_CONFIG` (plus ``overrides``)."""
    from diffusers import UNet2DConditionModel

    return randomize_(UNet2DConditionModel(**{**TINY_UNET_CONFIG, **overrides}), seed)


def build_tiny_vae(seed: int = 0, **overrides: Any):
    """A diffusers ``AutoencoderKL`` from :data:`TINY_VAE_CONFIG` (plus ``overrides``)."""
    from diffusers import AutoencoderKL

    return randomize_(AutoencoderKL(**{**TINY_VAE_CONFIG, **overrides}), seed)


def build_tiny_text_encoder(
    seed: int = 0, vocab_size: int = TOKENIZER_VOCAB_SIZE, **overrides: Any
):
    """A transformers ``CLIPTextModel`` from :data:`TINY_TEXT_CONFIG` (plus ``overrides``)."""
    from transformers import CLIPTextConfig, CLIPTextModel

    config = CLIPTextConfig(**{**TINY_TEXT_CONFIG, "vocab_size": vocab_size, **overrides})
    return randomize_(CLIPTextModel(config), seed)


def build_tiny_scheduler():
    """diffusers' ``EulerAncestralDiscreteScheduler`` with InstructPix2Pix's config."""
    from diffusers import EulerAncestralDiscreteScheduler

    return EulerAncestralDiscreteScheduler(**SCHEDULER_CONFIG)


def _sd15_tokenizer_configs() -> tuple[dict, dict]:
    """tokenizer_config.json and special_tokens_map.json as SD 1.5 / InstructPix2Pix ship them."""

    def added(content: str) -> dict:
        return {
            "__type": "AddedToken",
            "content": content,
            "lstrip": False,
            "normalized": True,
            "rstrip": False,
            "single_word": False,
        }

    config = {
        "add_prefix_space": False,
        "bos_token": added(BOS),
        "do_lower_case": True,
        "eos_token": added(EOS),
        "errors": "replace",
        "model_max_length": MAX_LENGTH,
        "name_or_path": "openai/clip-vit-large-patch14",
        "pad_token": EOS,
        "special_tokens_map_file": "./special_tokens_map.json",
        "tokenizer_class": "CLIPTokenizer",
        "unk_token": added(EOS),
    }
    strip = lambda d: {k: v for k, v in d.items() if k != "__type"}  # noqa: E731
    special = {
        "bos_token": strip(added(BOS)),
        "eos_token": strip(added(EOS)),
        "pad_token": EOS,
        "unk_token": strip(added(EOS)),
    }
    return config, special


def build_tiny_tokenizer(folder: Path | str, vocab_size: int = TOKENIZER_VOCAB_SIZE) -> Path:
    """Write a tiny CLIP BPE tokenizer in CLIP's layout into ``folder``; returns the folder.

    ``vocab.json`` lists the 256 byte symbols, the same with ``</w>``, the merges in order, then
    ``<|startoftext|>`` and ``<|endoftext|>`` (the largest id, as in CLIP); ``merges.txt`` has
    the ``#version`` header line then one merge per line. The merges are learned with the
    ``tokenizers`` BPE trainer on :data:`TOKENIZER_CORPUS` after CLIP's normalization and
    pre-tokenization, so any text tokenizes (bytes are the fallback). The total vocabulary size
    is returned by ``len(json.load(vocab.json))`` (about ``vocab_size``).
    """
    from tokenizers import Regex, Tokenizer, normalizers, pre_tokenizers, trainers
    from tokenizers.models import BPE

    tok = Tokenizer(BPE(continuing_subword_prefix="", end_of_word_suffix="</w>"))
    tok.normalizer = normalizers.Sequence(
        [normalizers.NFC(), normalizers.Replace(Regex(r"\s+"), " "), normalizers.Lowercase()]
    )
    clip_words = r"""'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+"""
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(clip_words), behavior="removed", invert=True),
            pre_tokenizers.ByteLevel(add_prefix_space=False),
        ]
    )
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size - 256 - 2,  # the trainer counts symbols once; CLIP lists them twice
        min_frequency=2,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        end_of_word_suffix="</w>",
        show_progress=False,
    )
    tok.train_from_iterator(TOKENIZER_CORPUS * 2, trainer)
    merges = [
        m.split(" ") if isinstance(m, str) else m
        for m in json.loads(tok.to_str())["model"]["merges"]
    ]

    symbols = byte_symbols()
    tokens = [*symbols, *(s + "</w>" for s in symbols), *(a + b for a, b in merges), BOS, EOS]
    vocab = {t: i for i, t in enumerate(dict.fromkeys(tokens))}
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
    lines = ["#version: 0.2", *(f"{a} {b}" for a, b in merges)]
    (folder / "merges.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    config, special = _sd15_tokenizer_configs()
    (folder / "tokenizer_config.json").write_text(json.dumps(config, indent=2))
    (folder / "special_tokens_map.json").write_text(json.dumps(special, indent=2))
    return folder


# -- the whole checkpoint ------------------------------------------------------------------------


def build_tiny_ip2p(path: Path | str, seed: int = 0) -> Path:
    """Write a tiny random InstructPix2Pix pipeline to ``path`` (created; must not exist or be
    empty) exactly as ``save_pretrained`` lays out a real one; returns ``path``.

    Components are seeded from ``seed`` (unet ``seed``, vae ``seed + 1``, text encoder
    ``seed + 2``); the tokenizer is deterministic. Weights are float32 safetensors.
    """
    return build_ip2p(path, seed)


def build_full_ip2p(path: Path | str, seed: int = 0) -> Path:
    """:func:`build_tiny_ip2p` at timbrooks/instruct-pix2pix's full size (UNet 860M, VAE 84M,
    text encoder 123M parameters; random weights; about 4.3 GB of float32 safetensors). The
    tokenizer is still the tiny one (its ids fit CLIP-L's 49408-token embedding)."""
    return build_ip2p(path, seed, unet=IP2P_UNET_CONFIG, vae=IP2P_VAE_CONFIG, text=IP2P_TEXT_CONFIG)


def build_ip2p(
    path: Path | str,
    seed: int = 0,
    *,
    unet: dict[str, Any] | None = None,
    vae: dict[str, Any] | None = None,
    text: dict[str, Any] | None = None,
) -> Path:
    """The pipeline folder of :func:`build_tiny_ip2p`, with other component configs (the
    tiny ones where None)."""
    from diffusers import StableDiffusionInstructPix2PixPipeline
    from transformers import CLIPTokenizer

    path = Path(path)
    tok_dir = build_tiny_tokenizer(path / ".tokenizer-src")
    tokenizer = CLIPTokenizer.from_pretrained(str(tok_dir))
    vocab_size = len(json.loads((tok_dir / "vocab.json").read_text(encoding="utf-8")))
    if text is not None:
        vocab_size = 49408  # CLIP's: the tiny tokenizer's ids are a prefix of it
    pipe = StableDiffusionInstructPix2PixPipeline(
        vae=build_tiny_vae(seed + 1, **(vae or {})),
        text_encoder=build_tiny_text_encoder(seed + 2, vocab_size=vocab_size, **(text or {})),
        tokenizer=tokenizer,
        unet=build_tiny_unet(seed, **(unet or {})),
        scheduler=build_tiny_scheduler(),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    pipe.save_pretrained(str(path), safe_serialization=True)
    # transformers 5 saves tokenizers as tokenizer.json; real SD checkpoints carry vocab.json +
    # merges.txt + the two configs, so put those files in place instead.
    shutil.rmtree(path / "tokenizer")
    tok_dir.rename(path / "tokenizer")
    return path
