"""``pbmlx train`` end to end on a tiny checkpoint and a tiny dataset in the Pico-Banana schema.

The dataset: real photos (skimage) as sources, edits made with PIL (a colour shift per record),
written as ``sft.jsonl`` / ``preference.jsonl`` with the dataset's fields and relative image
paths. The model: the tiny random InstructPix2Pix of ``tiny_ip2p.py`` in diffusers layout (the
trainer converts it to float32 first, as it does a hub checkpoint).

Proven here:
- the loss falls when a tiny model fits four examples, and the model's edits move toward the
  targets: the final latents of a full sampling run get closer to the target's latents;
- the output folder loads in ``pbmlx edit --model`` and carries its training record;
- resuming after a kill equals the uninterrupted run (bit for bit);
- LoRA: the saved (fused) model equals the model with the LoRA layers applied (float32
  rounding), only the LoRA factors change during training, and ``--save-adapter`` keeps them;
- two processes (``mlx.launch``, ring backend on localhost) equal one process with the same
  global batch, within 1e-5 of the weights' scale (summation order of the all-reduce);
- Diffusion-DPO on preference records makes the model prefer the passed edits over the failed
  attempts more than the starting model does (its per-example errors, on fixed draws);
- bad input is one ``pbmlx: error:`` line and exit code 2.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import pbmlx  # noqa: F401  (first, so MLX binds OpenBLAS)

import mlx.core as mx  # isort: skip
from mlx.utils import tree_flatten
from PIL import Image, ImageOps
from skimage import data

pytest.importorskip("mlx_lm")
pytest.importorskip("diffusers")
from tiny_ip2p import build_tiny_ip2p

from pbmlx.editor import load_pipeline
from pbmlx.train import loop
from pbmlx.train.loop import TrainConfig, train

RES = 32  # the tiny VAE's latents are 8 x 8
PHOTOS = ["astronaut", "coffee", "chelsea", "rocket"]
EDITS = {
    "make it blue": lambda im: Image.merge("RGB", (im.getchannel(2), im.getchannel(1), im.getchannel(0))),
    "turn it into a negative": ImageOps.invert,
    "make it black and white": lambda im: ImageOps.grayscale(im).convert("RGB"),
    "make it look posterized": lambda im: ImageOps.posterize(im, 2),
}  # fmt: skip


def write_dataset(root: Path) -> Path:
    (root / "sources").mkdir(parents=True)
    (root / "images" / "positive-edit").mkdir(parents=True)
    (root / "images" / "negative-edit").mkdir(parents=True)
    sft, pref = [], []
    for i, (name, (instr, edit)) in enumerate(zip(PHOTOS, EDITS.items(), strict=True), 1):
        im = Image.fromarray(getattr(data, name)()).convert("RGB").resize((48, 40))
        im.save(root / "sources" / f"{name}.jpg", quality=95)
        edit(im).save(root / "images" / "positive-edit" / f"{i}.png")
        im.save(root / "images" / "negative-edit" / f"{i}.png")  # a failed attempt: no change
        rec = {
            "open_image_input_url": f"https://farm.staticflickr.com/{i}/{name}_o.jpg",
            "text": f"{instr}, keeping the composition",
            "summarized_text": instr,
            "edit_type": "Change overall color tone (warm/cool)",
            "output_image": f"images/positive-edit/{i}.png",
            "local_input_image": f"sources/{name}.jpg",
        }
        sft.append(rec)
        pref.append({**rec, "rejected_images": [f"images/negative-edit/{i}.png"]})
    (root / "sft.jsonl").write_text("".join(json.dumps(r) + "\n" for r in sft))
    (root / "preference.jsonl").write_text("".join(json.dumps(r) + "\n" for r in pref))
    return root


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    return write_dataset(tmp_path_factory.mktemp("pico"))


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> Path:
    """The tiny checkpoint, converted once (float32) so every test starts from the same folder."""
    from pbmlx.convert.to_mlx import convert

    root = tmp_path_factory.mktemp("base")
    return convert(build_tiny_ip2p(root / "diffusers", seed=0), root / "mlx", dtype="float32")


def config(dataset: Path, base: Path, out: Path, **kw) -> TrainConfig:
    settings = dict(
        resolution=RES, batch_size=2, steps=6, lr=1e-3, warmup=1, dropout=0.0, seed=1,
        split=None, progress=False, cache=dataset.parent / f"{dataset.name}.cache",
    )  # fmt: skip
    return TrainConfig(data=dataset, model=str(base), out=out, **{**settings, **kw})


def unet_weights(folder: Path) -> dict[str, np.ndarray]:
    a = mx.load(str(folder / "unet" / "model.safetensors"))
    return {k: np.array(v) for k, v in a.items()}


def target_distance(model: Path, dataset: Path) -> float:
    """Mean squared distance between the model's sampled latents and the targets' latents,
    over the training examples (fixed seed: the same noise for every model)."""
    from pbmlx.train.data import examples, pixels

    pipe = load_pipeline(model, dtype=mx.float32)
    found, _ = examples(dataset, split=None)
    total = 0.0
    for ex in found:
        src, out = pixels(ex.source, ex.output, RES)
        target = pipe.vae.encode(mx.array(out[None])).mean * pipe.vae.config.scaling_factor
        result = pipe.generate((src + 1) / 2, ex.instruction, steps=8, seed=0)
        total += float(mx.mean(mx.square(result.latents - target)))
    return total / len(found)


def test_loss_falls_and_edits_move_toward_targets(dataset, base, tmp_path) -> None:
    out = tmp_path / "trained"
    result = train(config(dataset, base, out, steps=30, lr=3e-3, schedule="constant"))
    assert result.examples == 4 and result.steps == 30
    # The noise-prediction loss at random timesteps is noisy and has a floor above 0: mean over
    # the first and last 3 steps, measured 1.50 -> 1.08.
    assert result.loss_last < 0.85 * result.loss_first, (result.loss_first, result.loss_last)
    # measured: 613 -> 285
    before, after = target_distance(base, dataset), target_distance(out, dataset)
    assert after < 0.8 * before, (before, after)
    manifest = json.loads((out / "pbmlx.json").read_text())
    assert manifest["training"]["settings"]["steps"] == 30
    from pbmlx.models.checkpoint import verify_converted

    verify_converted(out)  # every file's hash matches the new manifest


def test_output_edits_with_pbmlx_edit(dataset, base, tmp_path) -> None:
    out = tmp_path / "m"
    train(config(dataset, base, out, steps=2))
    photo = dataset / "sources" / "coffee.jpg"
    r = subprocess.run(
        [sys.executable, "-m", "pbmlx", "edit", str(photo), "add a hat", "--model", str(out),
         "--steps", "2", "--size", "32", "-o", str(tmp_path / "e.png")],
        capture_output=True, text=True, cwd=tmp_path, stdin=subprocess.DEVNULL, timeout=600,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert Image.open(tmp_path / "e.png").size == Image.open(photo).size
    # pbmlx eval runs the trained model over the dataset and writes its report.
    r = subprocess.run(
        [sys.executable, "-m", "pbmlx", "eval", str(dataset), "--model", str(out), "--out",
         str(tmp_path / "eval"), "--split", "all", "--steps", "2", "--size", "32", "--json"],
        capture_output=True, text=True, cwd=tmp_path, stdin=subprocess.DEVNULL, timeout=900,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr[-3000:]
    summary = json.loads((tmp_path / "eval" / "summary.json").read_text())
    assert summary["counts"] and (tmp_path / "eval" / "report.html").is_file()
    # pbmlx export-coreml reads the folder back as PyTorch modules (the export's first stage).
    pytest.importorskip("coremltools")
    from pbmlx.convert.coreml.source import load_source

    assert load_source(out) is not None


def test_gradient_checkpointing_changes_nothing(dataset, base, tmp_path) -> None:
    """Recomputing the ResNet and transformer activations in the backward pass gives the same
    gradients (float32 rounding: the recomputation repeats the same operations), and a run
    with --grad-checkpoint trains."""
    import mlx.nn as nn

    from pbmlx.train import objective

    alphas, n_train, _ = objective.schedule_table(load_pipeline(base).scheduler_config)
    key = mx.random.key(0)
    batch = objective.Batch(
        mx.random.normal((2, 8, 8, 4), key=key),
        mx.random.normal((2, 8, 8, 4), key=mx.random.split(key)[0]),
        mx.random.normal((2, 7, 32), key=mx.random.split(key)[1]),
    )
    draws = objective.draw(key, (2, 8, 8, 4), n_train)
    null = mx.zeros((1, 7, 32))

    def grads(checkpointed: bool) -> dict:
        unet = load_pipeline(base, dtype=mx.float32).unet
        if checkpointed:
            assert loop.gradient_checkpointing(unet) > 0
        f = nn.value_and_grad(unet, lambda b, d: objective.ip2p_loss(unet, b, d, null, alphas))
        return dict(tree_flatten(f(batch, draws)[1]))

    plain, ckpt = grads(False), grads(True)
    for k, g in plain.items():
        scale = float(mx.abs(g).max()) + 1e-12
        assert float(mx.abs(g - ckpt[k]).max()) <= 1e-5 * scale, k
    result = train(config(dataset, base, tmp_path / "c", steps=2, grad_checkpoint=True))
    assert result.steps == 2


def test_resume_equals_uninterrupted(dataset, base, tmp_path, monkeypatch) -> None:
    full = train(config(dataset, base, tmp_path / "full", steps=4, grad_accum=2))
    real_save = loop.save_checkpoint

    def save_then_die(work, step, *a, **kw):
        path = real_save(work, step, *a, **kw)
        if step == 2:
            raise KeyboardInterrupt  # killed right after the step-2 checkpoint
        return path

    monkeypatch.setattr(loop, "save_checkpoint", save_then_die)
    cfg = config(dataset, base, tmp_path / "part", steps=4, grad_accum=2, checkpoint_every=2)
    with pytest.raises(KeyboardInterrupt):
        train(cfg)
    assert not (tmp_path / "part").exists()  # nothing half-written
    monkeypatch.setattr(loop, "save_checkpoint", real_save)
    resumed = train(config(dataset, base, tmp_path / "part", steps=4, grad_accum=2,
                           checkpoint_every=2, resume=True))  # fmt: skip
    assert resumed.resumed_from == 2
    a, b = unet_weights(tmp_path / "full"), unet_weights(tmp_path / "part")
    assert all(np.array_equal(a[k], b[k]) for k in a)
    assert resumed.loss_last == full.loss_last


def test_lora_fused_equals_applied_and_only_lora_trains(dataset, base, tmp_path) -> None:
    from mlx_lm.tuner.lora import LoRALinear

    out = tmp_path / "lora"
    cfg = config(dataset, base, out, steps=3, lora_rank=4, lora_conv=True, save_adapter=True)
    train(cfg)
    # Rebuild the trained model with LoRA applied: base UNet + the saved adapter.
    pipe = load_pipeline(base, dtype=mx.float32)
    n = loop.apply_lora(pipe.unet, 4, 1.0, True)
    assert n > 0
    adapter = mx.load(str(out / "adapter" / "adapters.safetensors"))
    assert adapter and all(("lora_a" in k or "lora_b" in k) for k in adapter)
    pipe.unet.update(__import__("mlx.utils").utils.tree_unflatten(list(adapter.items())))
    assert any(isinstance(m, LoRALinear) for _, m in pipe.unet.named_modules())
    fused = load_pipeline(out, dtype=mx.float32).unet
    rng = np.random.default_rng(0)
    x = mx.array(rng.standard_normal((2, 8, 8, 8)).astype(np.float32))
    text = mx.array(rng.standard_normal((2, 7, 32)).astype(np.float32))
    t = mx.array([10, 700])
    applied, merged = pipe.unet(x, t, text), fused(x, t, text)
    scale = float(mx.abs(applied).max())
    assert float(mx.abs(applied - merged).max()) <= 1e-5 * scale
    # Only the LoRA factors moved: every non-adapted tensor equals the base's.
    before, after = unet_weights(base), unet_weights(out)
    adapted = {k.rsplit(".", 1)[0] for k in adapter}
    same = [k for k in before if not any(k.startswith(a) for a in adapted)]
    assert same and all(np.array_equal(before[k], after[k]) for k in same)
    assert any(not np.array_equal(before[k], after[k]) for k in before if k not in same)


def test_two_processes_equal_one(dataset, base, tmp_path) -> None:
    launch = shutil.which("mlx.launch", path=str(Path(sys.executable).parent))
    if launch is None:
        pytest.skip("mlx.launch is not installed")
    one = tmp_path / "one"
    train(config(dataset, base, one, steps=3, batch_size=2))
    script = tmp_path / "run.py"
    script.write_text(
        "import sys\nfrom pathlib import Path\nimport pbmlx\n"
        "from pbmlx.train.loop import TrainConfig, train\n"
        f"cfg = TrainConfig(data=Path({str(dataset)!r}), model={str(base)!r}, "
        f"out=Path({str(tmp_path / 'two')!r}), resolution={RES}, batch_size=1, steps=3, "
        "lr=1e-3, warmup=1, dropout=0.0, seed=1, split=None, progress=False)\n"
        "train(cfg)\n"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    r = subprocess.run(
        [launch, "-n", "2", "--backend", "ring", "--starting-port", str(40000 + os.getpid() % 20000),
         "--", sys.executable, str(script)],
        capture_output=True, text=True, env=env, timeout=900, cwd=tmp_path,
    )  # fmt: skip
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    a, b = unet_weights(one), unet_weights(tmp_path / "two")
    scale = max(float(np.abs(v).max()) for v in a.values())
    worst = max(float(np.abs(a[k] - b[k]).max()) for k in a)
    assert worst <= 1e-5 * scale, worst
    assert any(not np.array_equal(a[k], unet_weights(base)[k]) for k in a)  # it did train


def preference_margin(model: Path, base: Path, dataset: Path) -> float:
    """Mean over examples and 8 fixed draws of ``(e_model(w) - e_base(w)) - (e_model(l) -
    e_base(l))``: negative when the model prefers the passed edit more than the base does
    (what Diffusion-DPO optimises; its per-step loss is too noisy to compare)."""
    from pbmlx.train import objective
    from pbmlx.train.data import Encoder, examples

    trained = load_pipeline(model, dtype=mx.float32)
    ref = load_pipeline(base, dtype=mx.float32)
    alphas, n_train, pred = objective.schedule_table(ref.scheduler_config)
    enc = Encoder(ref, RES, "margin")
    found, _ = examples(dataset, preference=True, split=None)
    total = []
    for i, ex in enumerate(found):
        w, lose = enc.encode(ex), enc.encode(ex, ex.rejected[0])
        s = ref.vae.config.scaling_factor
        batch = objective.Batch((w.target_mean * s)[None], w.image_latents[None], w.text[None])
        loser = (lose.target_mean * s)[None]
        for j in range(8):
            d = objective.draw(mx.random.key(100 * i + j), batch.target_latents.shape, n_train)
            ew, el = objective.dpo_reference_errors(trained.unet, batch, loser, d, alphas, pred)
            rw, rl = objective.dpo_reference_errors(ref.unet, batch, loser, d, alphas, pred)
            total.append(float(((ew - rw) - (el - rl))[0]))
    return float(np.mean(total))


def test_dpo_prefers_the_passed_edits(dataset, base, tmp_path) -> None:
    out = tmp_path / "dpo"
    # DPO's per-step gradient is noisy (random timesteps; a small preference signal): a small
    # learning rate and 8 pairs per update (measured margin -0.0066; with lr 1e-3 and 2 pairs
    # per update the weights random-walk and the margin ends near +0.003).
    result = train(
        config(dataset, base, out, steps=20, dpo=True, dpo_beta=500.0, lr=3e-5, batch_size=4,
               grad_accum=2, schedule="constant")
    )  # fmt: skip
    assert result.examples == 4
    assert abs(result.loss_first - float(np.log(2.0))) < 0.05  # starts at the reference
    assert preference_margin(out, base, dataset) < 0


def test_lora_dpo_uses_the_base_as_reference(dataset, base, tmp_path) -> None:
    """With LoRA the frozen reference is the UNet with its LoRA layers off: at the first step
    (LoRA B = 0, so model = reference) the loss is exactly log 2."""
    result = train(config(dataset, base, tmp_path / "ld", steps=1, warmup=0, dpo=True, lora_rank=2))
    assert abs(result.loss_first - float(np.log(2.0))) < 1e-6


def test_cli_json_and_bad_input(dataset, base, tmp_path) -> None:
    def run(*args):
        return subprocess.run(
            [sys.executable, "-m", "pbmlx", "train", *map(str, args)],
            capture_output=True, text=True, cwd=tmp_path, stdin=subprocess.DEVNULL, timeout=600,
        )  # fmt: skip

    r = run(dataset, "--model", base, "--out", tmp_path / "c", "--steps", "2", "--resolution",
            RES, "--batch-size", "2", "--json")  # fmt: skip
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout.strip().splitlines()[-1])
    for key in ("steps", "loss_first", "loss_last", "seconds", "output"):
        assert key in doc
    assert doc["steps"] == 2 and doc["output"] == str(tmp_path / "c")
    for args, words in [
        ((tmp_path / "nope", "--model", base, "--out", tmp_path / "x"), "does not exist"),
        ((dataset, "--model", base, "--out", tmp_path / "c"), "already exists"),
        ((dataset, "--model", base, "--out", tmp_path / "y", "--steps", "0"), "--steps"),
        ((dataset, "--model", base, "--out", tmp_path / "z", "--resolution", "30"), "multiple"),
    ]:
        r = run(*args)
        assert r.returncode == 2, (args, r.stderr)
        lines = r.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("pbmlx: error:") and words in lines[0]


def test_trainable_parameter_count_full_vs_lora(base) -> None:
    pipe = load_pipeline(base, dtype=mx.float32)
    full = sum(v.size for _, v in tree_flatten(pipe.unet.trainable_parameters()))
    loop.apply_lora(pipe.unet, 4, 1.0, False)
    lora = sum(v.size for _, v in tree_flatten(pipe.unet.trainable_parameters()))
    assert 0 < lora < full / 5
