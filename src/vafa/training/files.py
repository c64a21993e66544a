"""Files and processes of VAFT training: output folder, resume state, CSV log, curves, DDP.

The output folder of a run holds (:data:`TRAINING_FILES`):

- ``latest.safetensors`` + ``latest.safetensors.json`` — the weights and model card (with
  ``card.training`` filled) after the last finished epoch, or at a cancel;
- ``best.safetensors`` + its card — the weights with the best validation Dice (see
  :func:`vafa.training.iter_train` for the selection metric);
- ``training_state.pt`` — optimizer, scheduler, grad-scaler and loop state of ``latest``:
  tensors and plain Python values only, read back with ``torch.load(weights_only=True)``;
- ``training_log.csv`` — one row per iteration and per validation;
- ``training_curves.png`` — the curves of the log (written at the end and at a cancel).

Only one process (rank 0) writes; every write is atomic (temporary file, then rename).
"""

from __future__ import annotations

import csv
import math
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from vafa.io.files import atomic_write, save_figure, write_text

__all__ = [
    "BEST",
    "LATEST",
    "LOG",
    "LOG_COLUMNS",
    "PLOT",
    "STATE",
    "STATE_FORMAT",
    "TRAINING_FILES",
    "TrainingLog",
    "check_out_dir",
    "json_clean",
    "load_state",
    "plot_log",
    "read_log",
    "save_state",
]

LATEST = "latest.safetensors"
BEST = "best.safetensors"
STATE = "training_state.pt"
LOG = "training_log.csv"
PLOT = "training_curves.png"
#: Every file a run writes into its output folder.
TRAINING_FILES = (LATEST, f"{LATEST}.json", BEST, f"{BEST}.json", STATE, LOG, PLOT)
#: ``format`` entry of the state file.
STATE_FORMAT = "vafa-training-state-1"
#: Columns of ``training_log.csv``.
LOG_COLUMNS = (
    "stage",
    "epoch",
    "iteration",
    "lr",
    "loss",
    "loss_clean",
    "loss_adv",
    "loss_fr",
    "val_dice_fg_clean",
    "val_dice_fg_adv",
    "val_dice_clean",
    "val_dice_adv",
    "val_dice_fg_adv_tiles",
    "seconds",
)


def check_out_dir(
    out_dir: str | os.PathLike, *, resume: bool, overwrite: bool, writer: bool
) -> Path:
    """Check (and, for the writer, create) the output folder before any training.

    Args:
        out_dir: the folder.
        resume: a resume state must be there.
        overwrite: files of an earlier run may be replaced.
        writer: this process writes (creates the folder and tests that it can write there).

    Returns:
        The folder.

    Raises:
        ValueError: ``out_dir`` is a file.
        PermissionError: the folder cannot be created or written.
        FileExistsError: files of an earlier run are there, without ``resume``/``overwrite``.
        FileNotFoundError: ``resume`` without a state in the folder.
    """
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise ValueError(f"out_dir {out} must be a folder, got an existing file")
    if writer:
        try:
            out.mkdir(parents=True, exist_ok=True)
            fd, probe = tempfile.mkstemp(dir=out, prefix=".write-test.")
            os.close(fd)
            os.unlink(probe)
        except OSError as err:
            raise PermissionError(f"out_dir {out} is not writable: {err}") from None
    if resume:
        for name in (STATE, LATEST):
            if not (out / name).is_file():
                raise FileNotFoundError(f"nothing to resume in {out}: {name} does not exist")
        return out
    existing = [name for name in TRAINING_FILES if (out / name).exists()]
    if existing and not overwrite:
        raise FileExistsError(
            f"out_dir {out} already holds {', '.join(existing)} from a training run: resume it "
            "(resume=True, CLI --resume) or replace it (overwrite=True, CLI --overwrite)"
        )
    return out


def save_state(state: Mapping[str, Any], path: str | os.PathLike) -> Path:
    """Write a resume state (tensors, numbers, strings, lists, dicts only) atomically."""
    return atomic_write({path: lambda tmp: torch.save(dict(state), tmp)})[0]


