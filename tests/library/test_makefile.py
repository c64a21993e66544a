"""The Makefile's torch choice reaches pip as separate arguments, and the README's recipe without
make runs the same installs (``make -n``: nothing is installed)."""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CPU_INDEX = "https://download.pytorch.org/whl/cpu"

pytestmark = pytest.mark.skipif(shutil.which("make") is None, reason="needs make")


def _dry_run(target: str, tmp_path: Path, **variables: str) -> list[str]:
    """The commands ``make`` would run for ``target`` in a fresh venv under ``tmp_path``."""
    venv = tmp_path / "venv"
    argv = ["make", "-n", "-B", f"{venv}/{target}", f"VENV={venv}"]
    argv += [f"{k}={v}" for k, v in variables.items()]
    done = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return [line.replace(f"{venv}/bin/", "") for line in done.stdout.splitlines()]


def _torch_install(lines: list[str]) -> list[str]:
    (line,) = [x for x in lines if re.search(r"pip install .*torch==", x)]
    return shlex.split(line)


@pytest.mark.parametrize("target", [".installed", ".installed-demo"])
def test_torch_index_is_its_own_pip_argument(target, tmp_path):
    argv = _torch_install(_dry_run(target, tmp_path, TORCH_INDEX=CPU_INDEX))
    assert argv[-3:] == ["torch==2.13.0", "--index-url", CPU_INDEX], argv
    argv = _torch_install(_dry_run(target, tmp_path))  # the public index
    assert argv[-1] == "torch==2.13.0" and "--index-url" not in argv, argv


@pytest.mark.parametrize("target", [".installed", ".installed-demo"])
def test_the_extras_cannot_replace_the_torch_installed_first(target, tmp_path):
    lines = _dry_run(target, tmp_path)
    package = [shlex.split(x) for x in lines if re.search(r"pip install .*-e ", x)]
    assert package and all("-c" in argv for argv in package), lines


def test_the_readme_recipe_without_make_is_what_make_runs(tmp_path):
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    recipe = re.search(r"Without make.*?```bash\n(.*?)```", readme, flags=re.S).group(1)
    recipe_lines = [
        line.split("  #")[0].strip()
        for line in recipe.splitlines()
        if line.strip() and not line.startswith("#")
    ]
    venv = tmp_path / "venv"
    made = [
        line.replace(f"{venv}/torch-constraints.txt", "torch-constraints.txt")
        for line in _dry_run(".installed", tmp_path)
        if line.startswith("python -") and "--upgrade pip" not in line
    ]
    assert made == recipe_lines, (made, recipe_lines)
