"""What ``pbmlx bench`` measures and how: the plan, the timed runs, the figures per stage.

The plan (:class:`Plan`, from :class:`Options`; ``--quick`` in brackets):

1. the device's peak FLOP/s (:mod:`pbmlx.bench.peak`);
2. the generative edit, per variant (``float32``, ``float16``, ``8-bit``, ``4-bit``
   [``float32``, ``8-bit``]) and working size (256 and 512 px [256]), of a 12 MP [1 MP]
   photo: load (a given model read from disk, or the full-size networks built with random
   weights), text encode, image encode, each denoising step, decode, and the full-resolution
   restore (with the resize to working size), each timed and with its peak memory. A short
   warm-up edit (64 px, 1 step) runs first on each variant, so one-time start-up costs (kernel
   builds, thread pools) do not land in the first stage timed;
3. the exact adjust engine against PIL on 1 and 12 MP [1 MP] photos (one op, three ops; 8-bit
   in and out, alternating the two sides, best of N);
4. the judge on a 1 MP pair without and with [without] a CLIP model;
5. with ``--compare diffusers``: the same edit through diffusers'
   ``StableDiffusionInstructPix2PixPipeline`` on torch's best device, alternating with pbmlx's
   run of the compared variant (float16 on a GPU, else float32), 1 [2] pairs, best of each
   stage (:mod:`pbmlx.bench.compare`); with ``--coreml DIR`` (macOS): through the Core ML
   bundle per compute unit, compared with pbmlx's run at the bundle's working size when the
   plan has one.

Step counts: a run measures ``k`` steps and every total of ``N`` steps (10 and 20) is

    total(N) = text_encode + image_encode + sum(step_1..step_min(N,k))
               + max(0, N - k) x median(step_2..step_k) + decode + resize + restore

(every step is the same UNet work; the first may carry warm-up). Full runs measure ``k =
max(N)`` steps, so nothing is extrapolated; ``--quick`` measures ``k = 2`` and says so. A
pbmlx "edit" total excludes loading the model (paid once per process); ``first_edit`` adds it.

On MLX's CPU backend, quantized layers expand their weights per call into a dense matmul
(:class:`pbmlx.models.checkpoint.ExpandingQuantizedLinear`), so quantized variants run the
same stages as float32. float16 is not run on the CPU backend, where pbmlx computes half-precision
models in float32 (it would repeat the float32 rows).

Each figure is a :class:`StageRow`: seconds, FLOPs counted from the model configs
(:mod:`pbmlx.bench.flops`; None where a stage has no matrix products), achieved FLOP/s, the
fraction of the device's peak (measured in the same run, so under the same load), the seconds
that peak implies, and peak memory with the method (:mod:`pbmlx.bench.memory`: MLX's peak for
the networks' stages, NumPy's for the restore, resident growth with cold caches for the adjust
engine, PIL and the judge). The load average is recorded before and after: on a shared
machine timings are noisy and only ratios within one run compare.
"""

from __future__ import annotations

import gc
import importlib.metadata
import os
import platform
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any, ClassVar

import mlx.core as mx
import numpy as np

from pbmlx.bench import flops as flops_mod
from pbmlx.bench import models
from pbmlx.bench.compare import COREML_UNITS
from pbmlx.bench.memory import NumpyPeak, cold_peak_rss
from pbmlx.bench.peak import Peak
from pbmlx.errors import PbmlxError

SCHEMA = "pbmlx-bench/1"
PHOTOS = {1: (1224, 816), 12: (4240, 2832)}  # megapixels -> (width, height), 3:2
INSTRUCTION = "add a red scarf to the dog"  # any generative instruction: the work is the same
JUDGE_INSTRUCTION = "add a red ball to the picture"
WARMUP_SIZE = 64
QUICK_MEASURED_STEPS = 2
ADJUST_CASES = (
    ("brightness", ({"op": "brightness", "amount": 0.2},)),
    (
        "brightness+contrast+saturation",
        (
            {"op": "brightness", "amount": 0.2},
            {"op": "contrast", "amount": 0.2},
            {"op": "saturation", "amount": 0.2},
        ),
    ),
)
GROUPS = ("edit", "adjust", "judge")
VERSION_PACKAGES = (
    "pbmlx",
    "mlx",
    "numpy",
    "pillow",
    "tokenizers",
    "huggingface-hub",
    "tqdm",
    "torch",
    "diffusers",
    "transformers",
    "coremltools",
)


