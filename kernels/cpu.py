"""Fused CPU kernels for MLX's CPU backend: attention, GroupNorm (+SiLU), SiLU, GELU, GEGLU.

Why: MLX's CPU backend (the Linux wheel) evaluates ``exp``, ``erf`` and ``sigmoid`` one
element at a time through scalar library calls (~20 ns per element, one thread), and its
attention writes the whole ``L x S`` score matrix to memory before a softmax of the same
speed. In the InstructPix2Pix UNet at 64 x 64 latents that is ~2 x 10^9 exponentials per
step. The kernels here are C, vectorized with the compiler's vector extensions (8 float
lanes: AVX2 on x86, pairs of NEON registers on ARM) and run on all cores:

- ``attention``: ``softmax(q k^T / sqrt(d)) v`` per (batch, head), in blocks of 16 query rows
  whose scores stay in cache (no ``L x S`` matrix in memory);
- ``group_norm``: statistics and normalization in one kernel, optionally fused with SiLU;
- ``silu``, ``gelu`` (exact, erf-based) and ``geglu`` (``a * gelu(gate)``).

Accuracy (float32; the tests hold them to float64 oracles): ``exp`` 1.3 ulp; SiLU and GELU
absolute error <= 2e-7 * max(1, |x|) (MLX's own erf-based GELU: 1.8e-7); attention and
GroupNorm agree with float64 references to a few 1e-7 of the output scale, as MLX's ops do.

How it runs: the C source (``cpu_kernels.c`` beside this file) is compiled on first use with
the system C compiler (``$CC``, else ``cc``/``gcc``/``clang``; ``-O3 -march=native``) into a
per-machine cache folder
(``$PBMLX_CACHE`` or ``$XDG_CACHE_HOME/pbmlx``, else ``~/.cache/pbmlx``) and loaded with
ctypes, once per process. A kernel reads its inputs' memory in place (evaluated,
row-contiguous float32 MLX arrays export it without a copy) and writes a fresh MLX array that
nothing else references; the work is split over threads (ctypes releases the GIL).

Each dispatcher uses its kernel only when the kernel was built, the default device is the
CPU, the inputs are float32 and no function transformation (``mx.compile``, ``vmap``,
``grad``) is tracing; otherwise it runs the MLX-op reference beside it, which is the
definition the kernel must match. ``PBMLX_CPU_KERNELS=0`` switches the kernels off;
:func:`info` says whether they are in use and why not.
"""

from __future__ import annotations

import ctypes
import hashlib
import itertools
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import mlx.core as mx
import mlx.nn as nn
import numpy as np

ENV_SWITCH = "PBMLX_CPU_KERNELS"  # "0" turns the kernels off
# "reference" forces every dispatcher (these, and the Metal and CUDA ones of kernels/dispatch.py)
# onto its MLX-op reference: the switch that compares a kernel with its definition.
ENV_KERNELS = "PBMLX_KERNELS"
ENV_THREADS = "PBMLX_CPU_THREADS"  # worker threads (default: the CPUs this process may use)
ENV_CACHE = "PBMLX_CACHE"
ENV_WINOGRAD = "PBMLX_WINOGRAD"  # "0": 3 x 3 convolutions by im2col only; "2": F(2 x 2) only
COMPILE_FLAGS = ("-O3", "-std=gnu11", "-fPIC", "-shared")
NATIVE_FLAGS = ("-march=native",)  # tried first; dropped if the compiler refuses them
COMPILE_TIMEOUT_S = 120
MIN_PARALLEL = 1 << 16  # elements below which a kernel runs on the calling thread only
MIN_KERNEL = 1 << 12  # elements below which the MLX reference runs (no sync for tiny arrays)
CHUNKS_PER_THREAD = 4  # work is cut in this many chunks per thread, taken dynamically
# A GEMM is cut in one part per thread: each part packs its own copy of the shared operand
# (OpenBLAS packs per call), so finer cuts repeat that traffic (measured: 1 part per thread
# 5-50% faster than 4 on the UNet's shapes, on 2 quiet cores).
GEMM_CHUNKS_PER_THREAD = 1
QUERY_BLOCK = 24  # attention query rows per block (QR in the C source)

# The C source, a file beside this one (installed as package data).
SOURCE_FILE = "cpu_kernels.c"
_SOURCE = (Path(__file__).parent / SOURCE_FILE).read_text(encoding="utf-8")


# ---------------------------------------------------------------------------- the build


@dataclass(frozen=True)
class KernelInfo:
    """Whether the CPU kernels are in use in this process, and why not if they are not."""

    available: bool
    library: str  # the shared library's path, or "" when not built
    reason: str  # how it was built, or why not
    threads: int


_LOCK = threading.Lock()
_LIB: ctypes.CDLL | None = None
_INFO: KernelInfo | None = None
_ENABLED = True  # see use_kernels()


def _threads() -> int:
    env = os.environ.get(ENV_THREADS, "")
    if env.isdigit() and int(env) > 0:
        return int(env)
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS
        return os.cpu_count() or 1


