"""VAFT: adversarial training of 3D segmentation models (Hanif et al., MICCAI 2023, Eq. 3–4).

Modes (:data:`MODES`), with ``X`` a clean patch, ``Y`` its labels, ``X'`` the adversarial patch
made by the mode's attack (:data:`MODE_ATTACKS`) with the model in eval mode and frozen
parameters, and ``L_seg`` the paper's Dice-CE (:class:`vafa.losses.DiceCELoss`):

- ``"vafa-fr"`` — Eq. 3: ``L_seg(M(X), Y) + L_seg(M(X'), Y) + λ·L_fr(M(X), M(X'))`` with
  ``X' = VAFA(X, Y)`` and ``L_fr`` the frequency-consistency loss of Eq. 4
  (:class:`vafa.losses.FrequencyConsistencyLoss`, mean absolute difference of the 3D DCTs of
  the logits); the paper's M_VAFA-FR.
- ``"vafa"`` — ``L_seg(M(X'), Y)`` with VAFA samples only (the paper's M_VAFA).
- ``"pgd"``, ``"fgsm"``, ``"bim"``, ``"gn"`` — ``L_seg(M(X'), Y)`` with voxel-domain samples
  (the paper's M_PGD and its siblings).
- ``"clean"`` — ``L_seg(M(X), Y)``: normal training.

:func:`iter_train` is the trainer as a generator (for GUI workers); :func:`train` drives it with
a callback. Both run in one process or under ``torchrun`` (DistributedDataParallel, see
:func:`iter_train`). Files of a run: :mod:`vafa.training_io`;
data and patch transforms: :mod:`vafa.training_data` (:class:`Augmentation` is re-exported here).

Example::

    from vafa.models import ModelCard, build_model
    from vafa.training import TrainingConfig, train

    card = ModelCard.from_preset("unetr-btcv")
    model = build_model(card)                                  # from scratch
    config = TrainingConfig(mode="vafa-fr", epochs=100, attack_options={"q_max": 20})
    result = train(model, card, "datalist.json", out_dir="runs/vaft", config=config,
                   callback=lambda e: print(e.stage, e.iteration, e.losses))
    result.best, result.card.training["metrics"]
"""

from __future__ import annotations

import difflib
import math
import os
from collections.abc import Callable, Generator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from vafa.attacks.base import drive
from vafa.losses import DiceCELoss, FrequencyConsistencyLoss
from vafa.models import ModelCard
from vafa.training_data import Augmentation

__all__ = [
    "MODES",
    "MODE_ATTACKS",
    "Augmentation",
    "TrainingConfig",
    "TrainingEvent",
    "TrainingResult",
    "VAFTLoss",
    "iter_train",
    "train",
    "validation_summary",
]

#: Training modes, see the module docstring.
MODES = ("vafa-fr", "vafa", "pgd", "fgsm", "bim", "gn", "clean")
#: The attack that makes the adversarial samples of every mode (None: no attack).
MODE_ATTACKS: dict[str, str | None] = {
    "vafa-fr": "vafa",
    "vafa": "vafa",
    "pgd": "pgd",
    "fgsm": "fgsm",
    "bim": "bim",
    "gn": "gn",
    "clean": None,
}

#: Attacks whose iterate can be chosen (``keep``); training uses their last one by default.
ITERATIVE_ATTACKS = ("vafa", "pgd", "fgsm", "bim")