# ---------------------------------------------------------------------------- options


@dataclass(frozen=True)
class Options:
    """What to run; None fields take the ``--quick`` or full default (see :class:`Plan`)."""

    quick: bool = False
    model: str | None = None
    compare: tuple[str, ...] = ()  # ("diffusers",)
    coreml: str | None = None
    judge_model: str | None = None
    sizes: tuple[int, ...] | None = None
    steps: tuple[int, ...] | None = None
    variants: tuple[str, ...] | None = None
    only: tuple[str, ...] = GROUPS
    seed: int = 0


@dataclass(frozen=True)
class Plan:
    """The resolved matrix a run measures."""

    quick: bool
    sizes: tuple[int, ...]
    steps: tuple[int, ...]
    variants: tuple[str, ...]
    measured_steps: int
    edit_photo_mp: int
    adjust_mp: tuple[int, ...]
    judge_clip: bool
    repeats: int  # timed runs of each adjust case and of each comparison (alternating)
    groups: tuple[str, ...]

    @classmethod
    def from_options(cls, o: Options) -> Plan:
        steps = tuple(sorted(set(o.steps or (10, 20))))
        return cls(
            quick=o.quick,
            sizes=tuple(o.sizes or ((256,) if o.quick else (256, 512))),
            steps=steps,
            variants=tuple(o.variants or (("float32", "8-bit") if o.quick else models.VARIANTS)),
            measured_steps=QUICK_MEASURED_STEPS if o.quick else max(steps),
            edit_photo_mp=1 if o.quick else 12,
            adjust_mp=(1,) if o.quick else (1, 12),
            judge_clip=not o.quick,
            repeats=3 if o.quick else 5,
            groups=tuple(g for g in GROUPS if g in o.only),
        )


# ---------------------------------------------------------------------------- results


@dataclass
class StageRow:
    """One timed stage. ``flops`` None: no matrix products to count (then no FLOP/s either)."""

    group: str  # "edit", "adjust", "judge"
    engine: str  # "pbmlx", "diffusers (cpu)", "PIL", "coreml CPU_AND_NE"
    name: str  # "load", "text_encode", "image_encode", "denoise_first_step", "denoise_step",
    #            "decode", "restore", or an adjust/judge case
    seconds: float | None
    variant: str | None = None
    size: str | None = None  # working size "256x168", or the photo's "12 MP"
    flops: float | None = None
    flops_per_s: float | None = None
    fraction_of_peak: float | None = None
    seconds_at_peak: float | None = None
    peak_memory_bytes: int | None = None
    memory_method: str | None = None
    note: str = ""

    def finish(self, peak: float) -> StageRow:
        """Fill the derived figures: ``flops_per_s = flops / seconds``, ``fraction_of_peak =
        flops_per_s / peak``, ``seconds_at_peak = flops / peak``."""
        if self.flops is not None:
            self.seconds_at_peak = self.flops / peak
            if self.seconds:
                self.flops_per_s = self.flops / self.seconds
                self.fraction_of_peak = self.flops_per_s / peak
        return self


@dataclass
class EditRun:
    """One timed edit (pbmlx, diffusers or Core ML) at one working size."""

    engine: str
    variant: str
    size: int  # requested longest side
    working: tuple[int, int]  # (width, height)
    photo: tuple[int, int]
    measured_steps: int
    step_seconds: list[float]
    seconds: dict[str, float]  # text_encode, image_encode, denoise, decode, resize, restore
    peak_memory_bytes: dict[str, int | None] = field(default_factory=dict)
    memory_methods: dict[str, str] = field(default_factory=dict)
    compute_dtype: str = "float32"

    @property
    def first_step(self) -> float:
        return self.step_seconds[0]

    @property
    def steady_step(self) -> float:
        """The median of steps 2..k (step 1 may carry warm-up); step 1 if only one ran."""
        later = self.step_seconds[1:]
        return statistics.median(later) if later else self.step_seconds[0]

    def denoise_seconds(self, steps: int) -> float:
        k = len(self.step_seconds)
        return sum(self.step_seconds[: min(steps, k)]) + max(0, steps - k) * self.steady_step

    def fixed_seconds(self) -> float:
        return sum(v for k, v in self.seconds.items() if k != "denoise")

    def total_seconds(self, steps: int) -> float:
        """The module docstring's ``total(N)``."""
        return self.fixed_seconds() + self.denoise_seconds(steps)


