"""Export a full-size InstructPix2Pix model to Core ML and prove the packages, here.

    .venv/bin/python benchmarks/coreml_export.py [--work DIR] [--model DIR] [--size 512]
        [--attention split-einsum original] [--bits 8 6 4] [--json out.json]

The model is timbrooks/instruct-pix2pix's architecture at full size with random weights
(``tests/tiny_ip2p.build_full_ip2p``: UNet 860M, VAE 84M, text encoder 123M parameters),
written with diffusers' ``save_pretrained`` into ``--work`` (reused when there) and read by
``pbmlx.convert.coreml.source.load_source``, the path a real checkpoint takes. For each
``--attention`` variant and each package (TextEncoder, Unet, VAEEncoder, VAEDecoder):

a. parity of the export module (float32 PyTorch) with the reference library's own call on the
   same inputs (:func:`pbmlx.convert.coreml.modules.reference`): PSNR in dB (Apple's
   definition: peak = max |reference|) and max abs difference;
b. the float16 package is converted and saved, then palettized to each of ``--bits`` (k-means,
   per tensor for the default macOS14 ``--target``, per group of 16 output channels for
   macOS15/iOS18) and saved; every package's weights are read back
   from disk (:mod:`pbmlx.convert.coreml.readback`), loaded into the export module, and its
   output compared with the uncompressed module's: PSNR; package sizes in bytes.

Core ML cannot run here (no runtime on Linux), so nothing is timed on a Core ML device; on a
Mac, ``tests/test_coreml_mac.py`` times one UNet step per compute unit. Prints one JSON object
(also written to ``--json``). Not a test: about an hour on a 2-core machine, ~15 GB peak.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from pbmlx.convert.coreml.bundle import folder_bytes
from pbmlx.convert.coreml.compress import granularity, palettize
from pbmlx.convert.coreml.export import (
    ExportOptions,
    build_specs,
    quiet_toolchain,
    to_mlprogram,
)
from pbmlx.convert.coreml.modules import reference, run_spec
from pbmlx.convert.coreml.readback import psnr, run_with_package_weights
from pbmlx.convert.coreml.source import load_source
from tiny_ip2p import build_full_ip2p, build_tiny_ip2p


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def first_tensor(out):
    return out if isinstance(out, torch.Tensor) else out[0]


def readback_psnr(package: Path, spec, ref_out: np.ndarray) -> dict:
    out, by_value, missing = run_with_package_weights(package, spec)
    gc.collect()
    return {
        "psnr_db": psnr(out, ref_out),
        "parameters_by_name": sum(1 for _ in spec.module.parameters())
        - len(by_value)
        - len(missing),
        "parameters_by_value": len(by_value),
        "parameters_missing": missing,
    }


def run_variant(
    folder: Path,
    attention: str,
    size: int,
    bits: list[int],
    work: Path,
    target: str,
    packages: list[str] | None,
) -> dict:
    source = load_source(folder)
    options = ExportOptions(attention=attention, size=(size, size), target=target)
    # References first: the split-einsum export rewrites the source UNet in place.
    results: dict = {}
    refs: dict[str, np.ndarray] = {}
    plain = build_specs(source, ExportOptions(attention="original", size=(size, size)))
    for spec in plain:
        if packages and spec.name not in packages:
            continue
        refs[spec.name] = first_tensor(reference(spec.name, source, spec.inputs)).numpy()
    del plain
    specs = build_specs(source, options)
    for spec in specs:
        name = spec.name
        if packages and name not in packages:
            continue
        log(f"{attention} {name}: parity with the reference")
        t0 = time.perf_counter()
        out = first_tensor(run_spec(spec)).numpy()
        entry: dict = {
            "parity_psnr_db": psnr(out, refs[name]),
            "parity_max_abs_diff": float(np.abs(out - refs[name]).max()),
            "reference_peak": float(np.abs(refs[name]).max()),
            "forward_seconds": time.perf_counter() - t0,
        }
        log(f"{attention} {name}: converting")
        t0 = time.perf_counter()
        mlmodel = to_mlprogram(spec, options.target)
        entry["convert_seconds"] = time.perf_counter() - t0
        package = work / f"{attention}-{target}-{name}-float16.mlpackage"
        mlmodel.save(str(package))
        entry["packages"] = {
            "float16": {"bytes": folder_bytes(package), **readback_psnr(package, spec, out)}
        }
        for b in bits:
            log(f"{attention} {name}: palettizing to {b} bits")
            t0 = time.perf_counter()
            small = palettize(mlmodel, b, options.target)
            seconds = time.perf_counter() - t0
            path = work / f"{attention}-{target}-{name}-{b}bit.mlpackage"
            small.save(str(path))
            del small
            gc.collect()
            entry["packages"][f"{b}bit"] = {
                "bytes": folder_bytes(path),
                "palettize_seconds": seconds,
                **readback_psnr(path, spec, out),
            }
        del mlmodel
        gc.collect()
        results[name] = entry
        log(f"{attention} {name}: {json.dumps(entry)}")
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "pbmlx-ip2p")
    parser.add_argument(
        "--model",
        type=Path,
        help="an InstructPix2Pix folder to export instead of the random full-size one",
    )
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--attention", nargs="+", default=["split-einsum", "original"])
    parser.add_argument("--bits", type=int, nargs="*", default=[8, 6, 4])
    parser.add_argument(
        "--target",
        default="macOS14",
        help="deployment target: macOS14/iOS17 palettize per tensor, macOS15/iOS18 per group",
    )
    parser.add_argument("--packages", nargs="*", help="only these (e.g. Unet)")
    parser.add_argument("--json", type=Path)
    parser.add_argument(
        "--tiny", action="store_true", help="the tiny test model instead (checks the script)"
    )
    args = parser.parse_args()

    quiet_toolchain()
    torch.set_num_threads(os.cpu_count() or 1)
    folder = args.model or args.work / "model"
    if not args.model and not (folder / "model_index.json").is_file():
        log(f"building the full-size random IP2P model in {folder}")
        (build_tiny_ip2p if args.tiny else build_full_ip2p)(folder)
    out_packages = args.work / "packages"
    out_packages.mkdir(parents=True, exist_ok=True)
    report = {
        "model": (
            str(args.model)
            if args.model
            else "tiny test model (build_tiny_ip2p)"
            if args.tiny
            else "timbrooks/instruct-pix2pix architecture, random weights (build_full_ip2p)"
        ),
        "size": args.size,
        "target": args.target,
        "granularity": granularity(args.target),
        "load_average_before": os.getloadavg(),
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count()},
        "variants": {},
    }
    t0 = time.perf_counter()
    for attention in args.attention:
        report["variants"][attention] = run_variant(
            folder, attention, args.size, args.bits, out_packages, args.target, args.packages
        )
        gc.collect()
    report["seconds"] = time.perf_counter() - t0
    report["load_average_after"] = os.getloadavg()
    report["peak_rss_bytes"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    text = json.dumps(report, indent=2)
    print(text)
    if args.json:
        args.json.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
