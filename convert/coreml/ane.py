"""The Neural Engine variant of the UNet: split-einsum attention in a channels-first layout.

:func:`to_neural_engine` swaps every diffusers ``Transformer2DModel`` inside a
``UNet2DConditionModel`` for an :class:`ANETransformer2D` computing the same function in a
form the Apple Neural Engine (ANE) runs well. Everything else in the UNet (time embedding,
ResNet blocks, down/up samplers, ``conv_in``/``conv_out``) is already a stack of 4-D
convolutions and stays diffusers' own, so the UNet keeps its ``config`` and is called as before:
``unet(sample, timestep, encoder_hidden_states, return_dict=False)[0]``.

Why a variant at all. diffusers' transformer turns the feature map into tokens ``(B, S, C)``
and runs ``nn.Linear`` layers and a multi-head attention that reshapes to ``(B * heads, S, d)``.
The GPU does not mind; the Neural Engine does. Following Apple's write-up on deploying
Transformers to the Neural Engine (and its ml-stable-diffusion port), the variant changes the
form, never the arithmetic:

- Layout. Activations stay 4-D and channels-first, ``(B, C, 1, S)`` with ``S = H * W``. The
  engine stores the last axis of a tensor contiguously and pads it to a 64-byte line, so the
  long token axis belongs last (a short last axis such as a head's 40 channels would be mostly
  padding), and 4-D is the rank its kernels are written for: no rank changes or transposes
  between layers. The text encoder's states ``(B, 77, D)`` are turned once, at each
  transformer's entry, into ``(B, D, 1, 77)``.
- Convolutions. Every ``nn.Linear`` of the transformer is a 1x1 ``nn.Conv2d`` over the channel
  axis: the same matrix product, in the op the engine is built around.
- Split-einsum attention. Instead of one batched matmul over a ``(B * heads, S, d)`` reshape,
  ``q``, ``k`` and ``v`` are cut along the channel axis into a Python list of per-head pieces
  and each head is two explicit einsums. Each head's working set stays small enough to live in
  the engine's on-chip cache, and no head reshape or transpose of the large ``q`` is needed.
- The layer norm normalises over axis 1 (channels) of the ``(B, C, 1, S)`` tensor.

The computation, for a ``(B, C, 1, S)`` input ``x``:

- layer norm, per batch ``b`` and token ``s``, with the original ``LayerNorm``'s ``weight``
  ``γ``, ``bias`` ``β`` and ``eps`` ``ε``::

      μ[b, s]  = mean_c x[b, c, 0, s]
      σ²[b, s] = mean_c (x[b, c, 0, s] - μ[b, s])²
      y[b, c, 0, s] = (x[b, c, 0, s] - μ[b, s]) / sqrt(σ²[b, s] + ε) · γ[c] + β[c]

- attention, for head ``h`` owning channels ``c ∈ [h·d, (h+1)·d)`` (``d`` = head size, ``q``
  indexing query tokens, ``k`` key tokens; ``Q = to_q(x)``, ``K = to_k(ctx)``,
  ``V = to_v(ctx)``, ``ctx`` the text states for cross-attention or ``x`` for
  self-attention; ``bias[b, k]`` an optional additive mask)::

      A_h[b, k, 0, q] = softmax_k( Σ_c Q[b, c, 0, q] · K[b, c, 0, k] / sqrt(d) + bias[b, k] )
      O[b, c, 0, q]   = Σ_k A_h[b, k, 0, q] · V[b, c, 0, k]
      out             = to_out(concat_h O)

  (the scores einsum is ``'bchq,bkhc->bkhq'``, the key transposed once to ``(B, S_k, 1, C)``).
- feed-forward (GEGLU): ``p = ff.net.0.proj(x)`` has ``2·I`` channels; ``u, g`` its halves;
  ``ff.net.2(u · gelu(g))``; and the block is diffusers' pre-norm ``BasicTransformerBlock``:
  ``x += attn1(norm1(x)); x += attn2(norm2(x), ctx); x += ff(norm3(x))``.

Weights. Submodules and parameters carry exactly diffusers' names (``norm``, ``proj_in``,
``transformer_blocks.N.{norm1, attn1.{to_q, to_k, to_v, to_out.0}, norm2, attn2.{...}, norm3,
ff.net.0.proj, ff.net.2}``, ``proj_out``), so ``ane_unet.load_state_dict(unet.state_dict())``
loads a diffusers checkpoint unchanged. The only shapes that differ are the weights of layers
that were ``nn.Linear``: ``(O, I)`` there, ``(O, I, 1, 1)`` here, reshaped at load time by a
load-state-dict pre-hook on each such convolution (also ``proj_in``/``proj_out`` of
``use_linear_projection=True`` models; SD 1.x's are 1x1 convolutions already). Biases and norm
parameters keep their shapes. The ANE UNet's own ``state_dict()`` holds the 4-D weights; a
diffusers UNet takes them back with the last two axes squeezed.

Options that this variant does not reproduce (ada norms, ``only_cross_attention``,
``double_self_attention``, GLIGEN, q/k norms, adapters, ...) are refused with a
``ValueError`` naming the option, before anything is swapped. ``upcast_attention`` and
``upcast_softmax`` only change the precision diffusers computes in and are ignored: Core ML
decides that (float16 by default). Everything here is traceable by ``torch.export.export`` and
converts with coremltools 9 (the :mod:`.export` recipe).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import nn

if TYPE_CHECKING:
    from diffusers import UNet2DConditionModel

__all__ = [
    "ANEAttention",
    "ANEFeedForward",
    "ANETransformer2D",
    "ANETransformerBlock",
    "ChannelsFirstLayerNorm",
    "to_neural_engine",
]

# diffusers turns a 0/1 keep mask into this additive bias; the same value keeps masks equal.
MASK_BIAS = -10000.0


# ---------------------------------------------------------------------------- building blocks


def _linear_weight_to_conv(
    module: nn.Module,
    state_dict: dict[str, Any],
    prefix: str,
    local_metadata: dict[str, Any],
    strict: bool,
    missing_keys: list[str],
    unexpected_keys: list[str],
    error_msgs: list[str],
) -> None:
    """Load-state-dict pre-hook of a 1x1 convolution standing for an ``nn.Linear``: a ``(O, I)``
    weight (a diffusers checkpoint) becomes ``(O, I, 1, 1)``; a 4-D one is left alone."""
    key = prefix + "weight"
    weight = state_dict.get(key)
    if isinstance(weight, torch.Tensor) and weight.ndim == 2:
        state_dict[key] = weight[:, :, None, None]


def conv1x1(in_channels: int, out_channels: int, bias: bool = True) -> nn.Conv2d:
    """A 1x1 convolution that loads an ``nn.Linear(in_channels, out_channels)``'s weights."""
    conv = nn.Conv2d(in_channels, out_channels, kernel_size=1, bias=bias)
    conv.register_load_state_dict_pre_hook(_linear_weight_to_conv)
    return conv