def total_formula(measured: int) -> str:
    return (
        f"measured {measured} step(s); total(N) = text_encode + image_encode + "
        f"sum(steps 1..min(N, {measured})) + max(0, N - {measured}) x median(steps "
        f"2..{measured}) + decode + resize + restore"
    )


# ---------------------------------------------------------------------------- inputs


def synthetic_photo(width: int, height: int, seed: int = 0) -> np.ndarray:
    """An 8-bit RGB test photo (H, W, 3): a sky-to-ground gradient, soft hills, a few discs
    and fine grain, so that every stage sees structure at all scales (no download, no
    scikit-image). Content does not change any stage's work except the judge's registration,
    which is given a plain, aligned pair."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    w, h = max(8, width // 4), max(8, height // 4)
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    y, x = y / h, x / w
    sky = np.stack([0.45 + 0.3 * y, 0.6 + 0.2 * y, 0.9 - 0.3 * y], axis=-1)
    ground = np.stack([0.35 + 0.1 * x, 0.5 - 0.2 * y, 0.2 + 0.05 * x], axis=-1)
    horizon = 0.55 + 0.08 * np.sin(6.0 * x) + 0.04 * np.sin(17.0 * x + 1.0)
    img = np.where((y > horizon)[..., None], ground, sky)
    for _ in range(6):
        cx, cy, r = rng.uniform(0.1, 0.9), rng.uniform(0.2, 0.9), rng.uniform(0.03, 0.12)
        disc = (x - cx) ** 2 + ((y - cy) * h / w) ** 2 < r**2
        img[disc] = rng.uniform(0.1, 0.95, 3)
    small = Image.fromarray((np.clip(img, 0, 1) * 255).astype(np.uint8))
    big = np.asarray(small.resize((width, height), Image.Resampling.BICUBIC)).astype(np.int16)
    grain = rng.integers(-6, 7, size=(height, width, 1), dtype=np.int16)
    return np.clip(big + grain, 0, 255).astype(np.uint8)


def red_ball(photo: np.ndarray) -> np.ndarray:
    """``photo`` with a red disc painted in: a local, generative-style edit for the judge."""
    out = photo.copy()
    h, w = out.shape[:2]
    yy, xx = np.ogrid[0:h, 0:w]
    out[(yy - 0.6 * h) ** 2 + (xx - 0.6 * w) ** 2 < (0.12 * h) ** 2] = (230, 25, 20)
    return out


# ---------------------------------------------------------------------------- machine


def load_average() -> list[float] | None:
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except (OSError, AttributeError):
        return None


def versions() -> dict[str, str | None]:
    """Installed versions of the packages that matter (None: not installed), and Python's."""
    out: dict[str, str | None] = {"python": platform.python_version()}
    for name in VERSION_PACKAGES:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = None
    return out


def machine(backend: str) -> dict[str, Any]:
    """Where the run happened: OS, CPU, memory, MLX backend and device, BLAS, kernels."""
    from pbmlx.backend import blas_info
    from pbmlx.bench.peak import chip_name

    info: dict[str, Any] = {
        "platform": platform.platform(),
        "machine": platform.machine(),
        "processor": platform.processor() or platform.machine(),
        "chip": chip_name(),
        "cpus": os.cpu_count(),
        "memory_bytes": _memory_bytes(),
        "backend": backend,
        "mlx_device": str(mx.default_device()),
        "blas": blas_info().library,
    }
    try:
        from pbmlx.kernels import dispatch

        info["kernels"] = dispatch.choose()
    except Exception:  # a report must not fail on a machine-description detail
        info["kernels"] = None
    device_info = getattr(mx, "device_info", None) or getattr(mx.metal, "device_info", None)
    if backend != "cpu" and device_info is not None:
        try:
            info["device"] = {k: v for k, v in device_info().items() if isinstance(v, str | int)}
        except Exception:
            info["device"] = None
    return info


def _memory_bytes() -> int | None:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return None


# ---------------------------------------------------------------------------- the pbmlx edit