def _cache_dir() -> Path:
    if os.environ.get(ENV_CACHE):
        return Path(os.environ[ENV_CACHE]) / "kernels"
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "pbmlx" / "kernels"


def _cpu_signature() -> str:
    """What -march=native depends on: a library built for one CPU is not loaded on another."""
    sig = [platform.machine(), platform.processor()]
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith(("flags", "Features", "model name")):
                    sig.append(line.strip())
                if len(sig) >= 4:
                    break
    except OSError:
        pass
    return "\n".join(sig)


def _compiler() -> str | None:
    for name in (os.environ.get("CC"), "cc", "gcc", "clang"):
        if name and shutil.which(name):
            return shutil.which(name)
    return None


def _compile(cc: str, out: Path) -> str:
    """Compile the source into ``out`` (atomically); returns the flags used. Raises on failure."""
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out.parent) as tmp:
        src = Path(tmp) / "pbmlx_cpu.c"
        src.write_text(_SOURCE)
        errors = []
        for extra in (NATIVE_FLAGS, ()):
            lib = Path(tmp) / "lib.so"
            cmd = [cc, *COMPILE_FLAGS, *extra, str(src), "-o", str(lib), "-lm"]
            run = subprocess.run(cmd, capture_output=True, text=True, timeout=COMPILE_TIMEOUT_S)
            if run.returncode == 0:
                os.replace(lib, out)  # atomic: a concurrent build writes the same bytes
                return " ".join((*COMPILE_FLAGS, *extra))
            errors.append(run.stderr.strip().splitlines()[-1:] or ["?"])
        raise RuntimeError(f"{cc} failed: {errors[-1][0]}")


def _bind(lib: ctypes.CDLL) -> None:
    P, N, F, C = ctypes.c_void_p, ctypes.c_int64, ctypes.c_float, ctypes.c_int
    for name in ("pb_exp", "pb_silu", "pb_gelu"):
        getattr(lib, name).argtypes = [P, P, N]
        getattr(lib, name).restype = None
    lib.pb_geglu.argtypes = [P, P, N, N]
    lib.pb_geglu.restype = None
    lib.pb_group_norm.argtypes = [P, P, P, P, N, N, N, F, C, N, N, P]
    lib.pb_group_norm.restype = None
    lib.pb_attention_work.argtypes = [N, N]
    lib.pb_attention_work.restype = N
    lib.pb_attention.argtypes = [P, P, P, P, N, N, N, N, F, N, N, N, P]
    lib.pb_attention.restype = None
    lib.pb_im2col.argtypes = [P, N, N, N, N, N, N, N, N, N, N, N, P]
    lib.pb_im2col.restype = None
    lib.pb_fill_rows.argtypes = [P, N, P, N, N]
    lib.pb_fill_rows.restype = None
    lib.pb_wino_weight.argtypes = [P, N, C, N, N, P, N]
    lib.pb_wino_weight.restype = None
    lib.pb_wino_input.argtypes = [P, N, N, N, C, N, N, N, N, P, N]
    lib.pb_wino_input.restype = None
    lib.pb_wino_output.argtypes = [P, N, N, C, N, N, N, N, N, N, N, N, N, P, P]
    lib.pb_wino_output.restype = None
    lib.pb_adjust_chain.argtypes = [P, C, P, C, N, P, N, P, N, N, P]
    lib.pb_adjust_chain.restype = None


def _self_check(lib: ctypes.CDLL) -> None:
    """A miscompiled library (wrong vector lowering, bad flags) must not be used."""
    x = np.linspace(-20, 20, 101, dtype=np.float32)
    y = np.empty_like(x)
    lib.pb_exp(x.ctypes.data, y.ctypes.data, x.size)
    if not np.allclose(y, np.exp(x.astype(np.float64)), rtol=1e-6, atol=0):
        raise RuntimeError("the compiled exp failed its self-check")


def _load() -> tuple[ctypes.CDLL | None, KernelInfo]:
    threads = _threads()
    if os.environ.get(ENV_SWITCH, "1").strip() == "0":
        return None, KernelInfo(False, "", f"{ENV_SWITCH}=0", threads)
    if os.environ.get(ENV_KERNELS, "").strip().lower() == "reference":
        return None, KernelInfo(False, "", f"{ENV_KERNELS}=reference", threads)
    cc = _compiler()
    if cc is None:
        return None, KernelInfo(False, "", "no C compiler (set CC) to build them", threads)
    key = hashlib.sha256("\0".join((_SOURCE, cc, _cpu_signature())).encode()).hexdigest()[:16]
    path = _cache_dir() / f"pbmlx_cpu_{key}.so"
    try:
        how = f"cached build {path.name}"
        if not path.exists():
            how = f"built with {cc} {_compile(cc, path)}"
        lib = ctypes.CDLL(str(path))
        _bind(lib)
        _self_check(lib)
    except (OSError, RuntimeError, subprocess.SubprocessError) as e:
        return None, KernelInfo(False, "", f"build failed: {e}", threads)
    _reuse_freed_memory()
    return lib, KernelInfo(True, str(path), how, threads)


M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # glibc mallopt parameters
REUSE_BYTES = 256 << 20


