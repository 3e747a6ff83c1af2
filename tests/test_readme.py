"""The README cannot go stale: its size, its first screen, and every command and snippet in it checked."""

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()
BLOCKS = re.findall(r"```(\w+)\n(.*?)```", README, re.S)

# Each shell command in the README and where it runs: a new one fails this test until it is checked somewhere.
COMMANDS = {
    'python3 -m venv .venv && . .venv/bin/activate && pip install -e ".[dev]" && python -m agents.pipeline':
        ".ci/run installs with the same pip command; the pipeline runs in tests/test_pipeline.py on tiny data "
        "and at full length for benchmarks/README.md",
    "python -m pytest": "what .ci/run runs",
    "python -m agents.allocate": "tests/test_mixed.py (its main, on tiny data)",
    "python train_baselines.py float --model resnet20 --epochs 85 --lr 0.2 --batch-size 256 --crop-pad 4":
        "benchmarks/resnet20.md at full length; tests/test_resnet.py trains resnet20 through the same code at a small "
        "width on tiny data",
    "python train_baselines.py float --model vgg16 --epochs 22 --crop-pad 4":
        "benchmarks/README.md at full length ('VGG16 at full width'); tests/test_width.py trains the deep nets "
        "through the same code at small widths on tiny data",
}


def test_the_readme_is_short_and_its_first_screen_holds_the_two_commands():
    assert len(README) <= 10_000
    first = "\n".join(README.splitlines()[:40])
    assert "python -m agents.pipeline" in first and "python -m pytest" in first and "TAPQUANT_DATA" in first


def test_every_shell_command_in_the_readme_is_checked_somewhere():
    shell = [line.strip() for lang, body in BLOCKS if lang == "bash" for line in body.splitlines() if line.strip()]
    inline = re.findall(r"`(python3? [^`]*)`", re.sub(r"```.*?```", "", README, flags=re.S))
    assert sorted(set(shell + inline)) == sorted(COMMANDS)


def test_the_python_snippet_prints_what_the_readme_shows(tiny_teacher, tiny_tar, cache_dir, tmp_path):
    """The snippet as written, in a folder holding outputs/lenet5_qat_preconvert.pth; only the search split is
    smaller (the tiny data set has 80 validation images), through gym.make's keywords."""
    snippet = next(body for lang, body in BLOCKS if lang == "python")
    shown = next(body for lang, body in BLOCKS[BLOCKS.index(("python", snippet)) + 1:] if lang == "text")
    (tmp_path / "outputs").mkdir()
    shutil.copy(tiny_teacher / "lenet5_qat_preconvert.pth", tmp_path / "outputs")
    smaller = ("import functools, gymnasium; "
               "gymnasium.make = functools.partial(gymnasium.make, search_size=60, calib_batches=2)\n")
    env = {**os.environ, "TAPQUANT_DATA": str(tiny_tar), "TAPQUANT_CACHE": str(cache_dir),
           "PYTHONPATH": str(ROOT)}
    r = subprocess.run([sys.executable, "-c", smaller + snippet], cwd=tmp_path, capture_output=True, text=True,
                       env=env, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    got = [line for line in r.stdout.splitlines() if not line.startswith("[Kernels]")]
    want = shown.strip().splitlines()
    assert got[0] == want[0]  # the spaces, exactly
    number = r"-?\d+\.\d\d"
    pattern = number.join(re.escape(part) for part in re.split(number, want[1]))  # any numbers, same words
    assert re.fullmatch(pattern, got[1]), (got[1], want[1])
