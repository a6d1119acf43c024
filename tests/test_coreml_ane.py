"""The Neural Engine variant of the UNet (pbmlx.convert.coreml.ane) against diffusers' UNet.

The ANE UNet is a second, freshly initialised tiny UNet (another seed) swapped to the variant,
then loaded with the reference's ``state_dict()``: matching outputs prove both the arithmetic
and the name-for-name weight loading (the (O, I) -> (O, I, 1, 1) reshape at load time).

Agreement is measured as Apple measures its Core ML ports, PSNR in dB (:func:`psnr`); in
float32 the two differ only by rounding (the variant scales q before the product, sums heads in
another order, normalises with its own formula), about 130 dB here, so 60 dB leaves a wide
margin for other BLAS builds while a real mistake (one head's weights swapped, a layer norm
over the wrong axis) lands below 35 dB, as the control test shows.
"""

from __future__ import annotations

import copy
import logging
import math
import warnings

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("diffusers")

from pbmlx.convert.coreml import ane  # noqa: E402
from tiny_ip2p import TINY_UNET_CONFIG, build_tiny_unet  # noqa: E402

MIN_PSNR_DB = 60.0
# Largest |ane - reference| allowed, relative to max |reference|. float32 rounding is 6e-8
# relative per operation; through the UNet's ~100 layers the two orderings of the same sums
# drift apart by ~1e-6 relative (measured: 2e-6 absolute on outputs of size ~2.5). 1e-4 is
# 50x that, and 100x below what a real mistake gives (errors of order 1).
MAX_REL_DIFF = 1e-4
MAX_BROKEN_PSNR_DB = 35.0


def psnr(out: torch.Tensor, ref: torch.Tensor) -> float:
    """Apple's PSNR: ``20 log10(max |ref|) - 10 log10(mean((out - ref)^2))`` in dB."""
    out, ref = out.double(), ref.double()
    mse = float(((out - ref) ** 2).mean())
    peak = float(ref.abs().max())
    return math.inf if mse == 0 else 20 * math.log10(peak) - 10 * math.log10(mse)


def inputs(height: int, width: int, seed: int = 1) -> tuple[torch.Tensor, ...]:
    """Batch-3 UNet inputs: 8-channel latents, 3 timesteps, (3, 77, 32) text states."""
    gen = torch.Generator().manual_seed(seed)
    sample = torch.randn(3, TINY_UNET_CONFIG["in_channels"], height, width, generator=gen)
    timestep = torch.tensor([999.0, 500.0, 1.0])
    states = torch.randn(3, 77, TINY_UNET_CONFIG["cross_attention_dim"], generator=gen)
    return sample, timestep, states


def run(unet: torch.nn.Module, args: tuple[torch.Tensor, ...], **kwargs) -> torch.Tensor:
    with torch.no_grad():
        return unet(*args, return_dict=False, **kwargs)[0]


def ane_twin(reference: torch.nn.Module, **overrides) -> torch.nn.Module:
    """The variant built from another tiny UNet (seed 1), then loaded with ``reference``'s
    weights: every number it computes with comes through ``load_state_dict``."""
    unet = ane.to_neural_engine(build_tiny_unet(1, **overrides))
    unet.load_state_dict(reference.state_dict(), strict=True)
    return unet.eval()


@pytest.fixture(scope="module")
def unets() -> tuple[torch.nn.Module, torch.nn.Module]:
    reference = build_tiny_unet(0)
    return reference, ane_twin(reference)


@pytest.fixture(scope="module")
def square_case(unets) -> tuple[tuple[torch.Tensor, ...], torch.Tensor]:
    """16x16 inputs and diffusers' output for them (shared by the tests that need them)."""
    args = inputs(16, 16)
    return args, run(unets[0], args)


def assert_matches(out: torch.Tensor, ref: torch.Tensor) -> None:
    assert out.shape == ref.shape
    assert psnr(out, ref) >= MIN_PSNR_DB, psnr(out, ref)
    max_diff = float((out - ref).abs().max())
    assert max_diff <= MAX_REL_DIFF * float(ref.abs().max()), max_diff


def test_matches_diffusers_square(unets, square_case):
    (args, ref), (_, ane_unet) = square_case, unets
    assert_matches(run(ane_unet, args), ref)


