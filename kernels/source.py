"""Kernel bodies kept as files beside this module: ``<name>.metal`` and ``<name>.cu``.

A file is what ``mx.fast.metal_kernel`` / ``mx.fast.cuda_kernel`` take, plus its interface in
comment lines, so the Python side, the traced-source snapshots and the CPU emulation harness
all read the same text::

    // inputs: src, prog
    // outputs: dst
    //@header
    <helper functions, included before the generated kernel signature>
    //@body
    <the kernel body: the generated function's statements>

The lines before ``//@header`` describe the kernel (what it computes, its grid) and are not
compiled. MLX generates the signature from the names (``const device T* src [[buffer(0)]]`` ...)
and the template arguments each call passes.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).parent
HEADER_MARK = "//@header"
BODY_MARK = "//@body"


@dataclass(frozen=True)
class KernelSource:
    name: str  # file stem: also the MLX kernel name
    path: Path
    input_names: tuple[str, ...]
    output_names: tuple[str, ...]
    header: str
    body: str


def _names(text: str, key: str, path: Path) -> tuple[str, ...]:
    for line in text.splitlines():
        if line.startswith(f"// {key}:"):
            return tuple(n.strip() for n in line.split(":", 1)[1].split(",") if n.strip())
    raise ValueError(f"{path.name} has no '// {key}:' line")


@functools.cache
def read(filename: str) -> KernelSource:
    """Parse ``filename`` (e.g. ``"adjust_chain.metal"``) from this folder; cached."""
    path = HERE / filename
    text = path.read_text(encoding="utf-8")
    if text.count(HEADER_MARK) != 1 or text.count(BODY_MARK) != 1:
        raise ValueError(f"{filename} needs exactly one {HEADER_MARK} and one {BODY_MARK} line")
    head, rest = text.split(HEADER_MARK, 1)
    header, body = rest.split(BODY_MARK, 1)
    return KernelSource(
        name=path.stem,
        path=path,
        input_names=_names(head, "inputs", path),
        output_names=_names(head, "outputs", path),
        header=header.strip("\n") + "\n",
        body=body.strip("\n") + "\n",
    )
