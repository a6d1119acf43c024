"""Run pbmlx's Metal kernels and CUDA twins on the CPU, from the exact source MLX builds.

Metal: the kernel is called inside ``mx.export_function`` with ``verbose=True``; MLX (>= 0.32)
then prints the complete Metal source it would compile (header, generated signature with
buffer indices and thread attributes, body, template instantiation) without running anything.
:func:`traced_sources` captures that text. :func:`compile_metal` compiles it as C++20 with
clang++ against ``emulation/gpu_shim.h`` (the Metal types and functions the bodies use) plus a
small generated launcher that calls the instantiated kernel for every thread of the grid,
group by group, with the thread-position arguments the signature asks for.

CUDA: MLX cannot build a CUDA kernel object without its CUDA backend, so
:func:`cuda_source` writes the source the way MLX 0.32's ``build_kernel``
(``mlx/backend/cuda/custom_kernel.cpp``) does: ``__global__ void custom_kernel_<name>(const T*
in..., T* out...)`` in ``namespace mlx::core::cu`` with the template arguments as ``constexpr``
/ ``using`` lines before the body, and all of ``ceil(grid / block)`` blocks launched.

Outputs start filled with a sentinel (NaN, or 0xAB bytes), so an element a kernel forgets to
write cannot pass a comparison by luck.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

SHIM = Path(__file__).parent / "emulation" / "gpu_shim.h"
_BUILD = Path(tempfile.gettempdir()) / f"pbmlx-gpu-emulation-{os.getuid()}"

NP_TYPES = {  # numpy dtype -> C type as the shim names it
    "float32": "float",
    "float16": "half",
    "uint8": "uchar",
    "int32": "int",
    "uint32": "uint",
}
CUDA_TYPES = {
    "float32": "float",
    "float16": "__half",
    "uint8": "uint8_t",
    "int32": "int32_t",
    "uint32": "uint32_t",
}


def clangxx() -> str | None:
    return shutil.which(os.environ.get("CXX", "")) or shutil.which("clang++")


# ---------------------------------------------------------------------------- tracing


def traced_sources(fn: Callable, *args) -> list[str]:
    """The generated kernel sources MLX prints while tracing ``fn(*args)``.

    ``fn`` must call its kernels with ``verbose=True``. stdout is captured at the file
    descriptor (MLX prints from C++).
    """
    import mlx.core as mx

    sys.stdout.flush()
    saved = os.dup(1)
    with tempfile.TemporaryFile(mode="w+b") as cap:
        os.dup2(cap.fileno(), 1)
        try:
            mx.export_function(lambda _: None, fn, *args)
        finally:
            sys.stdout.flush()
            os.dup2(saved, 1)
            os.close(saved)
        cap.seek(0)
        text = cap.read().decode()
    return re.findall(r"Generated source code for `[^`]+`:\n```\n(.*?)\n```", text, re.S)


# ---------------------------------------------------------------------------- compiling


@dataclass
class Param:
    ctype: str  # as written in the signature (address-space words included)
    name: str
    attr: str  # "buffer(3)", "thread_position_in_grid", ...


_THREAD_ATTRS = {
    "thread_position_in_grid": "pos_in_grid",
    "thread_position_in_threadgroup": "pos_in_group",
    "threadgroup_position_in_grid": "group_pos",
    "threads_per_threadgroup": "group_size",
    "threads_per_grid": "grid_size",
    "threadgroups_per_grid": "group_count",
}


def _metal_signature(source: str) -> tuple[str, list[Param], str]:
    m = re.search(r"\[\[kernel\]\] void (\w+)\((.*?)\) \{", source, re.S)
    if not m:
        raise ValueError("no [[kernel]] signature in the generated source")
    name, params = m.group(1), []
    for line in m.group(2).split(",\n"):
        p = re.match(r"\s*(.+?)\s*(\w+) \[\[(.+?)\]\]\s*$", line.strip(), re.S)
        if not p:
            raise ValueError(f"cannot parse kernel parameter {line!r}")
        params.append(Param(p.group(1), p.group(2), p.group(3)))
    inst = re.search(r"decltype\(" + name + r"(<.*?>)?\)", source)
    targs = inst.group(1) or "" if inst else ""
    return name, params, targs


def _compile(code: str, define: str) -> ctypes.CDLL:
    cxx = clangxx()
    if cxx is None:
        raise RuntimeError("clang++ is needed for the GPU emulation tests")
    _BUILD.mkdir(parents=True, exist_ok=True)
    key = hashlib.sha256((code + define + SHIM.read_text()).encode()).hexdigest()[:20]
    lib = _BUILD / f"k_{key}.so"
    if not lib.exists():
        src = _BUILD / f"k_{key}.cpp"
        src.write_text(code)
        tmp = _BUILD / f"k_{key}.{os.getpid()}.so"
        cmd = [cxx, "-std=c++20", "-O1", "-fPIC", "-shared", f"-D{define}", "-include", str(SHIM)]
        cmd += ["-Wall", "-Wno-unknown-attributes", "-Wno-unused-variable", "-Werror"]
        cmd += ["-Wno-unused-local-typedef"]  # MLX declares every template argument
        cmd += ["-o", str(tmp), str(src), "-lpthread"]
        run = subprocess.run(cmd, capture_output=True, text=True)
        if run.returncode != 0:
            raise RuntimeError(f"emulated kernel failed to compile:\n{run.stderr[-4000:]}")
        os.replace(tmp, lib)
    return ctypes.CDLL(str(lib))


class Emulated:
    """A compiled kernel: call with named numpy inputs, output specs, grid and threadgroup."""

    def __init__(self, lib: ctypes.CDLL, slots: list[tuple[str, str]], threaded: bool):
        self._fn = lib.pb_emulate
        self._fn.argtypes = [ctypes.POINTER(ctypes.c_void_p)] + [ctypes.c_uint] * 6
        self._fn.restype = None
        self.slots = slots  # (kind, name) per pointer: ("in"|"out"|"shape"|"strides"|"ndim")
        self.threaded = threaded

    def __call__(
        self,
        inputs: dict[str, np.ndarray],
        outputs: dict[str, tuple[Sequence[int], str]],
        grid: tuple[int, int, int],
        threadgroup: tuple[int, int, int],
    ) -> dict[str, np.ndarray]:
        keep: list[np.ndarray] = []
        result: dict[str, np.ndarray] = {}
        for name, (shape, dtype) in outputs.items():
            out = np.empty(shape, dtype=dtype)
            if np.issubdtype(out.dtype, np.floating):
                out.fill(np.nan)
            else:
                out.view(np.uint8).fill(0xAB)
            result[name] = out
        ptrs = (ctypes.c_void_p * len(self.slots))()
        for i, (kind, name) in enumerate(self.slots):
            if kind == "in":
                a = np.ascontiguousarray(inputs[name])
            elif kind == "out":
                a = result[name]
            elif kind == "shape":
                a = np.asarray(inputs[name].shape, dtype=np.int32)
            elif kind == "strides":
                a = np.asarray(np.array(inputs[name]).strides, dtype=np.int64)
                a = a // inputs[name].itemsize
            else:
                a = np.asarray([inputs[name].ndim], dtype=np.int32)
            keep.append(a)
            ptrs[i] = a.ctypes.data
        self._fn(ptrs, *map(int, grid), *map(int, threadgroup))
        return result


def compile_metal(source: str) -> Emulated:
    """Compile one generated Metal kernel source (from :func:`traced_sources`)."""
    name, params, targs = _metal_signature(source)
    body = "\n".join(
        line for line in source.splitlines() if not line.startswith("template [[host_name")
    )
    slots, args = [], []
    for p in params:
        if p.attr.startswith("buffer("):
            index = int(p.attr[7:-1])
            kind, base = "in", p.name
            for suffix in ("shape", "strides", "ndim"):
                if p.name.endswith("_" + suffix):
                    kind, base = suffix, p.name[: -len(suffix) - 1]
            if kind == "in" and "const" not in p.ctype.split():
                kind = "out"
            slots.append((index, kind, base))
            ctype = p.ctype.replace("&", "*")
            arg = f"({ctype})b[{index}]"
            args.append(f"*{arg}" if "&" in p.ctype else arg)
        elif p.attr == "thread_index_in_threadgroup":
            args.append("c.index_in_group")
        elif p.attr in _THREAD_ATTRS:
            field = _THREAD_ATTRS[p.attr]
            args.append(f"c.{field}.x" if p.ctype == "uint" else f"({p.ctype})(c.{field})")
        else:
            raise ValueError(f"the emulator does not know the attribute [[{p.attr}]]")
    slots.sort()
    if [s[0] for s in slots] != list(range(len(slots))):
        raise ValueError("buffer indices are not 0..n-1")
    threaded = "threadgroup_barrier" in source
    launcher = f"""
