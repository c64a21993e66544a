"""Distributed VAFT: two CPU processes with gloo on loopback (DistributedDataParallel).

Both jobs run under ``torchrun --standalone`` (:mod:`distributed_launch`); the first runs this
file as its worker program (``__main__`` below), the second the ``vafa train`` command.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from distributed_launch import job_env, torchrun
from factories import tiny_card, write_datalist

WORLD = 2
ITERATIONS = 12


@pytest.fixture(scope="module")
def ddp_datalist(tmp_path_factory) -> Path:
    """Four blob cases: two for training, two for validation (one per process)."""
    return write_datalist(tmp_path_factory.mktemp("ddp-data"), cases=4, training=2)


def _worker(datalist: str, folder: str) -> None:
    """One process of the job (torchrun sets RANK, WORLD_SIZE and the rendezvous)."""
    rank = int(os.environ["RANK"])
    torch.set_num_threads(1)
    from vafa.io.models import build_model
    from vafa.training import TrainingConfig, train
    from vafa.training.data import Augmentation

    card = tiny_card()
    torch.manual_seed(100 + rank)  # different initial weights: DDP starts from rank 0's
    model = build_model(card)
    config = TrainingConfig(
        mode="vafa-fr",
        epochs=1,
        iterations_per_epoch=ITERATIONS,
        batch_size=2,
        lr=1e-2,
        warmup=0.0,
        attack_options={"steps": 1, "block_size": 8},
        augmentation=Augmentation(rotate_degrees=0, scale_intensity=0, shift_intensity=0),
    )
    out = Path(folder)
    result = train(model, card, datalist, out_dir=out / "run", config=config, device="cpu")
    torch.save(model.state_dict(), out / f"weights{rank}.pt")
    summary = {
        "losses": [r["loss"] for r in result.history if r["stage"] == "train"],
        "validation": result.validation,
        "latest": None if result.latest is None else str(result.latest),
        "world_size": result.card.training["world_size"],
    }
    (out / f"result{rank}.json").write_text(json.dumps(summary))


@pytest.mark.slow
def test_two_gloo_processes_end_with_identical_weights_and_learn(ddp_datalist, tmp_path):
    here = Path(__file__).resolve().parent
    path = os.pathsep.join([str(here.parent), str(here), os.environ.get("PYTHONPATH", "")])
    command = torchrun(WORLD, __file__, str(ddp_datalist), str(tmp_path))
    done = subprocess.run(
        command, env=job_env(PYTHONPATH=path), capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-3000:]
    weights = [torch.load(tmp_path / f"weights{r}.pt", weights_only=True) for r in range(WORLD)]
    assert weights[0].keys() == weights[1].keys()
    for key in weights[0]:
        assert torch.equal(weights[0][key], weights[1][key]), key
    results = [json.loads((tmp_path / f"result{r}.json").read_text()) for r in range(WORLD)]
    losses = results[0]["losses"]
    assert len(losses) == ITERATIONS and results[1]["losses"] == losses  # all_reduce'd
    first, last = sum(losses[:3]) / 3, sum(losses[-3:]) / 3
    assert last < 0.8 * first, losses
    # validation: one case per process, Dice summed over both
    assert results[0]["validation"] == results[1]["validation"]
    assert results[0]["validation"]["cases"] == 2
    # one writer
    assert results[0]["latest"] and results[1]["latest"] is None
    assert results[0]["world_size"] == WORLD
    log = (tmp_path / "run" / "training_log.csv").read_text().splitlines()
    assert len(log) == 1 + ITERATIONS + 1


@pytest.mark.slow
def test_torchrun_runs_the_train_command(ddp_datalist, tmp_path):
    from vafa.io.checkpoints import save_card

    card_file = save_card(tiny_card(), tmp_path / "tiny.json")
    out = tmp_path / "run"
    command = [
        *torchrun(WORLD, "-m", "vafa"),
        "train",
        "--datalist",
        str(ddp_datalist),
        "--card",
        str(card_file),
        "--mode",
        "fgsm",
        "--epochs",
        "1",
        "--iterations-per-epoch",
        "2",
        "--device",
        "cpu",
        "--out-dir",
        str(out),
    ]
    done = subprocess.run(command, capture_output=True, text=True, env=job_env(), timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count("done: 2 iterations") == 1  # only rank 0 prints
    card = json.loads((out / "latest.safetensors.json").read_text())
    assert card["training"]["world_size"] == WORLD
    assert card["training"]["metrics"]["validation"]["cases"] == 2


if __name__ == "__main__":  # a worker of the first test's torchrun job: DATALIST FOLDER
    _worker(*sys.argv[1:3])
