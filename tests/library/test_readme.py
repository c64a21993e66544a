"""The README's Python example runs as written."""

import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[2] / "README.md"


@pytest.mark.slow
def test_readme_python_example_runs(capsys):
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
    assert blocks, "README has no python example"
    namespace: dict = {}
    exec(compile(blocks[0], "README.md", "exec"), namespace)
    result = namespace["result"]
    assert result.adversarial.shape == (1, 1, 64, 64, 64)
    assert result.q_tables.shape == (1, 1, 8, 32, 32, 32)
    assert len(capsys.readouterr().out.splitlines()) == 20  # one progress line per step