extern "C" void pb_emulate(void** b, unsigned gx, unsigned gy, unsigned gz,
                           unsigned tx, unsigned ty, unsigned tz) {{
  pbemu::launch({{gx, gy, gz}}, {{tx, ty, tz}}, {str(threaded).lower()}, false,
                [&](const pbemu::ThreadCtx& c) {{ (void)c; {name}{targs}({", ".join(args)}); }});
}}
"""
    lib = _compile(body + "\n" + launcher, "PBEMU_METAL")
    return Emulated(lib, [(k, n) for _, k, n in slots], threaded)


def _cuda_hash(template: Sequence[tuple[str, object]]) -> str:
    out = ""
    for _, v in template:
        if isinstance(v, bool):
            out += "_t" if v else "_f"
        elif isinstance(v, int):
            out += f"_{v}"
        else:
            out += "_" + _dtype_name(v)
    return out


def _dtype_name(dtype) -> str:
    return str(dtype).rsplit(".", 1)[-1]


def cuda_source(
    name: str,
    header: str,
    body: str,
    inputs: Sequence[tuple[str, str]],
    outputs: Sequence[tuple[str, str]],
    template: Sequence[tuple[str, object]] = (),
) -> tuple[str, str]:
    """(function name, source) as MLX 0.32 builds a ``cuda_kernel``; ``inputs``/``outputs``
    are (name, numpy dtype name) pairs, ``template`` MLX's (name, int | bool | dtype) list."""
    fname = f"custom_kernel_{name}{_cuda_hash(template)}"
    lines = [header, "namespace mlx::core::cu {\n\nnamespace cg = cooperative_groups;\n"]
    params = [f"    const {CUDA_TYPES[t]}* {n}" for n, t in inputs]
    params += [f"    {CUDA_TYPES[t]}* {n}" for n, t in outputs]
    lines.append(f"__global__ void {fname}(\n" + ",\n".join(params) + ") {")
    for tname, v in template:
        if isinstance(v, bool):
            lines.append(f"  constexpr bool {tname} = {str(v).lower()};")
        elif isinstance(v, int):
            lines.append(f"  constexpr int {tname} = {v};")
        else:
            lines.append(f"  using {tname} = {CUDA_TYPES[_dtype_name(v)]};")
    lines.append("")
    lines.append(body)
    lines.append("}\n\n} // namespace mlx::core::cu\n")
    return fname, "\n".join(lines)