class _StageProbe:
    """Per-stage MLX peak memory of one ``Editor.edit``: wraps the pipeline's stage methods
    on this pipeline object only (instance attributes, removed by :meth:`close`). Each wrapper
    resets MLX's peak counter, runs the stage, evaluates its result and reads the peak; the
    denoising generator also records when its first step starts. After ``decode`` the NumPy
    peak of the full-resolution restore starts being traced (:class:`NumpyPeak`)."""

    STAGES: ClassVar[dict[str, str]] = {
        "encode_prompt": "text_encode",
        "encode_image": "image_encode",
        "decode": "decode",
    }

    def __init__(self, pipeline) -> None:
        self.pipeline = pipeline
        self.peaks: dict[str, int | None] = {}
        self.denoise_start: float | None = None
        self.numpy = NumpyPeak()
        self._numpy_on = False
        for method, stage in self.STAGES.items():
            setattr(pipeline, method, self._wrap(getattr(pipeline, method), stage))
        original = pipeline.denoise

        def denoise(*args, **kwargs):
            mx.reset_peak_memory()
            self.denoise_start = time.perf_counter()
            yield from original(*args, **kwargs)
            self.peaks["denoise"] = int(mx.get_peak_memory())  # after the caller's last eval

        pipeline.denoise = denoise

    def _wrap(self, fn, stage: str):
        def run(*args, **kwargs):
            mx.reset_peak_memory()
            out = fn(*args, **kwargs)
            mx.eval(out)
            self.peaks[stage] = int(mx.get_peak_memory())
            if stage == "decode":
                self.numpy.start()
                self._numpy_on = True
            return out

        return run

    def close(self) -> None:
        if self._numpy_on:
            self.peaks["restore"] = self.numpy.stop()
            self._numpy_on = False
        for method in (*self.STAGES, "denoise"):
            self.pipeline.__dict__.pop(method, None)


def time_editor_edit(
    editor,
    photo: np.ndarray,
    size: int,
    steps: int,
    *,
    variant: str,
    engine: str = "pbmlx",
    seed: int = 0,
    on_step: Callable[[int, int], None] | None = None,
) -> EditRun:
    """One ``editor.edit(photo, INSTRUCTION, steps=steps, size=size)``, every stage timed
    (the editor's own per-stage seconds; each step from the progress callback) with its peak
    memory (:class:`_StageProbe`)."""
    marks: list[float] = []

    def progress(done: int, total: int) -> None:
        marks.append(time.perf_counter())
        if on_step is not None:
            on_step(done, total)

    probe = _StageProbe(editor.pipeline)
    try:
        result = editor.edit(
            photo, INSTRUCTION, steps=steps, size=size, seed=seed, progress=progress
        )
    finally:
        probe.close()
    start = probe.denoise_start if probe.denoise_start is not None else marks[0]
    step_seconds = [b - a for a, b in zip([start, *marks[:-1]], marks, strict=True)]
    stage_s = {
        k: float(result.seconds[k])
        for k in ("text_encode", "image_encode", "denoise", "decode", "resize", "restore")
        if k in result.seconds
    }
    methods = {k: "mlx" for k in ("text_encode", "image_encode", "denoise", "decode")}
    methods["restore"] = "numpy (tracemalloc)"
    return EditRun(
        engine=engine,
        variant=variant,
        size=size,
        working=tuple(result.working_size),
        photo=(photo.shape[1], photo.shape[0]),
        measured_steps=steps,
        step_seconds=step_seconds,
        seconds=stage_s,
        peak_memory_bytes=dict(probe.peaks),
        memory_methods=methods,
        compute_dtype=result.compute_dtype,
    )


def edit_rows(run: EditRun, ef: flops_mod.EditFlops | None) -> list[StageRow]:
    """The stage rows of one edit run (FLOPs from ``ef``, None for Core ML)."""
    size = f"{run.working[0]}x{run.working[1]}"
    mem, how = run.peak_memory_bytes, run.memory_methods
    note = f"median of steps 2..{run.measured_steps}" if run.measured_steps > 1 else "one step"

    def row(name, seconds, fl, mem_key, n=""):
        return StageRow(
            "edit",
            run.engine,
            name,
            seconds,
            run.variant,
            size,
            fl,
            peak_memory_bytes=mem.get(mem_key),
            memory_method=how.get(mem_key),
            note=n,
        )

    rows = [
        row("text_encode", run.seconds.get("text_encode"), ef and ef.text_encode, "text_encode"),
        row(
            "image_encode", run.seconds.get("image_encode"), ef and ef.image_encode, "image_encode"
        ),
        row(
            "denoise_first_step",
            run.first_step,
            ef and ef.denoise_step,
            "denoise",
            "may carry warm-up",
        ),
        row("denoise_step", run.steady_step, ef and ef.denoise_step, "denoise", note),
        row("decode", run.seconds.get("decode"), ef and ef.decode, "decode"),
    ]
    if "restore" in run.seconds:
        restore = run.seconds["restore"] + run.seconds.get("resize", 0.0)
        rows.append(
            row(
                "restore",
                restore,
                None,
                "restore",
                f"resize to working size + restore to {run.photo[0]}x{run.photo[1]}",
            )
        )
    return rows