def _reuse_freed_memory() -> bool:
    """Let glibc keep freed blocks up to :data:`REUSE_BYTES` for reuse (Linux only).

    MLX's CPU allocator and these kernels' outputs take every array from ``malloc``; glibc
    serves blocks above its mmap threshold (at most 32 MB) with fresh pages and unmaps them on
    free, so each step of the UNet faults in its activations again: at 512 px, 380 thousand
    page faults and 1.4 s of kernel time per step (getrusage). Raising the mmap and trim
    thresholds makes those blocks come from, and go back to, the heap; the cost is that up to
    that much freed memory stays mapped to the process. ``PBMLX_MALLOC=default`` leaves glibc's
    settings alone. Returns whether they were changed."""
    if os.environ.get("PBMLX_MALLOC", "").strip() == "default" or sys.platform != "linux":
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # not glibc (musl has no mallopt)
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return bool(mallopt(M_MMAP_THRESHOLD, REUSE_BYTES) and mallopt(M_TRIM_THRESHOLD, REUSE_BYTES))


def _lib() -> ctypes.CDLL | None:
    global _LIB, _INFO
    if _INFO is None:
        with _LOCK:
            if _INFO is None:
                _LIB, _INFO = _load()
    return _LIB


def info() -> KernelInfo:
    """Build (once) and report; never raises."""
    _lib()
    assert _INFO is not None
    return _INFO


@contextmanager
def use_kernels(enabled: bool):
    """Run the block with the kernels on or off (off: the MLX-op references everywhere)."""
    global _ENABLED
    before, _ENABLED = _ENABLED, enabled
    try:
        yield
    finally:
        _ENABLED = before


# ---------------------------------------------------------------------------- running


_POOL: ThreadPoolExecutor | None = None
_WORK = threading.local()  # per-thread scratch buffers


def _pool() -> ThreadPoolExecutor:
    global _POOL
    if _POOL is None:
        with _LOCK:
            if _POOL is None:
                _POOL = ThreadPoolExecutor(info().threads, thread_name_prefix="pbmlx-cpu")
    return _POOL