def compile_cuda(
    fname: str, source: str, inputs: Sequence[tuple[str, str]], outputs: Sequence[tuple[str, str]]
) -> Emulated:
    """Compile a :func:`cuda_source` text; buffers are passed in signature order."""
    args = [f"(const {CUDA_TYPES[t]}*)b[{i}]" for i, (_, t) in enumerate(inputs)]
    args += [f"({CUDA_TYPES[t]}*)b[{len(inputs) + i}]" for i, (_, t) in enumerate(outputs)]
    threaded = "__syncthreads" in source or ".sync()" in source
    launcher = f"""
extern "C" void pb_emulate(void** b, unsigned gx, unsigned gy, unsigned gz,
                           unsigned tx, unsigned ty, unsigned tz) {{
  pbemu::launch({{gx, gy, gz}}, {{tx, ty, tz}}, {str(threaded).lower()}, true,
                [&](const pbemu::ThreadCtx&) {{ mlx::core::cu::{fname}({", ".join(args)}); }});
}}
"""
    lib = _compile(source + "\n" + launcher, "PBEMU_CUDA")
    slots = [("in", n) for n, _ in inputs] + [("out", n) for n, _ in outputs]
    return Emulated(lib, slots, threaded)


# ---------------------------------------------------------------------------- snapshots