# ----------------------------------------------------------------------------- settings
@dataclass
class TrainingConfig:
    """Hyper-parameters of a VAFT run (defaults follow the paper where it says).

    Attributes:
        mode: one of :data:`MODES` (default ``"vafa-fr"``).
        epochs: epochs to train (an epoch draws every training case once per process, or
            ``iterations_per_epoch`` batches).
        iterations_per_epoch: batches per epoch; None: ``ceil(cases per process / batch_size)``.
        batch_size: patches per batch and process (paper: 3 patches of 96³).
        lr: AdamW learning rate (paper: 1e-4).
        weight_decay: AdamW weight decay (1e-5).
        warmup: fraction of all iterations with a linear warm-up, then a cosine decay.
        grad_clip: maximum gradient norm (None: no clipping).
        lambda_fr: weight λ of the frequency-consistency term (``"vafa-fr"``; paper: 1).
        attack_options: options of the mode's attack (e.g. ``{"q_max": 20, "block_size": 32,
            "steps": 20}`` for VAFA, ``{"eps": 4}`` for PGD); the attack's defaults otherwise,
            except ``keep``: the samples are the attack's last iterate (``keep="last"``, the
            published VAFA and PGD samples) unless ``keep`` is given. Must be empty for
            ``"clean"``; ``seed`` and ``device`` are set by the trainer.
        val_every: validate every this many epochs (and after the last epoch).
        tile_batch: tiles attacked together during validation.
        amp: mixed precision on CUDA (bfloat16 where supported, else float16 with a grad
            scaler); ignored on other devices.
        seed: base seed of patches, case order and attacks.
        augmentation: the random patch transforms (:class:`vafa.training_data.Augmentation`).
    """

    mode: str = "vafa-fr"
    epochs: int = 10
    iterations_per_epoch: int | None = None
    batch_size: int = 2
    lr: float = 1e-4
    weight_decay: float = 1e-5
    warmup: float = 0.05
    grad_clip: float | None = 1.0
    lambda_fr: float = 1.0
    attack_options: dict[str, Any] = field(default_factory=dict)
    val_every: int = 1
    tile_batch: int = 1
    amp: bool = True
    seed: int = 0
    augmentation: Augmentation = field(default_factory=Augmentation)

    def __post_init__(self) -> None:
        self.mode = _resolve_mode(self.mode)
        for name in ("epochs", "batch_size", "val_every", "tile_batch"):
            _positive_int(name, getattr(self, name))
        if self.iterations_per_epoch is not None:
            _positive_int("iterations_per_epoch", self.iterations_per_epoch)
        for name in ("lr", "weight_decay", "lambda_fr"):
            _finite_number(name, getattr(self, name), positive=name == "lr")
        _finite_number("warmup", self.warmup)
        if not 0 <= self.warmup < 1:
            raise ValueError(f"warmup must be a fraction in [0, 1), got {self.warmup!r}")
        if self.grad_clip is not None:
            _finite_number("grad_clip", self.grad_clip, positive=True)
        if isinstance(self.seed, bool) or not isinstance(self.seed, int):
            raise TypeError(f"seed must be an int, got {self.seed!r}")
        if not isinstance(self.augmentation, Augmentation):
            raise TypeError(
                f"augmentation must be an Augmentation, got {type(self.augmentation).__name__}"
            )
        if not isinstance(self.attack_options, Mapping):
            raise TypeError(f"attack_options must be a dict, got {self.attack_options!r}")
        self.attack_options = {k: v for k, v in self.attack_options.items() if v is not None}
        for key in ("seed", "device"):
            if key in self.attack_options:
                raise ValueError(f"attack_options must not contain {key!r}: the trainer sets it")
        if self.attack is None and self.attack_options:
            raise ValueError(
                f"attack_options must be empty in mode 'clean', got {sorted(self.attack_options)}"
            )
        if self.attack in ITERATIVE_ATTACKS:
            self.attack_options = {"keep": "last", **self.attack_options}

    @property
    def attack(self) -> str | None:
        """Name of the mode's attack (None for ``"clean"``)."""
        return MODE_ATTACKS[self.mode]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready settings."""
        out = {k: getattr(self, k) for k in self.__dataclass_fields__ if k != "augmentation"}
        out["attack_options"] = {
            k: list(v) if isinstance(v, tuple) else v for k, v in self.attack_options.items()
        }
        out["augmentation"] = self.augmentation.to_dict()
        return out


class VAFTLoss(nn.Module):
    """The training objective of a mode (module docstring), term by term.

    Args:
        mode: one of :data:`MODES`.
        lambda_fr: weight λ of the frequency-consistency term (``"vafa-fr"`` only).

    ``forward(labels, clean_logits=None, adv_logits=None)``: ``labels`` ``[B, 1, H, W, D]``
    class indices, logits ``[B, K, H, W, D]`` of the clean and adversarial patches (the ones
    the mode needs). Returns ``{"loss": total, "clean": …, "adv": …, "fr": …}`` (scalar tensors;
    only the terms of the mode).
    """

    def __init__(self, mode: str = "vafa-fr", lambda_fr: float = 1.0) -> None:
        super().__init__()
        self.mode = _resolve_mode(mode)
        self.lambda_fr = float(lambda_fr)
        self.seg = DiceCELoss()
        self.fr = FrequencyConsistencyLoss()

    @property
    def needs_clean(self) -> bool:
        return self.mode in ("vafa-fr", "clean")

    @property
    def needs_adversarial(self) -> bool:
        return self.mode != "clean"

    def forward(
        self,
        labels: torch.Tensor,
        clean_logits: torch.Tensor | None = None,
        adv_logits: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        for name, value, needed in (
            ("clean_logits", clean_logits, self.needs_clean),
            ("adv_logits", adv_logits, self.needs_adversarial),
        ):
            if needed and value is None:
                raise ValueError(f"{name} is required in mode {self.mode!r}")
        terms: dict[str, torch.Tensor] = {}
        if self.needs_clean:
            terms["clean"] = self.seg(clean_logits.float(), labels)
        if self.needs_adversarial:
            terms["adv"] = self.seg(adv_logits.float(), labels)
        if self.mode == "vafa-fr":
            terms["fr"] = self.fr(clean_logits.float(), adv_logits.float())
            total = terms["clean"] + terms["adv"] + self.lambda_fr * terms["fr"]
        else:
            total = terms["clean"] if self.mode == "clean" else terms["adv"]
        return {"loss": total, **terms}


# ----------------------------------------------------------------------------- events
@dataclass
class TrainingEvent:
    """What :func:`iter_train` yields (and a :func:`train` callback receives).

    Attributes:
        stage: ``"attack"`` (a step of the attack making the current batch's adversarial
            patches), ``"train"`` (an update was made), ``"validation"`` (progress of a
            validation round; the round's last event carries ``validation``).
        iteration: updates done so far (over all runs of a resumed training).
        total: updates planned (``epochs × iterations_per_epoch``).
        epoch: current epoch, 1-based.
        epochs: epochs planned.
        losses: ``"train"``: the loss terms of this update (``loss``, ``clean``, ``adv``,
            ``fr``; averaged over processes); else empty.
        lr: learning rate of the last update.
        validation: on the event that ends a validation round: ``dice_fg_clean``,
            ``dice_fg_adv`` (foreground mean Dice, sliding window, clean and under the training
            attack; None where not measured), ``dice_clean``, ``dice_adv`` (all classes),
            ``cases``; else None.
        attack_step, attack_steps: ``"attack"`` events and attack steps during validation.
        case, cases: validation progress: cases done / cases of this process.
        elapsed: seconds since this run started.
    """

    stage: str
    iteration: int
    total: int
    epoch: int
    epochs: int
    losses: dict[str, float] = field(default_factory=dict)
    lr: float = 0.0
    validation: dict[str, Any] | None = None
    attack_step: int | None = None
    attack_steps: int | None = None
    case: int | None = None
    cases: int | None = None
    elapsed: float = 0.0


@dataclass(eq=False)
class TrainingResult:
    """Outcome of :func:`train` / :func:`iter_train`.

    Attributes:
        model: the trained network (the module passed in, in eval mode).
        card: its card with ``training`` filled (as written beside ``latest``).
        out_dir: the output folder.
        latest, best: checkpoint paths (None where not written: ``best`` without validation,
            both on processes other than rank 0).
        log, plot: ``training_log.csv`` and ``training_curves.png`` (rank 0; else None).
        iterations: updates done in total; epochs_done: finished epochs.
        cancelled: stopped by the callback / ``send(False)`` (``latest`` was saved first).
        best_metric: best value of the selection metric (None without validation).
        selection: the metric that picks ``best`` (``"dice_fg_adv"`` or ``"dice_fg_clean"``).
        validation: the last validation round's values (see :class:`TrainingEvent`), or None.
        history: the log rows of this run (dicts of :data:`vafa.training_io.LOG_COLUMNS`).
    """

    model: nn.Module
    card: ModelCard
    out_dir: Path
    latest: Path | None
    best: Path | None
    log: Path | None
    plot: Path | None
    iterations: int
    epochs_done: int
    cancelled: bool
    best_metric: float | None
    selection: str
    validation: dict[str, Any] | None
    history: list[dict[str, Any]] = field(default_factory=list)


Data = str | os.PathLike | Sequence[tuple[Any, Any]]


# ----------------------------------------------------------------------------- entry points
def train(
    model: nn.Module,
    card: ModelCard,
    train_data: Data,
    val_data: Sequence[tuple[Any, Any]] | None = None,
    *,
    out_dir: str | os.PathLike,
    config: TrainingConfig | None = None,
    resume: bool = False,
    overwrite: bool = False,
    device: str | torch.device = "auto",
    callback: Callable[[TrainingEvent], bool | None] | None = None,
) -> TrainingResult:
    """Train ``model`` (in place) by VAFT; see :func:`iter_train` for every argument.

    Args:
        callback: receives every :class:`TrainingEvent`; returning ``False`` cancels: the
            latest checkpoint is saved within one iteration and the result has
            ``cancelled=True``.
    """
    return drive(
        iter_train(
            model,
            card,
            train_data,
            val_data,
            out_dir=out_dir,
            config=config,
            resume=resume,
            overwrite=overwrite,
            device=device,
        ),
        callback,
    )


def iter_train(
    model: nn.Module,
    card: ModelCard,
    train_data: Data,
    val_data: Sequence[tuple[Any, Any]] | None = None,
    *,
    out_dir: str | os.PathLike,
    config: TrainingConfig | None = None,
    resume: bool = False,
    overwrite: bool = False,
    device: str | torch.device = "auto",
) -> Generator[TrainingEvent, bool | None, TrainingResult]:
    """VAFT as a generator: yields :class:`TrainingEvent` s, returns a :class:`TrainingResult`.

    Send ``False`` (``gen.send(False)``) to cancel: the latest checkpoint is saved within one
    iteration (an attack in progress is abandoned in a single process) and the generator
    returns. Everything the run needs is checked at the first ``next()``, before any update:
    the data (missing datalist files listed together, labels with classes ``>=
    card.out_channels`` named), the attack options, the output folder, the resume state.

    Every iteration: a batch of random patches (:class:`vafa.training_data.PatchSampler`);
    the mode's attack makes ``X'`` with the model in eval mode and frozen parameters (the
    attack restores both); then, in train mode, the loss of the mode (:class:`VAFTLoss`),
    AdamW, gradient clipping, a warm-up + cosine learning-rate schedule, AMP on CUDA.
    Every ``val_every`` epochs and after the last: sliding-window Dice (overlap 0.5) of the
    validation cases, clean and under the mode's attack (the full volume attacked in tiles of
    ``card.roi_size``, :func:`vafa.tiling.attack_volume`). ``best`` is the checkpoint with the
    highest foreground Dice **under attack** (``"clean"`` mode: the clean foreground Dice).
    ``latest`` is saved after every epoch and at a cancel. The cards of both record the run in
    ``card.training``: ``mode``, ``objective``, ``epochs``, ``epochs_done``,
    ``iterations_per_epoch``, ``iterations_done``, ``batch_size``, ``world_size``, ``lr``,
    ``weight_decay``, ``optimizer``, ``schedule``, ``grad_clip``, ``amp``, ``lambda_fr``,
    ``attack`` (the attack's settings), ``augmentation``, ``seed``, ``data``, ``selection``,
    ``metrics`` (``validation``, ``best``, ``best_iteration``) and ``initialised_from`` (the
    ``training`` of the card given, e.g. of the weights being fine-tuned).

    Distributed: when ``torch.distributed`` is initialised, or ``WORLD_SIZE > 1`` in the
    environment (``torchrun --nproc_per_node N -m vafa train …``; the process group is then
    created here — nccl on CUDA, gloo otherwise — and destroyed at the end), the model is
    wrapped in ``DistributedDataParallel``, cases are shared out by ``DistributedSampler``,
    losses and validation Dice are averaged over processes (``all_reduce``), validation cases
    are shared out, and only rank 0 writes files. With nccl each process uses
    ``cuda:LOCAL_RANK``. Adversarial samples are made on the wrapped module (no collective).

    Args:
        model: the network of ``card`` (e.g. :func:`vafa.models.build_model` for training from
            scratch, or :func:`vafa.checkpoints.load_model` for fine-tuning); trained in place.
        card: its model card (grid, intensity mapping, ROI = patch size, classes).
        train_data: a datalist JSON path (:func:`vafa.training_data.read_datalist`; its
            ``validation`` list is used when ``val_data`` is None), or ``(image, labels)``
            pairs of :class:`~vafa.volume.Volume` s or NIfTI paths.
        val_data: validation pairs (``[]``: no validation, hence no ``best``).
        out_dir: output folder (:mod:`vafa.training_io`); created if needed.
        config: hyper-parameters (:class:`TrainingConfig`; default: its defaults).
        resume: continue from ``out_dir``'s latest checkpoint and state (iteration count,
            optimizer, scheduler); refuses a state written for another architecture or mode.
            ``epochs`` may be raised to train longer.
        overwrite: start over in an ``out_dir`` that holds an earlier run (its files are
            removed first). Without ``resume``/``overwrite`` such a folder is an error.
        device: ``"auto"`` (cuda → mps → cpu), a name or a :class:`torch.device`.

    Raises:
        TypeError, ValueError, FileNotFoundError, FileExistsError, PermissionError: invalid
            inputs, named (raised before any update).
        FloatingPointError: the loss became NaN/Inf.
    """
    from vafa.training_run import Trainer

    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if not isinstance(card, ModelCard):
        raise TypeError(f"card must be a ModelCard, got {type(card).__name__}")
    config = TrainingConfig() if config is None else config
    if not isinstance(config, TrainingConfig):
        raise TypeError(f"config must be a TrainingConfig, got {type(config).__name__}")
    trainer = Trainer(model, card, config, Path(out_dir), resume, overwrite, device)
    return (yield from trainer.run(train_data, val_data))


def validation_summary(validation: Mapping[str, Any]) -> str:
    """One line of a validation round's foreground Dice, clean and under attack."""

    def fmt(value) -> str:
        return "n/a" if value is None else f"{value:.3f}"

    text = f"validation foreground Dice clean {fmt(validation.get('dice_fg_clean'))}"
    if validation.get("dice_fg_adv") is not None:
        text += f", under attack {fmt(validation.get('dice_fg_adv'))}"
    return text


# ----------------------------------------------------------------------------- helpers
def _resolve_mode(mode: str) -> str:
    if not isinstance(mode, str):
        raise TypeError(f"mode must be one of {list(MODES)}, got {mode!r}")
    key = mode.strip().lower().replace("_", "-")
    key = {"vaft": "vafa-fr", "vafafr": "vafa-fr", "normal": "clean"}.get(key, key)
    if key not in MODES:
        close = difflib.get_close_matches(key, MODES, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ValueError(f"mode must be one of {list(MODES)}, got {mode!r}{hint}")
    return key


def _positive_int(name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be an integer >= 1, got {value!r}")


def _finite_number(name: str, value: Any, positive: bool = False) -> None:
    rule = "> 0" if positive else ">= 0"
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number {rule}, got {value!r}")
    if value < 0 or (positive and value == 0):
        raise ValueError(f"{name} must be a finite number {rule}, got {value!r}")
