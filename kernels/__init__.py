"""pbmlx.kernels: custom kernels for the hot paths.

Each kernel lives here as its ``.metal`` body (and CUDA twin), beside the MLX-op reference it
must match and a dispatcher that uses the kernel only where the backend has it. The rest of
pbmlx calls the dispatchers, never a kernel directly. Kernels are added with their proofs
(reference parity, traced source, CPU emulation); until one exists for an op, the op's MLX
reference in ``pbmlx.adjust`` is what runs.
"""