def edit_summary(
    run: EditRun, steps: tuple[int, ...], ef: flops_mod.EditFlops | None, load_s: float | None
) -> list[dict[str, Any]]:
    """One summary per step count: the edit's total (and with the load), its FLOPs."""
    out = []
    for n in steps:
        total = run.total_seconds(n)
        fl = ef.total(n) if ef is not None else None
        out.append(
            {
                "engine": run.engine,
                "variant": run.variant,
                "compute_dtype": run.compute_dtype,
                "size": run.size,
                "working_size": list(run.working),
                "photo": list(run.photo),
                "steps": n,
                "measured_steps": run.measured_steps,
                "extrapolated": n > run.measured_steps,
                "formula": total_formula(run.measured_steps),
                "seconds": total,
                "denoise_seconds": run.denoise_seconds(n),
                "first_edit_seconds": None if load_s is None else load_s + total,
                "flops": fl,
                "step_seconds": run.step_seconds,
                "stage_seconds": run.seconds,
            }
        )
    return out


# ---------------------------------------------------------------------------- adjust, judge


def alternating(a: Callable, b: Callable, repeats: int) -> tuple[float, float]:
    """Best times of ``a`` and ``b`` run in turn (ABAB...) after one warm-up each, so that
    both see the same load."""
    a(), b()
    ta = tb = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        a()
        t1 = time.perf_counter()
        b()
        t2 = time.perf_counter()
        ta, tb = min(ta, t1 - t0), min(tb, t2 - t1)
    return ta, tb


def adjust_rows(mp: int, repeats: int, seed: int) -> list[StageRow]:
    """The adjust engine (8-bit codes in and out, as ``pbmlx edit`` runs it) against the
    equivalent PIL ``ImageEnhance`` chain on the same photo."""
    from PIL import Image, ImageEnhance

    from pbmlx.adjust import apply_ops

    w, h = PHOTOS[mp]
    codes = synthetic_photo(w, h, seed)
    im = Image.fromarray(codes)
    pil = {
        "brightness": lambda: ImageEnhance.Brightness(im).enhance(1.2),
        "brightness+contrast+saturation": lambda: ImageEnhance.Color(
            ImageEnhance.Contrast(ImageEnhance.Brightness(im).enhance(1.2)).enhance(1.2)
        ).enhance(1.2),
    }
    rows = []
    for case, plan in ADJUST_CASES:

        def ours(plan=plan):
            return apply_ops(codes, list(plan), out_dtype=mx.uint8)

        t_ours, t_pil = alternating(ours, pil[case], repeats)
        label = f"{mp} MP"
        for engine, t, fn in (("pbmlx", t_ours, ours), ("PIL", t_pil, pil[case])):
            rows.append(
                StageRow(
                    "adjust",
                    engine,
                    case,
                    t,
                    size=label,
                    peak_memory_bytes=cold_peak_rss(fn),
                    memory_method="resident growth",
                    note=f"8-bit in and out, best of {repeats} alternating runs",
                )
            )
    return rows


def random_clip():
    """A CLIP with openai/clip-vit-base-patch32's shapes and random weights (timing only)."""
    from pbmlx.bench import configs
    from pbmlx.models.clip import CLIPConfig, CLIPModel

    model = CLIPModel(
        CLIPConfig.from_dict(configs.CLIP_B32), tokenizer=models.byte_level_tokenizer()
    )
    models.randomize(model, 7)
    mx.eval(model.parameters())
    return model


