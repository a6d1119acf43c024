"""InstructPix2Pix's dual guidance fused with the sampler update: kernel, reference, dispatcher.

Per denoising step the UNet returns ``eps3`` = ``[e_text, e_img, e_uncond]`` (the batch of
three, ``3 B`` rows) and the sampler moves the latents ``x`` (``B`` rows):

    eps = e_uncond + s_txt (e_text - e_img) + s_img (e_img - e_uncond)      (pipeline.guide)
    x'  = scheduler.step(eps, i, x)                                         (Scheduler.step)

Definition (:func:`reference`): exactly that composition, ``guide(eps3.astype(float32), ...)``
then ``scheduler.step``, float32 throughout, returning float32. The kernel
(``guided_step.metal``, CUDA twin ``guided_step.cu``) does it in one pass per latent element,
reading the three predictions, ``x`` and (when the step adds noise) ``z``, and writing ``x'``;
the step's scalars come from :meth:`Scheduler.step_coefficients` in a float32 array
(:func:`coefficients`), so a new step or a new schedule never recompiles the kernel. Its
operations are the reference's float32 operations in the reference's order: on a GPU it differs
from the reference only by the compiler's fast-math (contraction, approximate division).

Template arguments: ``KIND`` (0: Euler / Euler-Ancestral, 1: DDIM) and ``NOISE`` (does the
step add noise). The buffers' types follow the inputs' dtypes: ``eps3`` and ``x`` may be
float32 or float16 (the UNet's half-precision output is read without a converting pass); other
dtypes are converted to float32 first (exactly, as the reference does).

:func:`guided_step` is the dispatcher the pipeline calls: the kernel on MLX's Metal and CUDA
backends, the reference elsewhere (the CPU backend, where MLX's elementwise ops are vectorized
and the reference keeps the numerics identical to the unfused code's), when forced
(:func:`pbmlx.kernels.dispatch.reference_only`, ``PBMLX_KERNELS=reference``), or for inputs
the kernel does not take (``x`` not shaped like one third of ``eps3``, ``3 n >= 2**32``
elements, a scheduler without :class:`StepCoefficients`).
"""

from __future__ import annotations

from typing import Any

import mlx.core as mx
import numpy as np
from pbmlx.kernels.dispatch import choose
from pbmlx.kernels.gpu import launch

from pbmlx.diffuse.schedulers import Scheduler, StepCoefficients, _noise_for

NAME = "guided_step"
THREADGROUP = 256  # threads per group: one element each, a memory-bound pass
# Coefficient layout after [guidance, image_guidance]: see guided_step.metal's header.
FIELDS = {
    "sigma": ("sigma", "dt", "noise_std", "x0_eps", "x0_div"),
    "ddim": (
        "x0_x",
        "x0_eps",
        "x0_div",
        "hat_eps",
        "hat_x",
        "clip",
        "clip_range",
        "a_x0",
        "a_dir",
        "noise_std",
    ),
}
KINDS = {"sigma": 0, "ddim": 1}  # the kernel's KIND template argument
N_COEFFICIENTS = 2 + max(len(f) for f in FIELDS.values())
KERNEL_DTYPES = (mx.float32, mx.float16)  # eps3 / x dtypes the kernel reads as they are
MAX_ELEMENTS = (2**32 - 1) // 3  # the kernel indexes eps3 with 32-bit unsigned offsets


def reference(
    eps3: mx.array,
    x: mx.array,
    scheduler: Scheduler,
    step_index: int,
    guidance: float,
    image_guidance: float,
    *,
    noise: mx.array | None = None,
    key: mx.array | None = None,
) -> mx.array:
    """``scheduler.step(guide(eps3.astype(float32), guidance, image_guidance), i, x, ...)``.

    The definition: the pipeline's guidance and the scheduler's own step, unchanged. ``key``
    and ``noise`` are passed on only to a stochastic scheduler (a deterministic one takes
    neither). Returns float32 ``x.shape`` (for ``x`` shaped like a third of ``eps3``).
    """
    # Imported here: the pipeline imports this module (guided_step) at its top.
    from pbmlx.diffuse.pipeline import guide

    eps = guide(eps3.astype(mx.float32), guidance, image_guidance)
    if not scheduler.stochastic:
        return scheduler.step(eps, step_index, x)
    return scheduler.step(eps, step_index, x, key=key, noise=noise)


