"""`pbmlx edit --model` end to end: a real subprocess, a real photo, a tiny random checkpoint in
the on-disk layout of a real one (``tiny_ip2p.py``), run at a tiny working size to stay fast.

Every process gets ``PBMLX_CONFIG`` pointing at a file that does not exist and no
``PBMLX_MODEL`` unless a test sets them, so a developer's own config cannot leak in; hub tests
use an empty ``HF_HOME`` and either offline mode or an endpoint that refuses connections (this
machine has no network).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from badfiles import snapshot
from PIL import Image

pytest.importorskip("diffusers")
pytest.importorskip("transformers")
from tiny_ip2p import build_tiny_ip2p

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "tests" / "data" / "coffee.jpg"
FAST = ("--steps", "2", "--size", "64")  # tiny model, 64 px working size: seconds per run
STAGES = ("text_encode", "image_encode", "denoise", "decode")


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory) -> Path:
    return build_tiny_ip2p(tmp_path_factory.mktemp("tiny") / "ip2p", seed=0)


@pytest.fixture
def src(tmp_path) -> Path:
    path = tmp_path / "photo.jpg"
    path.write_bytes(SAMPLE.read_bytes())
    return path


def pbmlx(*args, env: dict[str, str] | None = None, cwd: Path | None = None):
    base = {k: v for k, v in os.environ.items() if not k.startswith(("PBMLX_", "HF_"))}
    base["PBMLX_CONFIG"] = str(REPO / "tests" / "no-such-config.json")
    return subprocess.run(
        [sys.executable, "-m", "pbmlx", *map(str, args)],
        capture_output=True,
        text=True,
        cwd=cwd,
        stdin=subprocess.DEVNULL,
        env={**base, **(env or {})},
        timeout=300,
    )


def assert_clean_error(r: subprocess.CompletedProcess) -> str:
    assert r.returncode == 2, (r.returncode, r.stderr)
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("pbmlx: error: "), r.stderr
    assert "Traceback" not in r.stderr
    return lines[0]


def test_edit_with_a_model_writes_an_image_of_the_input_size(ckpt, src):
    before = snapshot(src.parent)
    r = pbmlx("edit", src, "make it winter", "--model", ckpt, *FAST)
    assert r.returncode == 0, r.stderr
    out = src.parent / "photo.edited.jpg"
    assert r.stdout.strip() == str(out)
    assert Image.open(out).size == Image.open(src).size
    assert snapshot(src.parent)[src.name] == before[src.name]  # input untouched
    # The progress bar (tqdm, on stderr): two steps, completed.
    assert "denoising" in r.stderr and "2/2" in r.stderr
    assert "'make it winter': diffusion" in r.stderr


def test_json_has_stage_timings_peak_memory_and_provenance(ckpt, src, tmp_path):
    out = tmp_path / "out.png"
    r = pbmlx(
        "edit",
        src,
        "make it winter",
        "brighten this picture",
        "--model",
        ckpt,
        *FAST,
        "--seed",
        "3",
        "--scheduler",
        "euler",
        "--json",
        "-o",
        out,
    )
    assert r.returncode == 0, r.stderr
    report = json.loads(r.stdout)  # stdout is the JSON and nothing else
    assert report["output"] == str(out) and out.exists()
    diffusion, adjust = report["turns"]
    assert diffusion["engine"] == "diffusion" and adjust["engine"] == "adjust"
    for stage in STAGES:
        assert diffusion["stages"][stage] >= 0
    assert diffusion["peak_memory_bytes"] > 0 and report["peak_memory_bytes"] > 0
    assert diffusion["model"] == str(ckpt) and diffusion["steps"] == 2
    assert diffusion["seed"] == 3 and diffusion["scheduler"] == "euler"
    assert diffusion["size"] == list(Image.open(src).size)
    assert max(diffusion["working_size"]) == 64
    assert "2/2" in r.stderr  # the bar still shows, on stderr


def test_same_seed_same_image(ckpt, src, tmp_path):
    outs = []
    for name, seed in (("a.png", 5), ("b.png", 5)):
        r = pbmlx(
            "edit",
            src,
            "make it winter",
            "--model",
            ckpt,
            *FAST,
            "--seed",
            seed,
            "-o",
            tmp_path / name,
        )
        assert r.returncode == 0, r.stderr
        outs.append((tmp_path / name).read_bytes())
    assert outs[0] == outs[1]


def test_engine_diffusion_forces_the_editor_with_low_memory(ckpt, src, tmp_path):
    out = tmp_path / "out.png"
    r = pbmlx(
        "edit", src, "brighten this picture", "--engine", "diffusion", "--model", ckpt, *FAST,
        "--low-memory", "--json", "-o", out,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    (turn,) = json.loads(r.stdout)["turns"]
    assert turn["route"] == "adjust" and turn["engine"] == "diffusion"
    assert Image.open(out).size == Image.open(src).size


def test_pbmlx_model_and_the_config_file_are_honoured(ckpt, src, tmp_path):
    r = pbmlx(
        "edit",
        src,
        "make it winter",
        *FAST,
        "-o",
        tmp_path / "env.png",
        env={"PBMLX_MODEL": str(ckpt)},
    )
    assert r.returncode == 0, r.stderr
    config = tmp_path / "config.json"
    config.write_text(json.dumps({"model": str(ckpt)}))
    r = pbmlx(
        "edit",
        src,
        "make it winter",
        *FAST,
        "-o",
        tmp_path / "cfg.png",
        env={"PBMLX_CONFIG": str(config)},
    )
    assert r.returncode == 0, r.stderr
    # --model wins over PBMLX_MODEL, which wins over the config file.
    r = pbmlx(
        "edit", src, "make it winter", *FAST, "-o", tmp_path / "x.png",
        env={"PBMLX_MODEL": str(tmp_path / "nowhere"), "PBMLX_CONFIG": str(config)},
    )  # fmt: skip
    line = assert_clean_error(r)
    assert "nowhere" in line and "PBMLX_MODEL" in line
    r = pbmlx(
        "edit", src, "make it winter", *FAST, "--model", ckpt, "-o", tmp_path / "y.png",
        env={"PBMLX_MODEL": str(tmp_path / "nowhere")},
    )  # fmt: skip
    assert r.returncode == 0, r.stderr


def test_a_broken_config_file_is_named(src, tmp_path):
    config = tmp_path / "config.json"
    config.write_text("{not json")
    line = assert_clean_error(
        pbmlx("edit", src, "make it winter", env={"PBMLX_CONFIG": str(config)})
    )
    assert str(config) in line


def test_no_model_anywhere_says_how_to_get_one(src):
    before = snapshot(src.parent)
    line = assert_clean_error(pbmlx("edit", src, "add a red scarf to the dog"))
    assert "--model" in line and "PBMLX_MODEL" in line and "pbmlx convert" in line
    assert snapshot(src.parent) == before


@pytest.mark.parametrize(
    "hub_env",
    [{"HF_HUB_OFFLINE": "1"}, {"HF_ENDPOINT": "http://127.0.0.1:9"}],
    ids=["offline", "unreachable-endpoint"],
)
def test_an_unreachable_hub_id_is_one_error_naming_it(src, tmp_path, hub_env):
    before = snapshot(src.parent)
    env = {"HF_HOME": str(tmp_path / "hf-home"), **hub_env}
    r = pbmlx("edit", src, "make it winter", "--model", "nobody/no-such-ip2p", env=env)
    line = assert_clean_error(r)
    assert "'nobody/no-such-ip2p'" in line and "Hugging Face Hub" in line
    assert snapshot(src.parent) == before


def _hub_cache(home: Path, repo_id: str, model: Path) -> None:
    """Put ``model`` into the Hugging Face cache under ``home`` as ``snapshot_download`` leaves
    a downloaded repository: ``hub/models--{owner}--{name}/refs/main`` holding the commit, and
    the files under ``snapshots/{commit}/``."""
    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = home / "hub" / ("models--" + repo_id.replace("/", "--"))
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    shutil.copytree(model, repo / "snapshots" / commit)


def test_a_hub_id_in_the_cache_loads_offline(ckpt, src, tmp_path):
    # The hub-id path end to end, without a network: snapshot_download finds the snapshot.
    home = tmp_path / "hf-home"
    _hub_cache(home, "someone/tiny-ip2p", ckpt)
    out = tmp_path / "out.png"
    env = {"HF_HOME": str(home), "HF_HUB_OFFLINE": "1"}
    r = pbmlx(
        "edit", src, "make it winter", "--model", "someone/tiny-ip2p", *FAST, "-o", out, env=env
    )
    assert r.returncode == 0, r.stderr
    assert Image.open(out).size == Image.open(src).size


def test_a_hub_model_with_only_pickle_weights_is_refused(ckpt, src, tmp_path):
    home = tmp_path / "hf-home"
    pickled = shutil.copytree(ckpt, tmp_path / "pickled")
    (pickled / "unet" / "diffusion_pytorch_model.safetensors").unlink()  # as if only .bin existed
    _hub_cache(home, "someone/pickled-ip2p", pickled)
    env = {"HF_HOME": str(home), "HF_HUB_OFFLINE": "1"}
    line = assert_clean_error(
        pbmlx("edit", src, "make it winter", "--model", "someone/pickled-ip2p", env=env)
    )
    assert "'someone/pickled-ip2p'" in line and "unet" in line and "pickle" in line


def _truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


BROKEN = {
    # what to do to a copy of the checkpoint -> the path the error must name
    "missing unet weights": (
        lambda m: (m / "unet" / "diffusion_pytorch_model.safetensors").unlink(),
        "unet",
    ),
    "truncated vae weights": (
        lambda m: _truncate(m / "vae" / "diffusion_pytorch_model.safetensors"),
        "vae/diffusion_pytorch_model.safetensors",
    ),
    "pickle-only text encoder": (
        lambda m: (m / "text_encoder" / "model.safetensors").rename(
            m / "text_encoder" / "pytorch_model.bin"
        ),
        "text_encoder",
    ),
    "missing tokenizer": (lambda m: shutil.rmtree(m / "tokenizer"), "tokenizer"),
}


@pytest.mark.parametrize("case", BROKEN)
def test_broken_models_give_one_error_naming_the_file(ckpt, src, tmp_path, case):
    model = shutil.copytree(ckpt, tmp_path / "model")
    damage, named = BROKEN[case]
    damage(model)
    before = snapshot(src.parent)
    line = assert_clean_error(pbmlx("edit", src, "make it winter", "--model", model, *FAST))
    assert str(model / named) in line, line
    assert snapshot(src.parent) == before


def test_bad_editor_settings_are_refused_before_reading_the_photo(ckpt, tmp_path):
    missing_photo = tmp_path / "not-there.jpg"
    for args, message in (
        (("--steps", "0"), "Number of steps"),
        (("--size", "2"), "Working size"),
        (("--guidance", "nan"), "Guidance"),
    ):
        line = assert_clean_error(
            pbmlx("edit", missing_photo, "make it winter", "--model", ckpt, *args)
        )
        assert message in line  # the setting, not the missing photo, is what is reported


def test_convert_then_edit_with_the_converted_folder(ckpt, src, tmp_path):
    # The "done when": `pbmlx convert <diffusers folder> out/` then `pbmlx edit ...
    # --model out/` writes an image, with a progress bar (8-bit quantized here).
    converted = tmp_path / "converted"
    r = pbmlx("convert", ckpt, converted, "--quantize", "8")
    assert r.returncode == 0, r.stderr
    out = tmp_path / "out.png"
    r = pbmlx("edit", src, "make it winter", "--model", converted, *FAST, "-o", out, "--json")
    assert r.returncode == 0, r.stderr
    assert Image.open(out).size == Image.open(src).size
    assert json.loads(r.stdout)["turns"][0]["model"] == str(converted)
    assert "2/2" in r.stderr
