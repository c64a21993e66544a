"""VAFT: adversarial training of 3D segmentation models (Hanif et al., MICCAI 2023, Eq. 3–4).

Modes (:data:`MODES`), with ``X`` a clean patch, ``Y`` its labels, ``X'`` the adversarial patch
made by the mode's attack (:data:`MODE_ATTACKS`) with the model in eval mode and frozen
parameters, and ``L_seg`` the paper's Dice-CE (:class:`vafa.ops.losses.DiceCELoss`):

- ``"vafa-fr"`` — Eq. 3: ``L_seg(M(X), Y) + L_seg(M(X'), Y) + λ·L_fr(M(X), M(X'))`` with
  ``X' = VAFA(X, Y)`` and ``L_fr`` the frequency-consistency loss of Eq. 4
  (:class:`vafa.ops.losses.FrequencyConsistencyLoss`, mean absolute difference of the 3D DCTs of
  the logits); the paper's M_VAFA-FR.
- ``"vafa"`` — ``L_seg(M(X'), Y)`` with VAFA samples only (the paper's M_VAFA).
- ``"pgd"``, ``"fgsm"``, ``"bim"``, ``"gn"`` — ``L_seg(M(X'), Y)`` with voxel-domain samples
  (the paper's M_PGD and its siblings).
- ``"clean"`` — ``L_seg(M(X), Y)``: normal training.

:func:`iter_train` is the trainer as a generator (for GUI workers); :func:`train` drives it with
a callback. Both run in one process or under ``torchrun`` (DistributedDataParallel, see
:func:`iter_train`). Files of a run: :mod:`vafa.training.files`;
data and patch transforms: :mod:`vafa.training.data`; the modes :mod:`vafa.training.modes`; the
settings schema and the faces' profile :mod:`vafa.training.settings`; the run's settings
:mod:`vafa.training.config`; objective :mod:`vafa.training.objective`; the loop
:mod:`vafa.training.trainer`.

Example::

    from vafa.io.models import ModelCard, build_model
    from vafa.training import TrainingConfig, train

    card = ModelCard.from_preset("unetr-btcv")
    model = build_model(card)                                  # from scratch
    config = TrainingConfig(mode="vafa-fr", epochs=100, attack_options={"q_max": 20})
    result = train(model, card, "datalist.json", out_dir="runs/vaft", config=config,
                   callback=lambda e: print(e.stage, e.iteration, e.losses))
    result.best, result.card.training["metrics"]
"""

from vafa.training.config import TrainingConfig
from vafa.training.data import Augmentation
from vafa.training.events import TrainingEvent, TrainingResult, validation_summary
from vafa.training.loop import iter_train, train
from vafa.training.modes import ITERATIVE_ATTACKS, MODE_ATTACKS, MODE_TITLES, MODES
from vafa.training.objective import VAFTLoss

__all__ = [
    "ITERATIVE_ATTACKS",
    "MODES",
    "MODE_ATTACKS",
    "MODE_TITLES",
    "Augmentation",
    "TrainingConfig",
    "TrainingEvent",
    "TrainingResult",
    "VAFTLoss",
    "iter_train",
    "train",
    "validation_summary",
]