def judge_rows(with_clip: bool, clip_model: str | None, repeats: int, seed: int) -> list[StageRow]:
    """The judge on a 1 MP pair (a generative instruction: CLIP's criterion applies), as the
    median of ``repeats`` runs after a warm-up, without and (``with_clip``) with CLIP."""
    from pbmlx.judge import criteria
    from pbmlx.judge.core import Judge

    w, h = PHOTOS[1]
    src = synthetic_photo(w, h, seed)
    edited = red_ball(src)
    cases = [
        (
            "judge, no CLIP",
            Judge(providers=criteria.default_providers(criteria.ClipCompliance(None, "bench"))),
            "",
        )
    ]
    if with_clip:
        if clip_model:
            from pbmlx.models.clip import CLIPModel

            model, note = CLIPModel.from_pretrained(clip_model), clip_model
        else:
            model, note = random_clip(), "random weights, ViT-B/32 shapes"
        cases.append(("judge, CLIP", Judge(model=model), note))
    rows = []
    for name, judge, note in cases:

        def run(judge=judge):
            return judge(src, edited, JUDGE_INSTRUCTION)

        run()  # warm-up
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            run()
            times.append(time.perf_counter() - t0)
        rows.append(
            StageRow(
                "judge",
                "pbmlx",
                name,
                statistics.median(times),
                size="1 MP",
                peak_memory_bytes=cold_peak_rss(run),
                memory_method="resident growth",
                note=("; ".join(x for x in (note, f"median of {repeats}") if x)),
            )
        )
    return rows


# ---------------------------------------------------------------------------- the run