SNAPSHOTS = Path(__file__).parent / "snapshots"
ENV_UPDATE = "PBMLX_UPDATE_SNAPSHOTS"  # "1": rewrite the snapshot files instead of comparing


def check_snapshot(name: str, text: str) -> None:
    """Compare ``text`` with ``tests/snapshots/<name>``; with ``PBMLX_UPDATE_SNAPSHOTS=1``
    (re)write the file instead. A changed kernel source must be reviewed and re-recorded."""
    path = SNAPSHOTS / name
    if os.environ.get(ENV_UPDATE) == "1":
        SNAPSHOTS.mkdir(exist_ok=True)
        path.write_text(text)
        return
    assert path.exists(), f"no snapshot {path.name}: record it with {ENV_UPDATE}=1"
    expected = path.read_text()
    assert text == expected, (
        f"generated source differs from {path.name} ({ENV_UPDATE}=1 re-records)"
    )


# ---------------------------------------------------------------------------- a stand-in launcher

_EMULATED: dict[tuple, Emulated] = {}


def _np_dtype(dtype) -> str:
    return _dtype_name(dtype)


def emulated_launch(
    backend: str,
    name: str,
    *,
    inputs: Sequence,
    template: Sequence[tuple[str, object]] = (),
    grid: tuple[int, int, int],
    threadgroup: tuple[int, int, int],
    output_shapes: Sequence[Sequence[int]],
    output_dtypes: Sequence,
    verbose: bool = False,
) -> list:
    """A drop-in for :func:`pbmlx.kernels.gpu.launch` that runs the kernel in the emulator:
    Metal from the source MLX generates for exactly these inputs and template, CUDA from
    :func:`cuda_source`. Monkeypatch it over ``pbmlx.kernels.gpu.launch`` (and make the
    dispatcher see a GPU backend) to run a dispatcher's whole GPU path on the CPU."""
    import mlx.core as mx
    from pbmlx.kernels import gpu
    from pbmlx.kernels.source import read

    arrays = [np.array(a) for a in inputs]
    in_types = tuple((a.dtype.name, a.size == 1) for a in arrays)
    out_types = tuple(_np_dtype(d) for d in output_dtypes)
    key = (backend, name, in_types, out_types, tuple((k, str(v)) for k, v in template))
    src = read(f"{name}.{'metal' if backend == 'metal' else 'cu'}")
    if key not in _EMULATED:
        if backend == "metal":

            def call(*xs):
                return gpu.metal(name)(
                    inputs=list(xs),
                    template=list(template),
                    grid=grid,
                    threadgroup=threadgroup,
                    output_shapes=[list(s) for s in output_shapes],
                    output_dtypes=list(output_dtypes),
                    verbose=True,
                )

            (source,) = traced_sources(call, *[mx.array(a) for a in arrays])
            _EMULATED[key] = compile_metal(source)
        else:
            ins = [(n, a.dtype.name) for n, a in zip(src.input_names, arrays, strict=True)]
            outs = list(zip(src.output_names, out_types, strict=True))
            fname, source = cuda_source(name, src.header, src.body, ins, outs, template)
            _EMULATED[key] = compile_cuda(fname, source, ins, outs)
    outputs = {
        n: (tuple(s), t) for n, s, t in zip(src.output_names, output_shapes, out_types, strict=True)
    }
    got = _EMULATED[key](
        dict(zip(src.input_names, arrays, strict=True)), outputs, grid, threadgroup
    )
    return [mx.array(got[n]) for n in src.output_names]
