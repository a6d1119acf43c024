"""The full-size networks ``pbmlx bench`` builds when no model is given, as config dicts.

They are the ``config.json`` fields of ``timbrooks/instruct-pix2pix`` (Stable Diffusion 1.5's
architecture with an 8-channel UNet input): the UNet (859.5M parameters), the SD VAE (83.7M)
and CLIP ViT-L/14's text tower (123.1M), plus, for the judge's CLIP provider, the shapes of
``openai/clip-vit-base-patch32`` (151M). The same dicts are what a checkpoint's configs say, so
the bench's FLOP counts and timings are those of the real model; only the weights are random
(which does not change the work: no layer's cost depends on its values).
"""

from __future__ import annotations

from typing import Any

# timbrooks/instruct-pix2pix unet/config.json (SD 1.5 with in_channels 8).
IP2P_UNET: dict[str, Any] = {
    "act_fn": "silu",
    "attention_head_dim": 8,  # diffusers' quirk: the number of heads for SD 1.x
    "block_out_channels": [320, 640, 1280, 1280],
    "center_input_sample": False,
    "cross_attention_dim": 768,
    "down_block_types": [
        "CrossAttnDownBlock2D",
        "CrossAttnDownBlock2D",
        "CrossAttnDownBlock2D",
        "DownBlock2D",
    ],
    "downsample_padding": 1,
    "flip_sin_to_cos": True,
    "freq_shift": 0,
    "in_channels": 8,
    "layers_per_block": 2,
    "mid_block_scale_factor": 1,
    "norm_eps": 1e-05,
    "norm_num_groups": 32,
    "out_channels": 4,
    "sample_size": 64,
    "up_block_types": [
        "UpBlock2D",
        "CrossAttnUpBlock2D",
        "CrossAttnUpBlock2D",
        "CrossAttnUpBlock2D",
    ],
}

# timbrooks/instruct-pix2pix vae/config.json (SD 1.5's autoencoder: 8x smaller latents).
IP2P_VAE: dict[str, Any] = {
    "act_fn": "silu",
    "block_out_channels": [128, 256, 512, 512],
    "down_block_types": ["DownEncoderBlock2D"] * 4,
    "in_channels": 3,
    "latent_channels": 4,
    "layers_per_block": 2,
    "norm_num_groups": 32,
    "out_channels": 3,
    "sample_size": 512,
    "scaling_factor": 0.18215,
    "up_block_types": ["UpDecoderBlock2D"] * 4,
}

# timbrooks/instruct-pix2pix text_encoder/config.json (CLIP ViT-L/14's text tower).
IP2P_TEXT: dict[str, Any] = {
    "hidden_act": "quick_gelu",
    "hidden_size": 768,
    "intermediate_size": 3072,
    "layer_norm_eps": 1e-05,
    "max_position_embeddings": 77,
    "num_attention_heads": 12,
    "num_hidden_layers": 12,
    "projection_dim": 768,
    "vocab_size": 49408,
    "bos_token_id": 0,
    "eos_token_id": 2,  # SD 1.5's legacy value: the pooled token is the largest id
    "pad_token_id": 1,
}

# timbrooks/instruct-pix2pix scheduler/scheduler_config.json (Euler ancestral's parameters).
IP2P_SCHEDULER: dict[str, Any] = {
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "beta_start": 0.00085,
    "num_train_timesteps": 1000,
    "prediction_type": "epsilon",
    "steps_offset": 1,
    "trained_betas": None,
}

# openai/clip-vit-base-patch32 config.json shapes: the judge's default CLIP.
CLIP_B32: dict[str, Any] = {
    "model_type": "clip",
    "projection_dim": 512,
    "text_config": {
        "hidden_size": 512,
        "intermediate_size": 2048,
        "num_hidden_layers": 12,
        "num_attention_heads": 8,
        "max_position_embeddings": 77,
        "vocab_size": 49408,
        "eos_token_id": 2,
    },
    "vision_config": {
        "hidden_size": 768,
        "intermediate_size": 3072,
        "num_hidden_layers": 12,
        "num_attention_heads": 12,
        "image_size": 224,
        "patch_size": 32,
    },
}

# The weight variants ``pbmlx bench`` times (see pbmlx.bench.models).
VARIANTS = ("float32", "float16", "8-bit", "4-bit")

TEXT_TOKENS = 77  # CLIP's context: SD pipelines pad every prompt to it