class Bench:
    """Runs a :class:`Plan` and collects every figure; see the module docstring."""

    def __init__(
        self, options: Options, *, progress: Callable[[str], Callable[[int, int], None]]
    ) -> None:
        from pbmlx.backend import backend

        self.options = options
        self.plan = Plan.from_options(options)
        self.backend = backend()
        self.progress = progress  # progress(label) -> on_step(done, total)
        self.rows: list[StageRow] = []
        self.edits: list[dict[str, Any]] = []
        self.comparisons: list[dict[str, Any]] = []
        self.notes: list[str] = []
        self.peak: Peak | None = None
        self.folder = None
        self._diffusers = None  # compare.DiffusersEditor, while the compared variant runs
        self._compared_runs: dict[tuple[int, int], EditRun] = {}  # working size -> pbmlx run
        self.stored_bits: int | None = None

    # -- checks, before any work --

    def check(self) -> None:
        """Refuse bad input before anything is timed (a PbmlxError naming it)."""
        o = self.options
        for s in self.plan.sizes:
            if s < 8 or s % 8:
                raise PbmlxError(f"Size {s} must be a multiple of 8 (at least 8).")
        if any(n < 1 for n in self.plan.steps):
            raise PbmlxError("Step counts must be at least 1.")
        for v in self.plan.variants:
            if v not in models.VARIANTS:
                raise PbmlxError(f"Variant {v!r} is not one of {', '.join(models.VARIANTS)}.")
        if o.model is not None and "edit" in self.plan.groups:
            self.folder = models.resolve_model(o.model)
            models.model_configs(self.folder)  # unreadable configs fail here, not later
            self.stored_bits = models.stored_quantization(self.folder)
        if "diffusers" in o.compare:
            from pbmlx.bench import compare

            compare.check_diffusers(self.folder)
        if o.coreml is not None:
            from pbmlx.bench import compare

            compare.check_coreml(o.coreml)

    def task_count(self) -> int:
        """How many times :meth:`run` will call ``progress`` (the progress bar's total)."""
        plan, n = self.plan, 1  # the peak
        if "edit" in plan.groups:
            compared = self.compare_variant()
            pairs = 1 if plan.quick else 2
            for v, why in self._variants():
                if why:
                    continue
                sizes = len(plan.sizes)
                n += 2 + sizes  # load, warm-up, one edit per size
                if v == compared and "diffusers" in self.options.compare:
                    n += 1 + sizes * (2 * pairs - 1)
            if self.options.coreml is not None:
                n += 3 * len(COREML_UNITS)
        if "adjust" in plan.groups:
            n += len(plan.adjust_mp)
        if "judge" in plan.groups:
            n += 1
        return n

    # -- the steps --

    def measure_peak(self) -> None:
        from pbmlx.bench.peak import device_peak

        self.peak = device_peak(self.backend)

    def _build(self, variant: str) -> models.Built:
        if self.folder is not None:
            return models.load_model_pipeline(self.folder, variant, self.backend)
        return models.random_pipeline(variant, self.backend, self.options.seed)

    def _variants(self) -> list[tuple[str, str | None]]:
        """(variant, why it is skipped or None) in plan order."""
        out = []
        for v in self.plan.variants:
            why = None
            if v == "float16" and self.backend == "cpu":
                why = (
                    "float16 is not run on the CPU backend: pbmlx computes half-precision models "
                    "in float32 there (upcast at load), so it would repeat the float32 rows"
                )
            elif self.stored_bits is not None and v != self.plan.variants[0]:
                why = (
                    f"the model is stored {self.stored_bits}-bit quantized: it runs once, as stored"
                )
            out.append((v, why))
        return out

    def _stage(self, row: StageRow) -> StageRow:
        assert self.peak is not None
        self.rows.append(row.finish(self.peak.flops_per_s))
        return row

    def run_edits(self, photo: np.ndarray) -> None:
        plan = self.plan
        for variant, why in self._variants():
            if why:
                self.notes.append(f"{variant}: {why}.")
                continue
            label = variant if self.stored_bits is None else f"{self.stored_bits}-bit (as stored)"
            on = self.progress(f"{label}: load")
            built = self._build(variant)
            on(1, 1)
            cfg = built.configs
            self._stage(
                StageRow(
                    "edit",
                    "pbmlx",
                    "load",
                    built.seconds,
                    label,
                    peak_memory_bytes=built.peak_memory_bytes,
                    memory_method="mlx",
                    note=(
                        f"read from {self.options.model}"
                        if self.folder is not None
                        else "built with random weights (no file read)"
                    )
                    + (
                        f"; {built.quantized_layers} layers quantized"
                        if built.quantized_layers
                        else ""
                    ),
                )
            )
            from pbmlx.editor import Editor

            editor = Editor(built.pipeline, model=self.options.model or models.RANDOM_MODEL)
            measured = plan.measured_steps
            on = self.progress(f"{label}: warm-up")
            editor.edit(photo[:256, :256], INSTRUCTION, steps=1, size=WARMUP_SIZE)
            on(1, 1)
            for size in plan.sizes:
                run = time_editor_edit(
                    editor,
                    photo,
                    size,
                    measured,
                    variant=label,
                    seed=self.options.seed,
                    on_step=self.progress(f"{label} {size}px"),
                )
                ef = flops_mod.edit_flops(
                    cfg["unet"], cfg["vae"], cfg["text_encoder"], run.working[0], run.working[1]
                )
                for r in edit_rows(run, ef):
                    self._stage(r)
                self.edits.extend(edit_summary(run, plan.steps, ef, built.seconds))
                if variant == self.compare_variant():
                    self._compared_runs[run.working] = run
                    if "diffusers" in self.options.compare:
                        self._compare_diffusers(editor, built, photo, size, run, ef)
            self._diffusers = None  # compared on one variant only: free it now
            del editor, built
            gc.collect()
            mx.clear_cache()

    def compare_variant(self) -> str:
        """The variant compared with diffusers: float16 on a GPU when planned, else float32
        (the first variant run if neither)."""
        planned = [v for v, why in self._variants() if why is None]
        if self.backend != "cpu" and "float16" in planned:
            return "float16"
        if "float32" in planned:
            return "float32"
        return planned[0] if planned else "float32"

    def _compare_diffusers(self, editor, built, photo, size, first: EditRun, ef) -> None:
        """diffusers' pipeline on the same working image, alternating with pbmlx: pbmlx's run
        just made, then diffusers, then (repeats - 1) more pairs; the best of each stage."""
        from pbmlx.bench import compare

        if self._diffusers is None:
            on = self.progress("diffusers: load")
            self._diffusers = compare.DiffusersEditor.build(
                self.folder, built.configs, dtype=first.compute_dtype, seed=self.options.seed
            )
            on(1, 1)
            d = self._diffusers
            self._stage(
                StageRow(
                    "edit",
                    d.engine,
                    "load",
                    d.load_seconds,
                    first.variant,
                    peak_memory_bytes=d.load_memory,
                    memory_method=d.memory_method,
                    note=d.load_note,
                )
            )
        d = self._diffusers
        pbmlx_runs, diff_runs = [first], []
        pairs = 1 if self.plan.quick else 2
        same = {"variant": first.variant, "seed": self.options.seed}
        for i in range(pairs):
            on = self.progress(f"diffusers {size}px")
            diff_runs.append(d.time_edit(photo, size, first.measured_steps, on_step=on, **same))
            if i + 1 < pairs:  # alternating: diffusers, pbmlx, diffusers, ...
                on = self.progress(f"{first.variant} {size}px (alternating)")
                run = time_editor_edit(
                    editor, photo, size, first.measured_steps, on_step=on, **same
                )
                pbmlx_runs.append(run)
        best_d = compare.best_run(diff_runs)
        best_p = compare.best_run(pbmlx_runs)
        for r in edit_rows(best_d, ef):
            self._stage(r)
        self.edits.extend(edit_summary(best_d, self.plan.steps, ef, d.load_seconds))
        self.comparisons.extend(compare.comparison_rows(best_p, best_d, self.plan.steps, pairs))

    def run_coreml(self, photo: np.ndarray) -> None:
        from pbmlx.bench import compare

        for unit in COREML_UNITS:
            on = self.progress(f"Core ML {unit}: load")
            editor, load_s = compare.load_coreml(self.options.coreml, unit)
            on(1, 1)
            engine = f"coreml {unit}"
            self._stage(StageRow("edit", engine, "load", load_s, "float16 (Core ML)"))
            size = max(editor.fixed_size)
            on = self.progress(f"Core ML {unit}: warm-up")
            editor.edit(photo[:256, :256], INSTRUCTION, steps=1)  # first predictions compile
            on(1, 1)
            run = time_editor_edit(
                editor,
                photo,
                size,
                self.plan.measured_steps,
                variant="float16 (Core ML)",
                engine=engine,
                seed=self.options.seed,
                on_step=self.progress(f"Core ML {unit}"),
            )
            run.memory_methods = {}  # Core ML's memory is outside MLX's allocator
            run.peak_memory_bytes = {}
            for r in edit_rows(run, None):
                self._stage(r)
            self.edits.extend(edit_summary(run, self.plan.steps, None, load_s))
            ours = self._compared_runs.get(run.working)
            if ours is not None:  # pbmlx's run at the bundle's working size, earlier
                rows = compare.comparison_rows(ours, run, self.plan.steps, 1)
                for r in rows:
                    r["note"] = "one run each, not alternating (pbmlx's ran earlier)"
                self.comparisons.extend(rows)
            del editor
            gc.collect()

    def run_adjust(self) -> None:
        for mp in self.plan.adjust_mp:
            on = self.progress(f"adjust vs PIL, {mp} MP")
            for r in adjust_rows(mp, self.plan.repeats, self.options.seed):
                self._stage(r)
            on(1, 1)

    def run_judge(self) -> None:
        on = self.progress("judge, 1 MP")
        for r in judge_rows(
            self.plan.judge_clip, self.options.judge_model, self.plan.repeats, self.options.seed
        ):
            self._stage(r)
        on(1, 1)

    def run(self) -> dict[str, Any]:
        """Everything in the plan; returns the JSON document (see :func:`document`)."""
        t0 = time.perf_counter()
        load_before = load_average()
        on = self.progress("peak FLOP/s")
        self.measure_peak()
        on(1, 1)
        if "edit" in self.plan.groups:
            w, h = PHOTOS[self.plan.edit_photo_mp]
            photo = synthetic_photo(w, h, self.options.seed)
            self.run_edits(photo)
            if self.options.coreml is not None:
                self.run_coreml(photo)
            del photo
        if "adjust" in self.plan.groups:
            self.run_adjust()
        if "judge" in self.plan.groups:
            self.run_judge()
        if self.plan.quick and "edit" in self.plan.groups:
            self.notes.append(
                f"--quick: each edit measured {self.plan.measured_steps} denoising steps; totals "
                f"for {', '.join(map(str, self.plan.steps))} steps are extrapolated by "
                f"{total_formula(self.plan.measured_steps)}."
            )
        return self.document(load_before, load_average(), time.perf_counter() - t0)

    def document(
        self, load_before: list[float] | None, load_after: list[float] | None, wall: float
    ) -> dict[str, Any]:
        """The ``--json`` document: every figure, the machine, the versions, the plan."""
        assert self.peak is not None
        return {
            "schema": SCHEMA,
            "quick": self.plan.quick,
            "plan": asdict(self.plan),
            "model": self.options.model or models.RANDOM_MODEL,
            "machine": machine(self.backend),
            "versions": versions(),
            "load_average": {"before": load_before, "after": load_after},
            "peak": self.peak.to_dict(),
            "stages": [asdict(r) for r in self.rows],
            "edits": self.edits,
            "comparisons": self.comparisons,
            "notes": self.notes,
            "wall_seconds": wall,
        }
