"""The CLIP text encoder (transformers' ``CLIPTextModel``) in MLX.

A causal pre-norm transformer over token embeddings plus learned position embeddings; Stable
Diffusion conditions on its last hidden states (after the final LayerNorm). The pooled output
is the hidden state at each sequence's end-of-text token.

Names follow transformers 5 (``encoder.layers.N.self_attn.q_proj`` ...); :func:`sanitize`
strips the ``text_model.`` prefix that checkpoints saved by transformers 4 (SD 1.5,
InstructPix2Pix) carry and drops their ``position_ids`` buffer.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any, NamedTuple

import mlx.core as mx
import mlx.nn as nn

from pbmlx.errors import PbmlxError
from pbmlx.kernels import cpu as cpu_kernels
from pbmlx.models.layers import Linear

LEGACY_EOS_TOKEN_ID = 2  # configs saved before transformers#24773 carry this wrong id
TRANSFORMERS4_PREFIX = "text_model."  # tensor-name prefix of checkpoints from transformers 4


QUICK_GELU_ALPHA = 1.702


def quick_gelu(x: mx.array) -> mx.array:
    """``x * sigmoid(1.702 x)``, the GELU approximation CLIP was trained with, computed as
    ``silu(1.702 x) / 1.702`` so that it runs on :func:`pbmlx.kernels.cpu.silu` (MLX's CPU
    sigmoid is one scalar ``exp`` per element, ~12x slower). Same function; the extra rounding
    of the scale and unscale keeps it within 1e-6 relative of float64 (tests hold 1e-4)."""
    return cpu_kernels.silu(QUICK_GELU_ALPHA * x) * (1.0 / QUICK_GELU_ALPHA)


ACTIVATIONS = {"quick_gelu": quick_gelu, "gelu": cpu_kernels.gelu}


@dataclass
class CLIPTextConfig:
    """The fields of a transformers ``CLIPTextConfig`` ``config.json`` (SD 1.5's ViT-L/14 text
    tower as defaults)."""

    vocab_size: int = 49408
    hidden_size: int = 768
    intermediate_size: int = 3072  # MLP width
    num_hidden_layers: int = 12
    num_attention_heads: int = 12
    max_position_embeddings: int = 77  # the longest token sequence (SD pads/truncates to it)
    hidden_act: str = "quick_gelu"
    layer_norm_eps: float = 1e-5
    eos_token_id: int = 49407  # 2 in old configs: then the pooled token is the largest id
    extra: dict[str, Any] = field(default_factory=dict, repr=False)  # unknown keys, kept

    @classmethod
    def from_dict(cls, config: dict[str, Any]) -> CLIPTextConfig:
        """Build from a raw ``config.json`` dict (a ``CLIPTextModel``'s, or a full ``CLIPModel``'s
        whose ``text_config`` is used); unknown keys are ignored."""
        if "text_config" in config and "hidden_size" not in config:
            config = config["text_config"]
        names = {f.name for f in fields(cls)} - {"extra"}
        cfg = cls(
            **{k: v for k, v in config.items() if k in names},
            extra={k: v for k, v in config.items() if k not in names},
        )
        if cfg.hidden_act not in ACTIVATIONS:
            raise PbmlxError(f"CLIP hidden_act {cfg.hidden_act!r} is not supported by pbmlx.")
        if cfg.hidden_size % cfg.num_attention_heads:
            raise PbmlxError(
                f"CLIP hidden_size {cfg.hidden_size} cannot be split into "
                f"{cfg.num_attention_heads} heads."
            )
        return cfg


class CLIPTextOutput(NamedTuple):
    last_hidden_state: mx.array  # (B, L, hidden_size), after the final LayerNorm
    pooler_output: mx.array  # (B, hidden_size), the state at each sequence's EOS token


# ---------------------------------------------------------------------------- leaf blocks


class CLIPAttention(nn.Module):
    """Multi-head self-attention with biased projections; causal unless ``causal=False`` (the
    vision tower of :mod:`pbmlx.models.clip` attends to every patch)."""

    def __init__(self, dim: int, heads: int, causal: bool = True):
        super().__init__()
        self.heads = heads
        self.causal = causal
        self.q_proj = Linear(dim, dim)
        self.k_proj = Linear(dim, dim)
        self.v_proj = Linear(dim, dim)
        self.out_proj = Linear(dim, dim)

    def __call__(self, x: mx.array) -> mx.array:
        B, L, D = x.shape
        d = D // self.heads
        q, k, v = (
            p(x).reshape(B, L, self.heads, d).transpose(0, 2, 1, 3)  # (B, heads, L, d)
            for p in (self.q_proj, self.k_proj, self.v_proj)
        )
        mask = "causal" if self.causal else None
        out = mx.fast.scaled_dot_product_attention(q, k, v, scale=d**-0.5, mask=mask)
        return self.out_proj(out.transpose(0, 2, 1, 3).reshape(B, L, D))


class CLIPMLP(nn.Module):
    def __init__(self, dim: int, hidden: int, act):
        super().__init__()
        self.act = act
        self.fc1 = Linear(dim, hidden)
        self.fc2 = Linear(hidden, dim)

    def __call__(self, x: mx.array) -> mx.array:
        return self.fc2(self.act(self.fc1(x)))


class CLIPEncoderLayer(nn.Module):
    """``x + attn(ln1(x))``, then ``x + mlp(ln2(x))``. ``cfg`` may be any config with these
    five fields (the vision tower passes its own, with ``causal=False``)."""

    def __init__(self, cfg: CLIPTextConfig, causal: bool = True):
        super().__init__()
        d = cfg.hidden_size
        self.self_attn = CLIPAttention(d, cfg.num_attention_heads, causal)
        self.layer_norm1 = nn.LayerNorm(d, eps=cfg.layer_norm_eps)
        self.mlp = CLIPMLP(d, cfg.intermediate_size, ACTIVATIONS[cfg.hidden_act])
        self.layer_norm2 = nn.LayerNorm(d, eps=cfg.layer_norm_eps)

    def __call__(self, x: mx.array) -> mx.array:
        x = x + self.self_attn(self.layer_norm1(x))
        return x + self.mlp(self.layer_norm2(x))


class CLIPEmbeddings(nn.Module):
    def __init__(self, cfg: CLIPTextConfig):
        super().__init__()
        self.token_embedding = nn.Embedding(cfg.vocab_size, cfg.hidden_size)
        self.position_embedding = nn.Embedding(cfg.max_position_embeddings, cfg.hidden_size)

    def __call__(self, input_ids: mx.array) -> mx.array:
        L = input_ids.shape[1]
        return self.token_embedding(input_ids) + self.position_embedding.weight[:L]


class CLIPEncoder(nn.Module):
    def __init__(self, cfg: CLIPTextConfig, causal: bool = True):
        super().__init__()
        self.layers = [CLIPEncoderLayer(cfg, causal) for _ in range(cfg.num_hidden_layers)]


# ---------------------------------------------------------------------------- the model


class CLIPTextModel(nn.Module):
    """Token ids ``(B, L)``, ``L <= max_position_embeddings`` -> :class:`CLIPTextOutput`.

    Only the causal mask is applied (no padding mask), as Stable Diffusion pipelines call it:
    padding tokens come after the text and cannot influence it.
    """

    def __init__(self, config: CLIPTextConfig):
        super().__init__()
        self.config = config
        self.embeddings = CLIPEmbeddings(config)
        self.encoder = CLIPEncoder(config)
        self.final_layer_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)

    def __call__(self, input_ids: mx.array) -> CLIPTextOutput:
        B, n_tokens = input_ids.shape
        max_tokens = self.config.max_position_embeddings
        if n_tokens > max_tokens:
            raise PbmlxError(f"{n_tokens} tokens exceed the text encoder's {max_tokens} positions.")
        x = self.embeddings(input_ids)
        for layer in self.encoder.layers:
            x = layer(x)
        x = self.final_layer_norm(x)
        if self.config.eos_token_id == LEGACY_EOS_TOKEN_ID:
            # Old configs: the end-of-text token is the largest id in the vocabulary.
            eos = mx.argmax(input_ids, axis=-1)
        else:
            # First occurrence of the EOS id (padding may repeat it).
            eos = mx.argmax((input_ids == self.config.eos_token_id).astype(mx.int32), axis=-1)
        pooled = mx.take_along_axis(x, eos.reshape(B, 1, 1), axis=1)[:, 0]
        return CLIPTextOutput(x, pooled)


# ---------------------------------------------------------------------------- loading


def sanitize(weights: dict[str, mx.array]) -> dict[str, mx.array]:
    """Strip the transformers-4 ``text_model.`` prefix; drop the ``position_ids`` buffer
    (positions are ``0..L-1`` by construction)."""
    out = {}
    for name, w in weights.items():
        name = name.removeprefix(TRANSFORMERS4_PREFIX)
        if name != "embeddings.position_ids":
            out[name] = w
    return out
