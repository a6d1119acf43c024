"""pbmlx.kernels: custom kernels for the hot paths, each beside the definition it must match.

Every kernel family has an MLX-op reference (its definition, and what runs where the backend has
no kernel), one dispatcher that the rest of pbmlx calls, and kernels per backend:

==========================  =====================  ================  ====================
family (dispatchers)        Metal / CUDA body      CPU               reference
==========================  =====================  ================  ====================
adjust chain                adjust_chain.metal/cu  cpu_kernels.c     pbmlx.adjust.ops
(``adjust.adjust_chain``)
blur, unsharp mask          blur.metal/cu          (reference)       ops.gaussian_blur
(``adjust.gaussian_blur``,
``adjust.unsharp``)
GroupNorm (+SiLU)           group_norm.metal/cu    cpu_kernels.c     cpu.group_norm_reference
(``norm.group_norm``)
guidance + scheduler step   guided_step.metal/cu   (reference)       pipeline.guide + step
(``guidance.guided_step``)
image pre/post-processing   image_io.metal/cu      (reference)       image_io.*_reference
(``image_io.*``)
attention, SiLU, GELU,      MLX's own fused ops    cpu_kernels.c     cpu.*_reference
GEGLU, linear, conv         (sdpa on Metal)
(``cpu.*``)
==========================  =====================  ================  ====================

:mod:`~pbmlx.kernels.dispatch` chooses (``PBMLX_KERNELS=reference`` or ``reference_only()``
forces the references everywhere); :mod:`~pbmlx.kernels.source` reads the ``.metal`` / ``.cu``
files; :mod:`~pbmlx.kernels.gpu` builds each once with ``mx.fast.metal_kernel`` /
``mx.fast.cuda_kernel``; :mod:`~pbmlx.kernels.cpu` compiles and binds the C kernels. The proofs
(reference vs float64 NumPy, traced-source snapshots, a C++ emulation of each generated GPU
source, device tests where a GPU is present) are in ``tests/test_kernels_*.py``.
"""
