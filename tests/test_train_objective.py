"""One training step's loss and gradients in MLX against PyTorch/diffusers, and the DPO loss.

The reference is diffusers' ``UNet2DConditionModel`` with the same (tiny, random) weights, fed
the same batch and the same draws (noise, timesteps, dropout variable), with the step written as
diffusers' ``examples/instruct_pix2pix/train_instruct_pix2pix.py`` writes it: ``DDPMScheduler.
add_noise``, ``prompt_mask = u < 2 d`` replacing the text states by the empty prompt's,
``image_mask = 1 - (u >= d) * (u < 3 d)`` on the image latents, the epsilon target and
``F.mse_loss(..., reduction="mean")``. The dropout variables are chosen so that the batch holds
each case: text dropped, both dropped, image dropped, nothing dropped.

Tolerances: the loss to 1e-5 relative; each parameter's gradient to 2e-3 of that gradient's
largest magnitude, and the whole gradient vector's relative L2 error to 2e-4. Both sides are
float32 and differ only in summation order; through the UNet's depth and the backward pass that
grows to ~1e-5 of scale here (measured below), while a real mistake (a wrong dropout mask,
target or layout) changes gradients by tens of percent.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

import pbmlx  # noqa: F401  (first, so MLX binds OpenBLAS)

import mlx.core as mx  # isort: skip
import mlx.nn as nn  # isort: skip
from mlx.utils import tree_flatten

from pbmlx.models import load_unet
from pbmlx.train import objective

torch = pytest.importorskip("torch")
diffusers = pytest.importorskip("diffusers")
from tiny_ip2p import SCHEDULER_CONFIG, build_tiny_unet  # noqa: E402

LOSS_RTOL = 1e-5
GRAD_TOL = 2e-3  # of each parameter's max |grad|
GRAD_L2 = 2e-4
DROPOUT = 0.05
U = [0.01, 0.07, 0.12, 0.5]  # text dropped / both / image dropped / none (d = 0.05)


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    folder = tmp_path_factory.mktemp("unet")
    ref = build_tiny_unet(seed=3)
    ref.save_pretrained(folder)
    return ref, load_unet(folder, dtype=mx.float32)


def inputs(cross_dim: int, hw=(8, 8), seed=0):
    rng = np.random.default_rng(seed)
    b = len(U)
    f = np.float32
    return {
        "z": rng.standard_normal((b, 4, *hw)).astype(f),
        "img": rng.standard_normal((b, 4, *hw)).astype(f),
        "text": rng.standard_normal((b, 7, cross_dim)).astype(f),
        "null": rng.standard_normal((1, 7, cross_dim)).astype(f),
        "noise": rng.standard_normal((b, 4, *hw)).astype(f),
        "t": np.array([3, 999, 500, 250], dtype=np.int64),
        "u": np.array(U, dtype=f),
    }


def nhwc(x):
    return mx.array(np.ascontiguousarray(x.transpose(0, 2, 3, 1)))


def torch_step(unet, d):
    sched = diffusers.DDPMScheduler(
        **{k: v for k, v in SCHEDULER_CONFIG.items() if not k.startswith("_")}
    )
    z, noise, t = (torch.from_numpy(d[k]) for k in ("z", "noise", "t"))
    noisy = sched.add_noise(z, noise, t)
    u = torch.from_numpy(d["u"])
    text = torch.from_numpy(d["text"])
    prompt_mask = (u < 2 * DROPOUT).reshape(-1, 1, 1)
    text = torch.where(prompt_mask, torch.from_numpy(d["null"]), text)
    img = torch.from_numpy(d["img"])
    image_mask = 1 - ((u >= DROPOUT).float() * (u < 3 * DROPOUT).float())
    img = image_mask.reshape(-1, 1, 1, 1) * img
    unet.zero_grad()
    pred = unet(torch.cat([noisy, img], dim=1), t, text).sample
    loss = torch.nn.functional.mse_loss(pred.float(), noise.float(), reduction="mean")
    loss.backward()
    return loss.item(), {n: p.grad.detach().numpy().copy() for n, p in unet.named_parameters()}


def mlx_step(unet, d, alphas):
    batch = objective.Batch(nhwc(d["z"]), nhwc(d["img"]), mx.array(d["text"]))
    draws = objective.Draws(nhwc(d["noise"]), mx.array(d["t"].astype(np.int32)), mx.array(d["u"]))
    null = mx.array(d["null"])

    def f(batch, draws):
        return objective.ip2p_loss(unet, batch, draws, null, alphas, dropout=DROPOUT)

    loss, grads = nn.value_and_grad(unet, f)(batch, draws)
    return loss.item(), grads


def test_loss_and_gradients_match_diffusers(models) -> None:
    ref, ours = models
    ref.train()  # dropout is 0 in the config: train mode changes nothing but is what training runs
    d = inputs(ref.config.cross_attention_dim)
    alphas, _, _ = objective.schedule_table(SCHEDULER_CONFIG)
    ref_loss, ref_grads = torch_step(ref, d)
    loss, grads = mlx_step(ours, d, alphas)
    assert math.isclose(loss, ref_loss, rel_tol=LOSS_RTOL), (loss, ref_loss)
    # The reference's gradients in pbmlx's names and layouts, through the UNet's own sanitize.
    from pbmlx.models import unet as unet_module

    want = unet_module.sanitize({n: mx.array(g) for n, g in ref_grads.items()})
    got = dict(tree_flatten(grads))
    assert set(got) == set(want)
    num = den = 0.0
    top = max(float(np.abs(np.array(g)).max()) for g in want.values())
    for name, g in got.items():
        a, b = np.array(g, dtype=np.float64), np.array(want[name], dtype=np.float64)
        assert a.shape == b.shape, name
        # A parameter whose true gradient is 0 (the mid block's attention over one position:
        # softmax of a single score is 1 whatever the query) is held to the global scale.
        scale = max(np.abs(b).max(), 1e-6 * top)
        err = np.abs(a - b).max() / scale
        assert err <= GRAD_TOL, (name, err, np.abs(a).max(), np.abs(b).max())
        num += float(np.sum((a - b) ** 2))
        den += float(np.sum(b**2))
    assert math.sqrt(num / den) <= GRAD_L2, math.sqrt(num / den)


def test_a_wrong_dropout_mask_is_caught(models) -> None:
    """Control: swapping which examples lose their image moves the loss far outside LOSS_RTOL."""
    ref, ours = models
    d = inputs(ref.config.cross_attention_dim)
    alphas, _, _ = objective.schedule_table(SCHEDULER_CONFIG)
    ref_loss, _ = torch_step(ref, d)
    wrong = dict(d, u=np.array([0.12, 0.5, 0.01, 0.07], dtype=np.float32))
    loss, _ = mlx_step(ours, wrong, alphas)
    assert not math.isclose(loss, ref_loss, rel_tol=100 * LOSS_RTOL)


def test_conditioning_dropout_cases() -> None:
    text = mx.ones((4, 2, 3))
    img = mx.ones((4, 2, 2, 1))
    batch = objective.Batch(img, img, text)
    null = mx.zeros((1, 2, 3))
    t, i = objective.conditioning(batch, null, mx.array(U), DROPOUT)
    assert np.array(t)[:, 0, 0].tolist() == [0, 0, 1, 1]  # text dropped for u < 2d
    assert np.array(i)[:, 0, 0, 0].tolist() == [1, 0, 0, 1]  # image dropped for d <= u < 3d


def test_v_prediction_target() -> None:
    z, n = mx.array([[2.0]]), mx.array([[0.5]])
    a = mx.array([0.64])
    x_t, target = objective.noisy_and_target(z, n, mx.array([0]), a, "v_prediction")
    assert np.allclose(np.array(x_t), 0.8 * 2 + 0.6 * 0.5)
    assert np.allclose(np.array(target), 0.8 * 0.5 - 0.6 * 2)


def test_dpo_loss_formula() -> None:
    """-log sigmoid(-beta/2 ((e_w - r_w) - (e_l - r_l))) against float64, with a stand-in model
    whose errors are known: an identity 'UNet' that returns its first 4 channels."""

    class Echo(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv_in = nn.Linear(1, 1)  # only its dtype is read

        def __call__(self, x, t, text):
            return x[..., :4]

    rng = np.random.default_rng(0)
    zw, zl, img, noise = (rng.standard_normal((2, 3, 3, 4)).astype(np.float32) for _ in range(4))
    text = np.zeros((2, 1, 1), np.float32)
    alphas = mx.array(np.linspace(0.99, 0.01, 10).astype(np.float32))
    t = np.array([2, 7], np.int32)
    draws = objective.Draws(mx.array(noise), mx.array(t), mx.zeros((2,)))
    winner = objective.Batch(mx.array(zw), mx.array(img), mx.array(text))
    ref_err = (mx.array([0.3, 0.1]), mx.array([0.2, 0.4]))
    beta = 7.0
    got = objective.dpo_loss(Echo(), ref_err, winner, mx.array(zl), draws, alphas, beta=beta).item()
    a = np.array(alphas, np.float64)[t][:, None, None, None]

    def err(z):
        x_t = np.sqrt(a) * z + np.sqrt(1 - a) * noise
        return ((x_t - noise) ** 2).reshape(2, -1).mean(axis=1)

    diff = (err(zw) - [0.3, 0.1]) - (err(zl) - [0.2, 0.4])
    want = np.mean(np.log1p(np.exp(0.5 * beta * diff)))  # -log sigmoid(-x) = log(1 + e^x)
    assert math.isclose(got, want, rel_tol=1e-5)