def test_matches_diffusers_non_square(unets):
    reference, ane_unet = unets
    args = inputs(16, 24, seed=2)
    assert_matches(run(ane_unet, args), run(reference, args))


def test_keeps_unet_interface(unets):
    reference, ane_unet = unets
    assert isinstance(ane_unet, type(reference))
    assert dict(ane_unet.config) == dict(reference.config)
    transformers = [m for m in ane_unet.modules() if isinstance(m, ane.ANETransformer2D)]
    assert len(transformers) == 16  # 3 down blocks x 2 + mid 1 + 3 up blocks x 3
    assert not any(isinstance(m, torch.nn.Linear) for t in transformers for m in t.modules())


def test_state_dict_names_shapes_and_round_trip(unets):
    reference, ane_unet = unets
    ref_sd, ane_sd = reference.state_dict(), ane_unet.state_dict()
    assert list(ane_sd) == list(ref_sd)
    # diffusers' Linear layers inside the transformers hold 4-D 1x1 kernels; the UNet's other
    # Linears (time embedding, ResNet time projections) are diffusers' own and stay 2-D.
    transformer_linears = [
        f"{t_name}.{name}.weight"
        for t_name, t in reference.named_modules()
        if type(t).__name__ == "Transformer2DModel"
        for name, m in t.named_modules()
        if isinstance(m, torch.nn.Linear)
    ]
    assert len(transformer_linears) == 16 * 10  # per block: q k v out twice, ff in and out
    for key in ane_sd:
        if key in transformer_linears:
            assert ane_sd[key].shape == (*ref_sd[key].shape, 1, 1), key
        else:
            assert ane_sd[key].shape == ref_sd[key].shape, key
        assert torch.equal(ane_sd[key].reshape(ref_sd[key].shape), ref_sd[key]), key
    # Loading its own (4-D) state dict back is exact too.
    twin = copy.deepcopy(ane_unet)
    twin.load_state_dict(ane_sd, strict=True)
    assert all(torch.equal(twin.state_dict()[k], v) for k, v in ane_sd.items())


def swap_first_two_query_heads(unet: torch.nn.Module) -> torch.nn.Module:
    """One cross-attention's q rows of heads 0 and 1 exchanged (k, v untouched)."""
    attn = unet.down_blocks[0].attentions[0].transformer_blocks[0].attn2
    d = attn.head_dim
    with torch.no_grad():
        weight = attn.to_q.weight
        weight[:d], weight[d : 2 * d] = weight[d : 2 * d].clone(), weight[:d].clone()
    return unet


def normalise_over_tokens(self: ane.ChannelsFirstLayerNorm, x: torch.Tensor) -> torch.Tensor:
    """The layer norm over the wrong axis (3, the tokens) of ``(B, C, 1, S)``."""
    centred = x - x.mean(dim=3, keepdim=True)
    normed = centred * torch.rsqrt((centred * centred).mean(dim=3, keepdim=True) + self.eps)
    return normed * self.weight.view(1, -1, 1, 1) + self.bias.view(1, -1, 1, 1)


@pytest.mark.parametrize("mistake", ["swapped heads", "layer norm axis"])
def test_control_the_check_catches_mistakes(unets, square_case, mistake, monkeypatch):
    args, ref = square_case
    broken = copy.deepcopy(unets[1])
    if mistake == "swapped heads":
        swap_first_two_query_heads(broken)
    else:
        monkeypatch.setattr(ane.ChannelsFirstLayerNorm, "forward", normalise_over_tokens)
    assert psnr(run(broken, args), ref) < MAX_BROKEN_PSNR_DB


def test_encoder_attention_mask_matches(unets, square_case):
    reference, ane_unet = unets
    args, unmasked = square_case
    mask = torch.ones(3, 77)
    mask[:, 12:] = 0  # padding tokens off
    mask[1, 4:] = 0
    ref = run(reference, args, encoder_attention_mask=mask)
    assert psnr(ref, unmasked) < MAX_BROKEN_PSNR_DB  # the mask matters
    assert_matches(run(ane_unet, args, encoder_attention_mask=mask), ref)


