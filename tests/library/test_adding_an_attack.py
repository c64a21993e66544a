"""docs/adding_an_attack.md works as written: its example attack, registered with one line,
is built, validated, offered by the CLI and keeps its L2 bound."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

from vafa import attacks
from vafa.cli import build_parser

DOC = Path(__file__).resolve().parents[2] / "docs" / "adding_an_attack.md"


@pytest.fixture
def l2pgd(monkeypatch):
    code = re.findall(r"```python\n(.*?)```", DOC.read_text(encoding="utf-8"), flags=re.S)[0]
    namespace: dict = {}
    exec(compile(code, str(DOC), "exec"), namespace)
    monkeypatch.setitem(attacks.ATTACKS, "l2pgd", namespace["L2PGD"])  # the one registry line
    return namespace["L2PGD"]


def test_the_documented_attack_runs_and_keeps_its_bound(l2pgd):
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv3d(1, 3, 3, padding=1)).eval()
    x = torch.rand(2, 1, 8, 8, 8)
    attack = attacks.build_attack("l2pgd", model, eps_l2=0.5, alpha=0.2, steps=3, seed=0)
    result = attack(x)
    norms = (result.adversarial - x).flatten(1).norm(dim=1)
    assert torch.all(norms <= 0.5 + 1e-5) and torch.all(norms > 0)
    assert result.adversarial.min() >= 0 and result.adversarial.max() <= 1
    assert result.settings["eps_l2"] == 0.5 and len(result.history) == 4  # 3 steps + final


def test_the_schema_validates_and_the_cli_offers_the_new_flag(l2pgd, capsys):
    model = torch.nn.Conv3d(1, 2, 1)
    with pytest.raises(ValueError, match="eps_l2 must be >= 0"):
        attacks.build_attack("l2pgd", model, eps_l2=-1.0)
    with pytest.raises(ValueError, match=r"does not take option\(s\) \['q_max'\]"):
        attacks.build_attack("l2pgd", model, q_max=20)
    parser = build_parser()
    args = parser.parse_args(["attack", "x.nii.gz", "--model", "demo", "--attack", "l2pgd",
                              "--eps-l2", "2"])  # fmt: skip
    assert args.attack == "l2pgd" and args.eps_l2 == 2.0
    with pytest.raises(SystemExit):
        parser.parse_args(["attack", "--help"])
    text = capsys.readouterr().out
    assert "--eps-l2" in " ".join(text.split()) and "L2-PGD: radius of the L2 ball" in " ".join(
        text.split()
    )
