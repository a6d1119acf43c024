"""The README's code blocks, run as a user would run them.

- Python blocks run in a fresh interpreter, in a folder holding ``photo.jpg`` (the sample photo)
  and ``./ip2p-mlx`` (a tiny converted editor standing in for the real one).
- Blocks of ``$ command`` lines run each command there (``tests/data`` copied beside it) and
  compare what it prints with the lines the README shows under it, exactly: the README cannot
  show output pbmlx no longer prints.
- Other blocks run every line that starts with ``pbmlx `` (the same folder), unless the line
  before the block is ``<!-- not run in CI: REASON -->`` (the Hub, a Mac, hours of compute);
  every such block must give its reason.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"
NOT_RUN = re.compile(r"<!-- not run in CI: (.+?) -->")


def blocks() -> list[tuple[int, str, str, str | None]]:
    """(line, language, text, not-run reason) of every fenced block."""
    lines = README.read_text(encoding="utf-8").splitlines()
    out, i = [], 0
    while i < len(lines):
        if lines[i].startswith("```"):
            lang, start = lines[i][3:].strip(), i
            j = i + 1
            while not lines[j].startswith("```"):
                j += 1
            prev = next((lines[k] for k in range(start - 1, -1, -1) if lines[k].strip()), "")
            m = NOT_RUN.search(prev)
            out.append((start + 1, lang, "\n".join(lines[start + 1 : j]), m and m.group(1)))
            i = j + 1
        else:
            i += 1
    return out


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    pytest.importorskip("diffusers")
    from pbmlx.convert.to_mlx import convert
    from tiny_ip2p import build_tiny_ip2p

    root = tmp_path_factory.mktemp("readme")
    shutil.copyfile(REPO / "tests" / "data" / "coffee.jpg", root / "photo.jpg")
    shutil.copytree(REPO / "tests" / "data", root / "tests" / "data")
    convert(build_tiny_ip2p(root / "tiny", seed=0), root / "ip2p-mlx", dtype="float32")
    return root


@pytest.fixture
def folder(workdir, tmp_path) -> Path:
    """A fresh copy of ``workdir`` for one block, so that no block sees the files another wrote
    (the Python block saves ``photo.edited.jpg``, the default output of the first command
    block's edit, which would then refuse to overwrite it). Model folders are linked, not
    copied."""
    root = tmp_path / "readme"
    root.mkdir()
    for entry in workdir.iterdir():
        if entry.is_dir() and entry.name != "tests":
            (root / entry.name).symlink_to(entry, target_is_directory=True)
        elif entry.is_dir():
            shutil.copytree(entry, root / entry.name)
        else:
            shutil.copy2(entry, root / entry.name)
    return root


def run(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        args, capture_output=True, text=True, cwd=cwd, stdin=subprocess.DEVNULL, timeout=900
    )


def pbmlx_argv(line: str) -> list[str]:
    import shlex

    words = shlex.split(line.replace("\\\n", " "))
    return [sys.executable, "-m", "pbmlx", *words[1:]]


def test_every_block_runs_or_says_why() -> None:
    found = blocks()
    assert len(found) >= 10
    for line, lang, text, reason in found:
        runnable = (
            lang == "python"
            or text.lstrip().startswith("$ ")
            or any(x.startswith("pbmlx ") for x in text.splitlines())
        )
        assert runnable or reason, f"README block at line {line} is neither run nor marked"


@pytest.mark.parametrize(
    "block", [b for b in blocks() if b[1] == "python" and not b[3]], ids=lambda b: f"line{b[0]}"
)
def test_python_block(block, folder) -> None:
    r = run([sys.executable, "-c", block[2]], folder)
    assert r.returncode == 0, r.stderr[-3000:]


def _commands(text: str) -> list[tuple[str, list[str]]]:
    out: list[tuple[str, list[str]]] = []
    for line in text.splitlines():
        if line.startswith("$ "):
            out.append((line[2:], []))
        elif out:
            out[-1][1].append(line)
    return out


@pytest.mark.parametrize(
    "block",
    [b for b in blocks() if b[2].lstrip().startswith("$ ") and not b[3]],
    ids=lambda b: f"line{b[0]}",
)
def test_shown_output_is_what_pbmlx_prints(block, folder) -> None:
    for command, shown in _commands(block[2]):
        assert command.startswith("pbmlx "), command
        r = run(pbmlx_argv(command), folder)
        assert r.returncode == 0, (command, r.stderr[-2000:])
        printed = [x for x in r.stdout.splitlines() if x.strip()]
        assert printed == [x for x in shown if x.strip()], (command, printed)


@pytest.mark.parametrize(
    "block",
    [
        b
        for b in blocks()
        if b[1] != "python" and not b[3] and not b[2].lstrip().startswith("$ ")
        and any(x.startswith("pbmlx ") for x in b[2].splitlines())
    ],
    ids=lambda b: f"line{b[0]}",
)  # fmt: skip
def test_command_block(block, folder) -> None:
    for line in block[2].splitlines():
        if line.startswith("pbmlx "):
            r = run(pbmlx_argv(line), folder)
            assert r.returncode == 0, (line, r.stderr[-2000:])