def test_linear_projection_matches():
    reference = build_tiny_unet(0, use_linear_projection=True)
    assert isinstance(reference.down_blocks[0].attentions[0].proj_in, torch.nn.Linear)
    ane_unet = ane_twin(reference, use_linear_projection=True)
    assert ane_unet.state_dict()["down_blocks.0.attentions.0.proj_in.weight"].ndim == 4
    args = inputs(16, 16)
    assert_matches(run(ane_unet, args), run(reference, args))


def test_swap_copies_weights_in_place():
    reference = build_tiny_unet(0)
    copied = copy.deepcopy(reference)
    assert ane.to_neural_engine(copied) is copied
    block = copied.mid_block.attentions[0]
    original = reference.mid_block.attentions[0]
    assert isinstance(block, ane.ANETransformer2D)
    assert torch.equal(
        block.transformer_blocks[0].ff.net[2].weight[:, :, 0, 0],
        original.transformer_blocks[0].ff.net[2].weight,
    )
    assert ane.to_neural_engine(copied) is copied  # already converted: nothing to do


def tiny_transformer(**options):
    from diffusers.models.transformers.transformer_2d import Transformer2DModel

    base = {
        "num_attention_heads": 2,
        "attention_head_dim": 8,
        "in_channels": 16,
        "norm_num_groups": 4,
        "cross_attention_dim": 32,
    }
    return Transformer2DModel(**{**base, **options})


@pytest.mark.parametrize(
    ("options", "named"),
    [
        ({"activation_fn": "gelu"}, "activation_fn"),
        ({"norm_type": "ada_norm", "num_embeds_ada_norm": 10}, "norm_type"),
        ({"double_self_attention": True, "cross_attention_dim": None}, "double_self_attention"),
    ],
)
def test_unsupported_transformer_options_are_refused(options, named):
    with pytest.raises(ValueError, match=named):
        ane.to_neural_engine(tiny_transformer(**options))


def test_unsupported_unet_option_is_refused_before_any_swap():
    unet = build_tiny_unet(0, only_cross_attention=True)
    with pytest.raises(ValueError, match="only_cross_attention"):
        ane.to_neural_engine(unet)
    assert not any(isinstance(m, ane.ANETransformer2D) for m in unet.modules())


def test_heads_must_divide_channels():
    with pytest.raises(ValueError, match="num_attention_heads=4"):
        ane.ANETransformer2D(16, inner_dim=30, num_heads=4)


# torch.export's pytree code trips its own deprecation (LeafSpec) while copying the program.
@pytest.mark.filterwarnings("ignore:.*LeafSpec.*:FutureWarning")
def test_transformer_exports_and_converts_to_mlprogram(unets):
    """One ANE transformer through the export recipe: ``torch.export`` (no ``jit.trace``),
    decompositions, coremltools 9 to a float16 ``mlprogram`` for macOS 14. (The whole tiny
    UNet converts the same way; it takes ~25 s here, so only this part is tested.)"""
    ct = pytest.importorskip("coremltools")
    logging.getLogger("coremltools").setLevel(logging.ERROR)

    class Wrapper(torch.nn.Module):
        def __init__(self, transformer: torch.nn.Module) -> None:
            super().__init__()
            self.transformer = transformer

        def forward(self, hidden: torch.Tensor, states: torch.Tensor) -> torch.Tensor:
            return self.transformer(hidden, encoder_hidden_states=states, return_dict=False)[0]

    transformer = unets[1].down_blocks[1].attentions[0]
    args = (torch.randn(1, 32, 8, 12), torch.randn(1, 77, 32))
    with torch.no_grad():
        program = torch.export.export(Wrapper(transformer), args).run_decompositions({})
    for node in list(program.graph.nodes):  # identities coremltools 9 has no converter for
        if node.op == "call_function" and node.target is torch.ops.aten.alias.default:
            node.replace_all_uses_with(node.args[0])
            program.graph.erase_node(node)
    program.graph_module.recompile()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        mlmodel = ct.convert(
            program,
            convert_to="mlprogram",
            minimum_deployment_target=ct.target.macOS14,
            compute_precision=ct.precision.FLOAT16,
            skip_model_load=True,  # no Core ML runtime on Linux
        )
    ops = {op.op_type for f in mlmodel._mil_program.functions.values() for op in f.operations}
    assert {"conv", "einsum", "softmax"} <= ops
    assert "linear" not in ops and "matmul" not in ops