def coefficients(
    step: StepCoefficients, guidance: float, image_guidance: float
) -> np.ndarray | None:
    """The kernel's ``coef`` input, float32 ``(N_COEFFICIENTS,)``:
    ``[guidance, image_guidance, *step.values in FIELDS[step.family] order, 0-padding]``;
    ``None`` for a family the kernel does not implement."""
    names = FIELDS.get(step.family)
    if names is None:
        return None
    values = [guidance, image_guidance, *(step.values[k] for k in names)]
    out = np.zeros(N_COEFFICIENTS, dtype=np.float32)
    out[: len(values)] = values  # rounded to float32 as MLX rounds a Python scalar operand
    return out


def launch_args(
    eps3: mx.array,
    x: mx.array,
    coef: np.ndarray | mx.array,
    family: str,
    noise: mx.array | None = None,
) -> dict[str, Any]:
    """The keyword arguments of the kernel call (``gpu.launch``) for latents ``x`` and
    predictions ``eps3`` (row-contiguous, ``3 * x.size`` elements): inputs
    ``[eps3, x, noise or a 1-element placeholder, coef, count = [x.size] (uint32)]``, template
    ``KIND``, ``NOISE``, grid ``(n, 1, 1)``, groups of ``min(THREADGROUP, n)``, one float32
    output shaped like ``x``. Shared with the tests, so they launch what the dispatcher does."""
    n = x.size
    noisy = noise is not None
    return {
        "inputs": [
            eps3,
            x,
            noise if noisy else mx.zeros((1,), dtype=mx.float32),
            mx.array(coef, dtype=mx.float32),
            mx.array([n], dtype=mx.uint32),
        ],
        "template": [("KIND", KINDS[family]), ("NOISE", noisy)],
        "grid": (n, 1, 1),
        "threadgroup": (min(THREADGROUP, n), 1, 1),
        "output_shapes": [x.shape],
        "output_dtypes": [mx.float32],
    }


def kernel_step(
    backend: str,
    eps3: mx.array,
    x: mx.array,
    coef: np.ndarray | mx.array,
    family: str,
    noise: mx.array | None = None,
    *,
    verbose: bool = False,
) -> mx.array:
    """Run the ``backend`` (``"metal"`` / ``"cuda"``) kernel; inputs as :func:`launch_args`
    takes them (eps3, x float32 or float16, noise float32). ``verbose`` prints the source."""
    args = launch_args(eps3, x, coef, family, noise)
    return launch(backend, NAME, verbose=verbose, **args)[0]


def _step_coefficients(scheduler: Scheduler, step_index: int) -> StepCoefficients | None:
    try:
        return scheduler.step_coefficients(step_index)
    except NotImplementedError:  # a scheduler whose update has no coefficient form
        return None


def _kernel_input(a: mx.array) -> mx.array:
    return a if a.dtype in KERNEL_DTYPES else a.astype(mx.float32)


def guided_step(
    eps3: mx.array,
    x: mx.array,
    scheduler: Scheduler,
    step_index: int,
    guidance: float,
    image_guidance: float,
    *,
    noise: mx.array | None = None,
    key: mx.array | None = None,
) -> mx.array:
    """One denoising step from the UNet's batch-of-three prediction: :func:`reference`'s
    result (float32, shaped like ``x``), by the fused kernel where the backend has one.

    ``noise`` / ``key`` as :meth:`Scheduler.step` takes them (exactly one for a stochastic
    scheduler; a step that adds no noise ignores them, as ``step`` does). On the kernel path
    the noise drawn from ``key`` is the reference's draw (``mx.random.normal(x.shape,
    float32, key)``).
    """
    backend = choose(("metal", "cuda"))
    args = (eps3, x, scheduler, step_index, guidance, image_guidance)
    if backend == "reference":
        return reference(*args, noise=noise, key=key)
    fits = (
        eps3.ndim == x.ndim
        and eps3.ndim > 0
        and eps3.shape[0] == 3 * x.shape[0]
        and tuple(eps3.shape[1:]) == tuple(x.shape[1:])
        and 0 < x.size <= MAX_ELEMENTS
    )
    step = _step_coefficients(scheduler, step_index) if fits else None
    coef = coefficients(step, guidance, image_guidance) if step is not None else None
    if coef is None:
        return reference(*args, noise=noise, key=key)
    z = _noise_for(x, key, noise) if step.noise else None  # same checks and draw as step()
    eps3, x = _kernel_input(eps3), _kernel_input(x)
    return kernel_step(backend, eps3, x, coef, step.family, z)