def _parallel(
    fn: Callable[[int, int], None], n: int, size: int, grain: int = 1, per_thread: int = 0
) -> None:
    """``fn(i0, i1)`` over ``[0, n)`` in contiguous chunks (multiples of ``grain``) that the
    threads take in turn from a shared counter: a thread slowed down by another process simply
    takes fewer chunks. ``size`` is the job's element count (small jobs stay on this thread);
    ``per_thread`` chunks per thread (default :data:`CHUNKS_PER_THREAD`)."""
    threads = info().threads if size >= MIN_PARALLEL else 1
    chunks = min(threads * (per_thread or CHUNKS_PER_THREAD), n // grain)
    if threads == 1 or chunks <= 1:
        fn(0, n)
        return
    cuts = [min(n, (n * i // chunks) // grain * grain) for i in range(chunks)] + [n]
    counter = itertools.count()  # next() is atomic under the GIL

    def take() -> None:
        while (i := next(counter)) < chunks:
            if cuts[i] < cuts[i + 1]:
                fn(cuts[i], cuts[i + 1])

    helpers = [_pool().submit(take) for _ in range(min(threads, chunks) - 1)]
    take()
    for f in helpers:
        f.result()


def _scratch(nbytes: int) -> np.ndarray:
    buf = getattr(_WORK, "buf", None)
    if buf is None or buf.nbytes < nbytes:
        buf = _WORK.buf = np.empty(max(nbytes, 1 << 20), dtype=np.uint8)
    return buf


def _workspace(nbytes: int) -> np.ndarray:
    """The calling thread's buffer for a kernel's intermediate operands, which the worker
    threads share (distinct from their own :func:`_scratch`); grown, never shrunk."""
    buf = getattr(_WORK, "workspace", None)
    if buf is None or buf.nbytes < nbytes:
        buf = _WORK.workspace = np.empty(max(nbytes, 1 << 20), dtype=np.uint8)
    return buf


def _usable(*arrays: mx.array) -> bool:
    if not _ENABLED or mx.default_device() != mx.cpu:
        return False
    if any(a.dtype != mx.float32 for a in arrays):
        return False
    return _lib() is not None


def _ready(*arrays: mx.array) -> list[mx.array] | None:
    """The arrays evaluated and row-contiguous, or None while a transformation is tracing."""
    arrays = [mx.contiguous(a) for a in arrays]
    try:
        mx.eval(*arrays)
    except ValueError as e:  # mx.compile / vmap / grad: no eval while tracing
        if "transformation" in str(e):
            return None
        raise
    return arrays


def _out(shape: Sequence[int], dtype: mx.Dtype = mx.float32) -> tuple[mx.array, np.ndarray]:
    """A fresh MLX array that nothing else references, and its memory as numpy."""
    out = mx.zeros(shape, dtype=dtype)
    mx.eval(out)
    view = np.asarray(out)
    if not (view.flags.c_contiguous and view.flags.writeable and view.size == out.size):
        raise RuntimeError("MLX returned an unexpected buffer for a fresh array")
    return out, view


def _grad_by(reference: Callable[..., mx.array], kernel: Callable[..., mx.array], *arrays):
    """``kernel(*arrays)``, differentiated as ``reference(*arrays)``.

    A kernel reads its inputs' memory and writes a fresh array, so it is not in MLX's graph:
    under ``mx.grad`` / ``value_and_grad`` (which evaluate eagerly, so the kernel still runs)
    its output would carry no gradient and training would silently learn nothing. As an
    ``mx.custom_function`` whose vector-Jacobian product is the reference's, the forward value
    is the kernel's and the gradient the definition's.
    """
    fn = mx.custom_function(kernel)

    @fn.vjp
    def _vjp(primals, cotangent, output):
        single = isinstance(primals, mx.array)  # MLX passes one primal bare, several as a tuple
        grads = mx.vjp(reference, [primals] if single else list(primals), [cotangent])[1]
        return grads[0] if single else tuple(grads)

    return fn(*arrays)


def _ptr(a: mx.array | np.ndarray) -> int:
    return np.asarray(a).ctypes.data


# ---------------------------------------------------------------------------- references


def attention_reference(
    q: mx.array, k: mx.array, v: mx.array, heads: int, scale: float | None = None
) -> mx.array:
    """Multi-head ``softmax(q k^T * scale) v`` on ``(B, L, heads * d)`` projections (keys and
    values ``(B, S, heads * d)``) -> ``(B, L, heads * d)``; ``scale`` defaults to ``d**-0.5``.
    With ``mx.fast.scaled_dot_product_attention``."""
    B, L, D = q.shape
    S = k.shape[1]
    d = D // heads
    q = q.reshape(B, L, heads, d).transpose(0, 2, 1, 3)
    k = k.reshape(B, S, heads, d).transpose(0, 2, 1, 3)
    v = v.reshape(B, S, heads, d).transpose(0, 2, 1, 3)
    out = mx.fast.scaled_dot_product_attention(q, k, v, scale=d**-0.5 if scale is None else scale)
    return out.transpose(0, 2, 1, 3).reshape(B, L, D)  # (B, L, heads * d)


@mx.compile
def _group_norm_ref(x: mx.array, weight: mx.array, bias: mx.array, groups: int, eps: float):
    # Statistics over (positions, channels of the group) without moving the group axis, so no
    # transposed copy of the activation is made; computed in float32 whatever x's dtype.
    B, C = x.shape[0], x.shape[-1]
    xg = x.reshape(B, -1, groups, C // groups).astype(mx.float32)
    mean = mx.mean(xg, axis=(1, 3), keepdims=True)
    var = mx.mean(mx.square(xg - mean), axis=(1, 3), keepdims=True)
    y = ((xg - mean) * mx.rsqrt(var + eps)).reshape(x.shape).astype(x.dtype)
    return y * weight + bias


def group_norm_reference(
    x: mx.array, weight: mx.array, bias: mx.array, groups: int, eps: float
) -> mx.array:
    """torch.nn.GroupNorm on channels-last ``x`` ``(B, ..., C)``: per sample and group of
    ``C / groups`` channels, ``(x - mean) / sqrt(var + eps) * weight + bias`` (biased var)."""
    return _group_norm_ref(x, weight, bias, groups, eps)


def gelu_reference(x: mx.array) -> mx.array:
    """Exact GELU ``x * Phi(x) = x / 2 * (1 + erf(x / sqrt(2)))`` (torch.nn.GELU())."""
    return nn.gelu(x)


def geglu_reference(h: mx.array) -> mx.array:
    """``a * gelu(gate)`` where ``[a, gate]`` are the two halves of ``h``'s last axis."""
    a, gate = mx.split(h, 2, axis=-1)
    return a * nn.gelu(gate)


# ---------------------------------------------------------------------------- dispatchers


def silu(x: mx.array) -> mx.array:
    """``x * sigmoid(x)`` (reference: ``mlx.nn.silu``)."""
    if x.size < MIN_KERNEL or not _usable(x) or (ready := _ready(x)) is None:
        return nn.silu(x)
    return _grad_by(nn.silu, lambda x: _unary(_LIB.pb_silu, x), ready[0])


def gelu(x: mx.array) -> mx.array:
    """Exact GELU (reference: :func:`gelu_reference`)."""
    if x.size < MIN_KERNEL or not _usable(x) or (ready := _ready(x)) is None:
        return gelu_reference(x)
    return _grad_by(gelu_reference, lambda x: _unary(_LIB.pb_gelu, x), ready[0])


def _unary(fn, x: mx.array) -> mx.array:
    out, view = _out(x.shape)
    xp, yp = _ptr(x), view.ctypes.data
    step = 64  # elements per range boundary: whole vectors

    def run(i0: int, i1: int) -> None:
        n0, n1 = i0 * step, min(i1 * step, x.size)
        fn(xp + 4 * n0, yp + 4 * n0, n1 - n0)

    _parallel(run, -(-x.size // step), x.size)
    return out


def geglu(h: mx.array) -> mx.array:
    """``a * gelu(gate)`` for ``[a, gate]`` the halves of ``h``'s last axis (reference:
    :func:`geglu_reference`); ``(..., 2 n) -> (..., n)``."""
    if h.size < MIN_KERNEL or not _usable(h) or (ready := _ready(h)) is None:
        return geglu_reference(h)
    return _grad_by(geglu_reference, _geglu_kernel, ready[0])


def _geglu_kernel(h: mx.array) -> mx.array:
    inner = h.shape[-1] // 2
    rows = h.size // (2 * inner)
    out, view = _out((*h.shape[:-1], inner))
    hp, yp = _ptr(h), view.ctypes.data

    def run(r0: int, r1: int) -> None:
        _LIB.pb_geglu(hp + 4 * r0 * 2 * inner, yp + 4 * r0 * inner, r1 - r0, inner)

    _parallel(run, rows, h.size)
    return out


def _group_chunks(batch: int, groups: int) -> int:
    """Into how many group ranges each sample is cut, for enough chunks to share out."""
    return max(1, min(groups, -(-info().threads * CHUNKS_PER_THREAD // batch)))


def group_norm(
    x: mx.array,
    weight: mx.array,
    bias: mx.array,
    groups: int,
    eps: float,
    act: Callable[[mx.array], mx.array] | None = None,
) -> mx.array:
    """``act(group_norm(x))`` on channels-last ``x`` ``(B, ..., C)`` (reference:
    :func:`group_norm_reference`, then ``act``); SiLU (``act`` is :func:`silu`) is fused."""
    if (
        x.size < MIN_KERNEL
        or not _usable(x, weight, bias)
        or (ready := _ready(x, weight, bias)) is None
    ):
        y = group_norm_reference(x, weight, bias, groups, eps)
        return act(y) if act is not None else y
    fused = act is silu

    def reference(x, weight, bias):
        y = group_norm_reference(x, weight, bias, groups, eps)
        return nn.silu(y) if fused else y

    def kernel(x, weight, bias):
        return _group_norm_kernel(x, weight, bias, groups, eps, fused)

    out = _grad_by(reference, kernel, *ready)
    return out if fused or act is None else act(out)


def _group_norm_kernel(
    x: mx.array, weight: mx.array, bias: mx.array, groups: int, eps: float, fused: bool
) -> mx.array:
    B, C = x.shape[0], x.shape[-1]
    HW = x.size // (B * C)
    out, view = _out(x.shape)
    xp, wp, bp, yp = _ptr(x), _ptr(weight), _ptr(bias), view.ctypes.data
    chunks = _group_chunks(B, groups)
    nbytes = 16 * C  # 2 doubles per channel

    def run(u0: int, u1: int) -> None:
        work = _scratch(nbytes)
        for u in range(u0, u1):
            b, c = divmod(u, chunks)
            g0, g1 = groups * c // chunks, groups * (c + 1) // chunks
            off = 4 * b * HW * C
            _LIB.pb_group_norm(
                xp + off, wp, bp, yp + off, HW, C, groups, eps, int(fused), g0, g1,
                work.ctypes.data,
            )  # fmt: skip

    _parallel(run, B * chunks, x.size)
    return out


def attention(
    q: mx.array, k: mx.array, v: mx.array, heads: int, scale: float | None = None
) -> mx.array:
    """Multi-head softmax attention (reference: :func:`attention_reference`, same contract)."""
    B, L, _ = q.shape
    S = k.shape[1]
    if B * L * S * heads < MIN_KERNEL or not _usable(q, k, v) or (ready := _ready(q, k, v)) is None:
        return attention_reference(q, k, v, heads, scale)
    return _grad_by(
        lambda q, k, v: attention_reference(q, k, v, heads, scale),
        lambda q, k, v: _attention_kernel(q, k, v, heads, scale),
        *ready,
    )


def _attention_kernel(
    q: mx.array, k: mx.array, v: mx.array, heads: int, scale: float | None
) -> mx.array:
    B, L, D = q.shape
    S = k.shape[1]
    d = D // heads
    scale = d**-0.5 if scale is None else scale
    out, view = _out(q.shape)
    pairs, threads = B * heads, info().threads
    # Split each (batch, head) pair's query rows only when there are few pairs per thread.
    want = threads * CHUNKS_PER_THREAD
    chunks = min(-(-want // pairs), max(1, L // QUERY_BLOCK)) if pairs < want else 1
    nbytes = 4 * _LIB.pb_attention_work(S, d)
    qp, kp, vp, op = _ptr(q), _ptr(k), _ptr(v), view.ctypes.data

    def run(u0: int, u1: int) -> None:
        work = _scratch(nbytes)
        _LIB.pb_attention(qp, kp, vp, op, L, S, heads, d, scale, chunks, u0, u1, work.ctypes.data)

    _parallel(run, pairs * chunks, B * L * S * heads)
    return out


# ---------------------------------------------------------------------------- GEMM


@dataclass(frozen=True)
class _Blas:
    sgemm: Callable[..., None]
    get_threads: Callable[[], int]
    set_threads: Callable[[int], None]


_BLAS: _Blas | None = None
_BLAS_LOADED = False
ROW_MAJOR, NO_TRANS, TRANS = 101, 111, 112  # CBLAS enums
MIN_GEMM = 1 << 20  # multiply-adds below which MLX's own matmul runs
ROWS_PER_THREAD = 64  # below this many output rows per thread, threads split the columns
COLS_GRAIN = 16  # columns per chunk are a multiple of this (whole vectors)
COLS_BLOCK_BYTES = 8 << 20  # im2col rows are built and multiplied this many bytes at a time


def _find(lib: ctypes.CDLL, *names: str):
    for name in names:
        try:
            return getattr(lib, name)
        except AttributeError:
            continue
    raise AttributeError(names[0])


def _blas() -> _Blas | None:
    """The OpenBLAS that pbmlx.backend gave MLX (None where MLX kept another BLAS): its
    single-threaded sgemm, which the GEMM dispatchers call from several threads at once."""
    global _BLAS, _BLAS_LOADED
    if _BLAS_LOADED:
        return _BLAS
    with _LOCK:
        if not _BLAS_LOADED:
            from pbmlx.backend import blas_info

            blas = blas_info()
            if blas.optimized and Path(blas.library).is_file():
                try:
                    lib = ctypes.CDLL(blas.library)
                    sgemm = _find(lib, "scipy_cblas_sgemm", "cblas_sgemm")
                    P, N, F = ctypes.c_void_p, ctypes.c_int, ctypes.c_float
                    sgemm.argtypes = [N, N, N, N, N, N, F, P, N, P, N, F, P, N]
                    sgemm.restype = None
                    get = _find(lib, "scipy_openblas_get_num_threads", "openblas_get_num_threads")
                    put = _find(lib, "scipy_openblas_set_num_threads", "openblas_set_num_threads")
                    get.restype, put.argtypes, put.restype = ctypes.c_int, [ctypes.c_int], None
                    _BLAS = _Blas(sgemm, get, put)
                except (OSError, AttributeError):
                    _BLAS = None
            _BLAS_LOADED = True
    return _BLAS


@contextmanager
def _blas_single_threaded(blas: _Blas):
    """OpenBLAS's own threads synchronise by spinning: when this process's threads already
    share the cores with each other (or with other processes), one descheduled thread stalls
    the rest. Our threads call it one thread each, on independent parts of the product."""
    before = blas.get_threads()
    if before != 1:
        blas.set_threads(1)
    try:
        yield
    finally:
        if before != 1:
            blas.set_threads(before)


def _split_rows(rows: int, cols: int) -> bool:
    """Whether a GEMM with this many output rows and columns is split by rows (else by
    columns): the threads' parts share the operand along the other axis, which each part
    packs again, so the axis split is the longer one (rows: each part packs all the weight)."""
    return rows >= info().threads * ROWS_PER_THREAD and rows >= cols


def _gemm(blas: _Blas, a: int, M: int, K: int, w: int, N: int, y: int, bias: int | None) -> None:
    """``y (M x N) = a (M x K) . w^T (w: N x K) [+ bias]``, all row-major float32 pointers,
    split over the threads by rows (or by columns when there are few rows)."""
    by_rows = _split_rows(M, N)

    def run(i0: int, i1: int) -> None:
        m0, m1, n0, n1 = (i0, i1, 0, N) if by_rows else (0, M, i0, i1)
        if m1 <= m0 or n1 <= n0:
            return
        out = y + 4 * (m0 * N + n0)
        if bias is not None:
            _LIB.pb_fill_rows(out, N, bias + 4 * n0, m1 - m0, n1 - n0)
        blas.sgemm(
            ROW_MAJOR, NO_TRANS, TRANS, m1 - m0, n1 - n0, K, 1.0, a + 4 * m0 * K, K,
            w + 4 * n0 * K, K, 0.0 if bias is None else 1.0, out, N,
        )  # fmt: skip

    grain = ROWS_PER_THREAD if by_rows else COLS_GRAIN
    _parallel(run, M if by_rows else N, M * N * K, grain, GEMM_CHUNKS_PER_THREAD)


def linear_reference(x: mx.array, weight: mx.array, bias: mx.array | None = None) -> mx.array:
    """``x @ weight.T + bias`` (``mlx.nn.Linear``): ``(..., K) -> (..., N)``, weight ``(N, K)``."""
    return mx.addmm(bias, x, weight.T) if bias is not None else x @ weight.T


def linear(x: mx.array, weight: mx.array, bias: mx.array | None = None) -> mx.array:
    """``x @ weight.T + bias`` (reference: :func:`linear_reference`) with OpenBLAS's sgemm run
    on independent row (or column) ranges by this module's threads."""
    N, K = weight.shape
    M = x.size // K
    params = (weight,) if bias is None else (weight, bias)
    if (
        M * N * K < MIN_GEMM
        or not _usable(x, *params)
        or (blas := _blas()) is None
        or (ready := _ready(x, *params)) is None
    ):
        return linear_reference(x, weight, bias)

    def kernel(x, weight, *rest):
        out, view = _out((*x.shape[:-1], N))
        with _blas_single_threaded(blas):
            y = view.ctypes.data
            _gemm(blas, _ptr(x), M, K, _ptr(weight), N, y, _ptr(rest[0]) if rest else None)
        return out

    return _grad_by(lambda x, w, *b: linear_reference(x, w, *b), kernel, *ready)


def conv2d_reference(
    x: mx.array, weight: mx.array, bias: mx.array | None, stride: int, padding: int
) -> mx.array:
    """``mlx.nn.Conv2d``: NHWC ``x``, weight ``(O, kh, kw, C)``, zero padding on all sides."""
    y = mx.conv2d(x, weight, stride=stride, padding=padding)
    return y + bias if bias is not None else y


def conv2d(
    x: mx.array, weight: mx.array, bias: mx.array | None, stride: int, padding: int
) -> mx.array:
    """2-D convolution (reference: :func:`conv2d_reference`): im2col rows built in per-thread
    blocks that stay in cache, each block multiplied by the weight (read as ``(O, kh kw C)``,
    no copy) with OpenBLAS's sgemm; the threads split the output rows (or, with few rows, the
    output channels). A 1 x 1 convolution is :func:`linear`."""
    B, H, W, C = x.shape
    Cout, kh, kw, _ = weight.shape
    Ho, Wo = (H + 2 * padding - kh) // stride + 1, (W + 2 * padding - kw) // stride + 1
    if kh == kw == 1 and stride == 1 and padding == 0:
        return linear(x, weight.reshape(Cout, C), bias)
    M, K = B * Ho * Wo, kh * kw * C
    params = (weight,) if bias is None else (weight, bias)
    if (
        M * Cout * K < MIN_GEMM
        or not _usable(x, *params)
        or (blas := _blas()) is None
        or (ready := _ready(x, *params)) is None
    ):
        return conv2d_reference(x, weight, bias, stride, padding)
    if m := _winograd_tile(x.shape, weight.shape, stride, padding):
        kernel = lambda x, w, *b: _conv3x3_winograd(blas, x, w, b, m)  # noqa: E731
    else:
        kernel = lambda x, w, *b: _conv2d_kernel(blas, x, w, b, stride, padding)  # noqa: E731
    return _grad_by(
        lambda x, w, *b: conv2d_reference(x, w, b[0] if b else None, stride, padding),
        kernel,
        *ready,
    )


WINOGRAD_MIN_PIXELS = 8 * 8  # output pixels from which a 3 x 3 convolution is Winograd
WINOGRAD_F4_MIN_PIXELS = 32 * 32  # and from which it uses 4 x 4 output tiles
WINOGRAD_WORKSPACE_BYTES = 96 << 20  # transformed operands a Winograd convolution may hold


def _winograd_tile(xshape, wshape, stride: int, padding: int) -> int:
    """The Winograd output tile ``m`` for this convolution (0: im2col instead).

    Only stride-1, padding-1 3 x 3 convolutions with channel counts in whole vectors. Measured
    on the UNet's shapes (2 cores, batch 3; benchmarks/kernel_timings.py): F(2 x 2) is 1.2-2.5x
    faster than im2col from 8 x 8 pixels up, F(4 x 4) a further 1.3-1.9x from 32 x 32 up and no
    faster below; under 8 x 8 the tiles are too few for either. F(4 x 4)'s transforms have
    entries up to 8, which costs precision: 1e-5 of the output's scale against 5e-7 for F(2 x 2)
    and for im2col (float64 oracle), still 50x finer than float16's rounding.
    ``PBMLX_WINOGRAD=0`` turns Winograd off, ``=2`` keeps to F(2 x 2)."""
    _, H, W, C = xshape
    Cout, kh, kw, _ = wshape
    mode = os.environ.get(ENV_WINOGRAD, "").strip()
    if mode == "0" or kh != 3 or kw != 3 or stride != 1 or padding != 1 or C % 8 or Cout % 8:
        return 0
    if H * W < WINOGRAD_MIN_PIXELS:
        return 0
    return 4 if H * W >= WINOGRAD_F4_MIN_PIXELS and mode != "2" else 2


def _conv2d_kernel(blas, x, weight, rest, stride: int, padding: int) -> mx.array:
    B, H, W, C = x.shape
    Cout, kh, kw, _ = weight.shape
    Ho, Wo = (H + 2 * padding - kh) // stride + 1, (W + 2 * padding - kw) // stride + 1
    M, K = B * Ho * Wo, kh * kw * C
    out, view = _out((B, Ho, Wo, Cout))
    xp, wp, yp = _ptr(x), _ptr(weight), view.ctypes.data
    bp = _ptr(rest[0]) if rest else None
    geometry = (H, W, C, kh, kw, stride, padding, Ho, Wo)
    with _blas_single_threaded(blas):
        if not _split_rows(M, Cout):  # few rows: one im2col, the threads split the channels
            cols = _scratch(4 * M * K)
            _LIB.pb_im2col(xp, *geometry, 0, M, cols.ctypes.data)
            _gemm(blas, cols.ctypes.data, M, K, wp, Cout, yp, bp)
            return out
        block = max(16, COLS_BLOCK_BYTES // (4 * K))

        def run(r0: int, r1: int) -> None:
            cols = _scratch(4 * min(block, r1 - r0) * K).ctypes.data
            for b0 in range(r0, r1, block):
                b1 = min(b0 + block, r1)
                _LIB.pb_im2col(xp, *geometry, b0, b1, cols)
                y = yp + 4 * b0 * Cout
                if bp is not None:
                    _LIB.pb_fill_rows(y, Cout, bp, b1 - b0, Cout)
                blas.sgemm(
                    ROW_MAJOR, NO_TRANS, TRANS, b1 - b0, Cout, K, 1.0, cols, K, wp, K,
                    0.0 if bp is None else 1.0, y, Cout,
                )  # fmt: skip

        _parallel(run, M, M * Cout * K, ROWS_PER_THREAD, GEMM_CHUNKS_PER_THREAD)
    return out


def _conv3x3_winograd(blas, x, weight, rest, m: int) -> mx.array:
    """Stride-1, padding-1 3 x 3 convolution as Winograd F(m x m, 3 x 3) (see the C source),
    in blocks whose transformed operands stay within :data:`WINOGRAD_WORKSPACE_BYTES`:

    - small weights (transformed ``U`` within half the budget): ``U`` once, then the threads
      take blocks of tiles: input transform, ``alpha^2`` GEMMs, output transform per block;
    - large weights (few tiles, many channels): the input transform of a span of tiles once,
      then the threads take blocks of output channels: their part of ``U``, the GEMMs, the
      output transform; spans are as long as the budget allows (usually all the tiles).
    """
    B, H, W, C = x.shape
    Cout = weight.shape[0]
    P = (m + 2) ** 2
    th, tw = -(-H // m), -(-W // m)
    T = B * th * tw
    threads = info().threads
    out, view = _out((B, H, W, Cout))
    xp, wp, yp = _ptr(x), _ptr(weight), view.ctypes.data
    bp = _ptr(rest[0]) if rest else None
    geometry = (H, W, th, tw)
    per_thread = WINOGRAD_WORKSPACE_BYTES // (2 * threads)

    def gemms(v: int, rows: int, u: int, cols: int, out_m: int) -> None:
        # M_p (rows x cols) = V_p (rows x C) . U_p^T (U_p: cols x C), p < P
        for p in range(P):
            blas.sgemm(
                ROW_MAJOR, NO_TRANS, TRANS, rows, cols, C, 1.0, v + 4 * p * rows * C, C,
                u + 4 * p * cols * C, C, 0.0, out_m + 4 * p * rows * cols, cols,
            )  # fmt: skip

    with _blas_single_threaded(blas):
        if 4 * P * Cout * C <= WINOGRAD_WORKSPACE_BYTES // 2:
            up = _workspace(4 * P * Cout * C).ctypes.data
            _parallel(
                lambda o0, o1: _LIB.pb_wino_weight(wp, C, m, o0, o1, up + 4 * o0 * C, Cout),
                Cout, Cout * C * 9,
            )  # fmt: skip
            block = max(8, min(per_thread // (4 * P * (C + Cout)), -(-T // threads)))

            def by_tiles(t0: int, t1: int) -> None:
                work = _scratch(4 * P * block * (C + Cout)).ctypes.data
                for b0 in range(t0, t1, block):
                    n = min(block, t1 - b0)
                    vp, mp = work, work + 4 * P * n * C
                    _LIB.pb_wino_input(xp, H, W, C, m, th, tw, b0, b0 + n, vp, n)
                    gemms(vp, n, up, Cout, mp)
                    _LIB.pb_wino_output(
                        mp, n, Cout, m, *geometry, b0, b0 + n, 0, Cout, Cout, bp, yp
                    )

            _parallel(by_tiles, T, T * Cout * C * P, 1, GEMM_CHUNKS_PER_THREAD)
            return out
        span = max(1, min(T, (WINOGRAD_WORKSPACE_BYTES // 2) // (4 * P * C)))
        block = max(8, min(per_thread // (4 * P * (C + span)) // 8 * 8, -(-Cout // threads)))
        for s0 in range(0, T, span):
            n = min(span, T - s0)
            vp = _workspace(4 * P * n * C).ctypes.data

            def inputs(t0: int, t1: int, s0: int = s0, n: int = n, vp: int = vp) -> None:
                _LIB.pb_wino_input(xp, H, W, C, m, th, tw, s0 + t0, s0 + t1, vp + 4 * t0 * C, n)

            def by_channels(o0: int, o1: int, s0: int = s0, n: int = n, vp: int = vp) -> None:
                work = _scratch(4 * P * block * (C + n)).ctypes.data
                for c0 in range(o0, o1, block):
                    k = min(block, o1 - c0)
                    ub, mb = work, work + 4 * P * k * C
                    _LIB.pb_wino_weight(wp, C, m, c0, c0 + k, ub, k)
                    gemms(vp, n, ub, k, mb)
                    _LIB.pb_wino_output(
                        mb, n, k, m, *geometry, s0, s0 + n, c0, c0 + k, Cout, bp, yp
                    )

            _parallel(inputs, n, n * C * P)
            _parallel(by_channels, Cout, n * Cout * C * P, 8, GEMM_CHUNKS_PER_THREAD)
    return out