class ChannelsFirstLayerNorm(nn.Module):
    """``nn.LayerNorm(channels)`` for ``(B, C, 1, S)`` tensors: normalises over axis 1.

    ``weight``, ``bias`` and ``eps`` are the original's (same names and ``(C,)`` shapes).
    """

    def __init__(self, channels: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.channels = channels
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mean = x.mean(dim=1, keepdim=True)
        centred = x - mean
        # Biased variance, as nn.LayerNorm: the mean of squares of the centred values.
        variance = (centred * centred).mean(dim=1, keepdim=True)
        normed = centred * torch.rsqrt(variance + self.eps)
        return normed * self.weight.view(1, -1, 1, 1) + self.bias.view(1, -1, 1, 1)

    def extra_repr(self) -> str:
        return f"{self.channels}, eps={self.eps}"


class ANEAttention(nn.Module):
    """diffusers' ``Attention`` (default processor) on ``(B, C, 1, S)`` tensors, split-einsum.

    ``to_q``/``to_k``/``to_v``/``to_out.0`` are 1x1 convolutions (``to_out.1`` the dropout, as
    in diffusers). Heads are the consecutive ``head_dim``-channel slices of ``q``, ``k``, ``v``.
    """

    def __init__(
        self,
        query_dim: int,
        context_dim: int,
        heads: int,
        head_dim: int,
        *,
        bias: bool = False,
        out_bias: bool = True,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        inner_dim = heads * head_dim
        self.heads = heads
        self.head_dim = head_dim
        self.scale = head_dim**-0.5
        self.to_q = conv1x1(query_dim, inner_dim, bias)
        self.to_k = conv1x1(context_dim, inner_dim, bias)
        self.to_v = conv1x1(context_dim, inner_dim, bias)
        self.to_out = nn.ModuleList([conv1x1(inner_dim, query_dim, out_bias), nn.Dropout(dropout)])

    def forward(
        self,
        x: torch.Tensor,
        context: torch.Tensor | None = None,
        key_bias: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """``x``: ``(B, C, 1, S_q)``; ``context``: ``(B, D, 1, S_k)`` (``None``: self-attention);
        ``key_bias``: ``(B, S_k, 1, 1)`` added to the scores, or ``None``."""
        context = x if context is None else context
        q = self.to_q(x)
        k = self.to_k(context)
        v = self.to_v(context)
        d = self.head_dim
        # One transpose of the whole key, (B, C, 1, S_k) -> (B, S_k, 1, C), so the scores come
        # out with keys on axis 1 and queries on the contiguous last axis.
        keys = k.transpose(1, 3).split(d, dim=3)
        heads = []
        for q_h, k_h, v_h in zip(q.split(d, dim=1), keys, v.split(d, dim=1), strict=True):
            # Scaling each head's q (S_q x d) rather than the scores (S_k x S_q) is the same
            # product with fewer multiplications; after the split, so that coremltools does
            # not fold the scale into to_q's weights (which then would not read back as the
            # checkpoint's: readback.py).
            q_h = q_h * self.scale
            scores = torch.einsum("bchq,bkhc->bkhq", q_h, k_h)  # (B, S_k, 1, S_q)
            if key_bias is not None:
                scores = scores + key_bias
            weights = scores.softmax(dim=1)  # over the keys
            heads.append(torch.einsum("bkhq,bchk->bchq", weights, v_h))  # (B, d, 1, S_q)
        out = torch.cat(heads, dim=1)
        return self.to_out[1](self.to_out[0](out))


class ANEGEGLU(nn.Module):
    """diffusers' ``GEGLU`` on ``(B, C, 1, S)``: ``u · gelu(g)`` for ``u, g`` the halves of
    ``proj(x)`` along the channels (the value half first, as diffusers splits it)."""

    def __init__(self, dim_in: int, dim_out: int, bias: bool = True) -> None:
        super().__init__()
        self.proj = conv1x1(dim_in, 2 * dim_out, bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        value, gate = self.proj(x).chunk(2, dim=1)
        return value * F.gelu(gate)


class ANEFeedForward(nn.Module):
    """diffusers' ``FeedForward`` with GEGLU: ``net`` = [GEGLU, dropout, 1x1 conv]."""

    def __init__(self, dim: int, inner_dim: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.net = nn.ModuleList(
            [ANEGEGLU(dim, inner_dim), nn.Dropout(dropout), conv1x1(inner_dim, dim)]
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.net:
            x = layer(x)
        return x


class ANETransformerBlock(nn.Module):
    """diffusers' ``BasicTransformerBlock`` (``norm_type="layer_norm"``) on ``(B, C, 1, S)``.

    Without ``cross_attention_dim`` there is no ``norm2``/``attn2`` (as in diffusers).
    """

    def __init__(
        self,
        dim: int,
        heads: int,
        head_dim: int,
        *,
        cross_attention_dim: int | None = None,
        ff_inner_dim: int | None = None,
        attention_bias: bool = False,
        norm_eps: float = 1e-5,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        attention = {"bias": attention_bias, "dropout": dropout}
        self.norm1 = ChannelsFirstLayerNorm(dim, norm_eps)
        self.attn1 = ANEAttention(dim, dim, heads, head_dim, **attention)
        self.norm2: ChannelsFirstLayerNorm | None = None
        self.attn2: ANEAttention | None = None
        if cross_attention_dim is not None:
            self.norm2 = ChannelsFirstLayerNorm(dim, norm_eps)
            self.attn2 = ANEAttention(dim, cross_attention_dim, heads, head_dim, **attention)
        self.norm3 = ChannelsFirstLayerNorm(dim, norm_eps)
        self.ff = ANEFeedForward(dim, ff_inner_dim or 4 * dim, dropout)

    def forward(
        self,
        x: torch.Tensor,
        context: torch.Tensor | None = None,
        self_bias: torch.Tensor | None = None,
        cross_bias: torch.Tensor | None = None,
    ) -> torch.Tensor:
        x = self.attn1(self.norm1(x), key_bias=self_bias) + x
        if self.attn2 is not None and self.norm2 is not None:
            # Without text states diffusers' attn2 attends to its own input; so does ours.
            x = self.attn2(self.norm2(x), context, key_bias=cross_bias) + x
        return self.ff(self.norm3(x)) + x


def _key_bias(mask: torch.Tensor | None, dtype: torch.dtype) -> torch.Tensor | None:
    """diffusers' attention mask as a ``(B, S_k, 1, 1)`` additive bias over the keys.

    Accepts a 0/1 keep mask ``(B, S_k)`` or a bias ``(B, 1, S_k)`` (what the UNet passes after
    converting a 2-D mask itself). A per-query mask has no place in this layout: refused.
    """
    if mask is None:
        return None
    if mask.ndim == 2:
        mask = (1 - mask.to(dtype)) * MASK_BIAS
    elif mask.ndim != 3 or mask.shape[1] != 1:
        raise ValueError(
            f"attention masks of shape {tuple(mask.shape)} are not supported by the Neural "
            "Engine variant (only (batch, keys) masks or (batch, 1, keys) biases)"
        )
    return mask.to(dtype).reshape(mask.shape[0], mask.shape[-1], 1, 1)


# ------------------------------------------------------------------------------ the transformer


class ANETransformer2D(nn.Module):
    """diffusers' ``Transformer2DModel`` (continuous input, layer norms, GEGLU) for the ANE.

    Same parameter names as diffusers; ``forward`` takes the arguments diffusers' UNet blocks
    pass to a ``Transformer2DModel`` and returns ``(output,)`` for ``return_dict=False``.
    ``inner_dim`` is ``num_heads`` times the head size (diffusers: ``num_attention_heads *
    attention_head_dim``).
    """

    def __init__(
        self,
        in_channels: int,
        inner_dim: int,
        num_heads: int,
        num_layers: int = 1,
        *,
        out_channels: int | None = None,
        cross_attention_dim: int | None = None,
        norm_num_groups: int = 32,
        group_norm_eps: float = 1e-6,
        norm_eps: float = 1e-5,
        attention_bias: bool = False,
        ff_inner_dim: int | None = None,
        dropout: float = 0.0,
        use_linear_projection: bool = False,
    ) -> None:
        super().__init__()
        if num_heads < 1 or inner_dim % num_heads:
            raise ValueError(
                f"num_attention_heads={num_heads} does not divide the {inner_dim} attention "
                "channels: the split-einsum attention needs equal heads"
            )
        self.in_channels = in_channels
        self.out_channels = in_channels if out_channels is None else out_channels
        self.inner_dim = inner_dim
        self.num_heads = num_heads
        self.use_linear_projection = use_linear_projection
        self.norm = nn.GroupNorm(norm_num_groups, in_channels, eps=group_norm_eps, affine=True)
        # A Linear over the channels of tokens and a 1x1 convolution over the feature map are
        # the same product: one conv serves both values of use_linear_projection (the hook
        # reshapes a Linear's weight).
        self.proj_in = conv1x1(in_channels, inner_dim)
        self.transformer_blocks = nn.ModuleList(
            ANETransformerBlock(
                inner_dim,
                num_heads,
                inner_dim // num_heads,
                cross_attention_dim=cross_attention_dim,
                ff_inner_dim=ff_inner_dim,
                attention_bias=attention_bias,
                norm_eps=norm_eps,
                dropout=dropout,
            )
            for _ in range(num_layers)
        )
        self.proj_out = conv1x1(inner_dim, self.out_channels)

    @classmethod
    def from_diffusers(cls, module: nn.Module, name: str = "") -> ANETransformer2D:
        """The ANE twin of a diffusers ``Transformer2DModel``, holding copies of its weights
        (loaded through the same pre-hooks as a checkpoint), on its device, dtype and mode.

        Raises ``ValueError`` for an option the variant does not reproduce.
        """
        check_supported(module, name)
        block = module.transformer_blocks[0]
        new = cls(
            in_channels=module.in_channels,
            inner_dim=module.inner_dim,
            num_heads=block.attn1.heads,
            num_layers=len(module.transformer_blocks),
            out_channels=module.out_channels,
            cross_attention_dim=None if block.attn2 is None else block.attn2.to_k.in_features,
            norm_num_groups=module.norm.num_groups,
            group_norm_eps=module.norm.eps,
            norm_eps=block.norm1.eps,
            attention_bias=block.attn1.to_q.bias is not None,
            ff_inner_dim=block.ff.net[2].in_features,
            dropout=module.config.dropout,
            use_linear_projection=module.config.use_linear_projection,
        )
        reference = next(module.parameters())
        new.to(device=reference.device, dtype=reference.dtype)
        new.load_state_dict(module.state_dict(), strict=True)
        return new.train(module.training)

    def forward(
        self,
        hidden_states: torch.Tensor,
        encoder_hidden_states: torch.Tensor | None = None,
        timestep: torch.Tensor | None = None,
        added_cond_kwargs: dict[str, torch.Tensor] | None = None,
        class_labels: torch.Tensor | None = None,
        cross_attention_kwargs: dict[str, Any] | None = None,
        attention_mask: torch.Tensor | None = None,
        encoder_attention_mask: torch.Tensor | None = None,
        return_dict: bool = True,
    ) -> Any:
        """``hidden_states`` ``(B, C, H, W)`` -> the same shape, as diffusers' model.

        ``timestep``, ``added_cond_kwargs`` and ``class_labels`` only feed the ada norms this
        variant refuses, so they are accepted and unused; ``cross_attention_kwargs`` may hold
        only the deprecated ``scale`` (ignored by diffusers too).
        """
        extra = set(cross_attention_kwargs or {}) - {"scale"}
        if extra:
            raise ValueError(
                f"cross_attention_kwargs {sorted(extra)} are not supported by the Neural Engine "
                "variant"
            )
        batch, _, height, width = hidden_states.shape
        residual = hidden_states
        x = self.proj_in(self.norm(hidden_states))
        # (B, C, H, W) -> (B, C, 1, H*W): a free view, tokens in row-major order as diffusers'.
        x = x.reshape(batch, self.inner_dim, 1, height * width)
        context = None
        if encoder_hidden_states is not None:
            # (B, 77, D) -> (B, D, 1, 77), once for all blocks.
            context = encoder_hidden_states.transpose(1, 2).unsqueeze(2)
        self_bias = _key_bias(attention_mask, x.dtype)
        cross_bias = _key_bias(encoder_attention_mask, x.dtype)
        for block in self.transformer_blocks:
            x = block(x, context, self_bias, cross_bias)
        x = self.proj_out(x).reshape(batch, self.out_channels, height, width)
        output = x + residual
        if not return_dict:
            return (output,)
        from diffusers.models.modeling_outputs import Transformer2DModelOutput

        return Transformer2DModelOutput(sample=output)


# ---------------------------------------------------------------------------------- checking


def _refuse(name: str, option: str) -> ValueError:
    where = f"{name}: " if name else ""
    return ValueError(f"{where}{option} is not supported by the Neural Engine variant")


def check_supported(module: nn.Module, name: str = "") -> None:
    """Raise ``ValueError`` naming the first option of the diffusers ``Transformer2DModel``
    ``module`` (at ``name`` in its model) that :class:`ANETransformer2D` does not reproduce."""
    from diffusers.models.activations import GEGLU

    cfg = module.config
    if not getattr(module, "is_input_continuous", False):
        raise _refuse(name, "a patched or vector input (patch_size / num_vector_embeds)")
    options = {
        "norm_type": (cfg.norm_type, "layer_norm"),
        "num_embeds_ada_norm": (cfg.num_embeds_ada_norm, None),
        "only_cross_attention": (cfg.only_cross_attention, False),
        "double_self_attention": (cfg.double_self_attention, False),
        "activation_fn": (cfg.activation_fn, "geglu"),
        "attention_type": (cfg.attention_type, "default"),
        "norm_elementwise_affine": (cfg.norm_elementwise_affine, True),
    }
    for option, (value, supported) in options.items():
        if value != supported:
            raise _refuse(name, f"{option}={value!r}")
    for i, block in enumerate(module.transformer_blocks):
        where = f"{name}.transformer_blocks.{i}" if name else f"transformer_blocks.{i}"
        if getattr(block, "pos_embed", None) is not None:
            raise _refuse(where, f"positional_embeddings={block.positional_embeddings!r}")
        if getattr(block, "norm_type", "layer_norm") != "layer_norm":
            raise _refuse(where, f"norm_type={block.norm_type!r}")
        ff = block.ff.net
        if len(ff) != 3 or type(ff[0]) is not GEGLU or ff[0].proj.bias is None:
            raise _refuse(
                where, "a feed-forward other than GEGLU with biases (final_dropout, ff_bias)"
            )
        for attn_name in ("attn1", "attn2"):
            attn = getattr(block, attn_name)
            if attn is not None:
                _check_attention(attn, f"{where}.{attn_name}")


def _check_attention(attn: nn.Module, where: str) -> None:
    """Refuse diffusers ``Attention`` features outside plain (cross-)attention."""
    for extra in ("norm_q", "norm_k", "norm_cross", "group_norm", "spatial_norm", "add_k_proj"):
        if getattr(attn, extra, None) is not None:
            raise _refuse(where, f"attention with {extra}")
    if getattr(attn, "residual_connection", False):
        raise _refuse(where, "residual_connection=True")
    if getattr(attn, "rescale_output_factor", 1.0) != 1.0:
        raise _refuse(where, f"rescale_output_factor={attn.rescale_output_factor}")
    if getattr(attn, "is_causal", False):
        raise _refuse(where, "is_causal=True")
    for proj in ("to_q", "to_k", "to_v"):
        if type(getattr(attn, proj)) is not nn.Linear:
            # PEFT/LoRA wrappers carry extra weights the state dict would not load into.
            raise _refuse(
                where, f"{proj} of type {type(getattr(attn, proj)).__name__} (fuse adapters first)"
            )
    if type(attn.to_out[0]) is not nn.Linear:
        raise _refuse(where, f"to_out.0 of type {type(attn.to_out[0]).__name__}")
    if attn.to_out[0].bias is None:
        raise _refuse(where, "attention_out_bias=False")
    inner = attn.to_q.out_features
    if attn.to_k.out_features != inner or inner % attn.heads:
        raise _refuse(
            where, f"heads={attn.heads} over {inner} q / {attn.to_k.out_features} k channels"
        )
    if not math.isclose(attn.scale, (inner // attn.heads) ** -0.5, rel_tol=1e-6):
        raise _refuse(where, f"scale_qk / scale={attn.scale}")
    processor = getattr(attn, "processor", None)
    if isinstance(processor, nn.Module) and any(True for _ in processor.parameters()):
        raise _refuse(where, f"attention processor {type(processor).__name__} with weights")


# ------------------------------------------------------------------------------------- the swap


def to_neural_engine(unet: UNet2DConditionModel) -> nn.Module:
    """Swap, in place, every diffusers ``Transformer2DModel`` of ``unet`` for an
    :class:`ANETransformer2D` holding the same weights; returns ``unet``.

    All transformers are checked before any is swapped, so a ``ValueError`` (an option the
    variant does not reproduce, named in the message) leaves ``unet`` untouched. A UNet
    already converted is returned as is. Given a bare ``Transformer2DModel``, returns its twin.
    """
    from diffusers.models.transformers.transformer_2d import Transformer2DModel

    if isinstance(unet, Transformer2DModel):
        return ANETransformer2D.from_diffusers(unet)
    found = [(n, m) for n, m in unet.named_modules() if isinstance(m, Transformer2DModel)]
    for name, module in found:
        check_supported(module, name)
    for name, module in found:
        parent_name, _, child_name = name.rpartition(".")
        parent = unet.get_submodule(parent_name)
        # setattr on a ModuleList with a digit name replaces that entry, as on any module.
        setattr(parent, child_name, ANETransformer2D.from_diffusers(module, name))
    return unet