def load_state(path: str | os.PathLike) -> dict[str, Any]:
    """Read a resume state with ``torch.load(weights_only=True)``.

    Raises:
        ValueError: not a readable state file of this format.
    """
    path = Path(path)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # unpickling errors come in many types
        raise ValueError(f"resume state {path} is not readable: {err}") from None
    if not isinstance(state, dict) or state.get("format") != STATE_FORMAT:
        raise ValueError(f"resume state {path} is not a {STATE_FORMAT} file")
    return state


class TrainingLog:
    """``training_log.csv``: appends one row per call (columns :data:`LOG_COLUMNS`).

    Args:
        path: the CSV file.
        keep_until: resuming: keep the rows of iterations ``<= keep_until`` (rows written after
            the resumed checkpoint are dropped) and append; None starts a new file.
    """

    def __init__(self, path: str | os.PathLike, keep_until: int | None = None) -> None:
        self.path = Path(path)
        rows = []
        if keep_until is not None and self.path.is_file():
            rows = [r for r in read_log(self.path) if _int(r.get("iteration")) <= keep_until]
        write_text(self.path, _csv_text(rows))

    def write(self, row: Mapping[str, Any]) -> None:
        with self.path.open("a", newline="", encoding="utf-8") as f:
            csv.DictWriter(f, LOG_COLUMNS, extrasaction="ignore").writerow(_csv_row(row))


def read_log(path: str | os.PathLike) -> list[dict[str, str]]:
    """Rows of a ``training_log.csv`` as dicts of strings."""
    with Path(path).open(newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def plot_log(log: str | os.PathLike, path: str | os.PathLike, title: str = "") -> Path:
    """Write a PNG of the losses and the validation Dice of a training log (Agg, atomic)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    rows = read_log(log)
    train = [r for r in rows if r["stage"] == "train"]
    val = [r for r in rows if r["stage"] == "validation"]
    fig = Figure(figsize=(11, 4), dpi=100)
    FigureCanvasAgg(fig)
    ax_loss, ax_dice = fig.subplots(1, 2)
    x = [_int(r["iteration"]) for r in train]
    for column in ("loss", "loss_clean", "loss_adv", "loss_fr"):
        y = [_float(r[column]) for r in train]
        if any(math.isfinite(v) for v in y):
            ax_loss.plot(
                x, y, lw=1, label=column.replace("loss_", "") if "_" in column else "total"
            )
    from matplotlib.ticker import MaxNLocator

    for ax in (ax_loss, ax_dice):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax_loss.set_xlabel("iteration")
    ax_loss.set_ylabel("loss")
    ax_loss.set_title("training loss")
    if train:
        ax_loss.legend(fontsize=8)
    xv = [_int(r["iteration"]) for r in val]
    for column, label in (
        ("val_dice_fg_clean", "clean"),
        ("val_dice_fg_adv", "under attack"),
        ("val_dice_fg_adv_tiles", "under attack, attacked tiles"),
    ):
        y = [_float(r[column]) for r in val]
        if any(math.isfinite(v) for v in y):
            ax_dice.plot(xv, y, marker="o", label=label)
    ax_dice.set_xlabel("iteration")
    ax_dice.set_ylabel("foreground Dice")
    ax_dice.set_ylim(0, 1)
    ax_dice.set_title("validation (sliding window; and the attacked tiles)")
    if val:
        ax_dice.legend(fontsize=8)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return save_figure(fig, path)


# ----------------------------------------------------------------------------- helpers
def _csv_row(row: Mapping[str, Any]) -> dict[str, str]:
    out = {}
    for key in LOG_COLUMNS:
        value = row.get(key)
        if value is None or (isinstance(value, float) and not math.isfinite(value)):
            out[key] = ""
        elif isinstance(value, float):
            out[key] = f"{value:.6g}"
        else:
            out[key] = str(value)
    return out


def _csv_text(rows: list[dict[str, str]]) -> str:
    import io

    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, LOG_COLUMNS, extrasaction="ignore", lineterminator="\r\n")
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()


def _int(value) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        return -1


def _float(value) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def json_clean(value: Any) -> Any:
    """``value`` with non-finite floats replaced by None (card JSON forbids NaN)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Mapping):
        return {str(k): json_clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_clean(v) for v in value]
    if value is None or isinstance(value, (bool, int, str)):
        return value
    return str(value)
