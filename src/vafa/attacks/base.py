"""The common machinery of all attacks: validation, the step loop, best-iterate tracking,
progress events, cancellation, and restoring the model's state.

An attack is an object built from a model and its hyper-parameters and called on
``(images, labels)``. Subclasses implement five small hooks (:meth:`Attack._init`,
:meth:`Attack._perturb`, :meth:`Attack._variable`, :meth:`Attack._update`,
:meth:`Attack._snapshot`); everything else lives here once.
"""

from __future__ import annotations

from collections.abc import Callable, Generator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from vafa.attacks.inputs import check_images, check_labels
from vafa.attacks.options import (
    FREE,
    Option,
    constructor_signature,
    options_docstring,
    validate_options,
)
from vafa.attacks.tracking import BestTracker
from vafa.ops.devices import resolve_device
from vafa.ops.heads import Heads, check_heads

__all__ = ["Attack", "AttackResult", "Callback", "StepEvent"]


@dataclass
class StepEvent:
    """What a callback receives after every attack step.

    Attributes:
        step: 1-based index of the step just done.
        total: number of steps of the attack.
        loss: attack objective of this iterate (mean over the batch; higher = stronger attack).
        dice: mean foreground Dice of the current adversarial prediction vs the attacked labels.
        ssim: SSIM between clean and current adversarial volume (the attack's own measure), or None.
        adversarial: the current adversarial volume ``[B, C, H, W, D]`` (a view: do not modify).
        tile: 1-based tile index when a full volume is attacked tile by tile (else None).
        tiles: number of tiles (else None).
        prediction: what the model made of ``adversarial`` (:meth:`Heads.predict
            <vafa.ops.heads.Heads.predict>`: ``[B, 1, H, W, D]`` int64 classes, or sigmoid
            heads' ``[B, K, H, W, D]`` uint8 region masks), or None.
        q_table: VAFA: ``[B, C, H, W, D]`` the quantization step of every voxel's (block,
            frequency) position that made ``adversarial`` (0 outside a band-limited VAFA's
            band; a copy), else None.
    """

    step: int
    total: int
    loss: float
    dice: float
    ssim: float | None
    adversarial: torch.Tensor
    tile: int | None = None
    tiles: int | None = None
    prediction: torch.Tensor | None = None
    q_table: torch.Tensor | None = None


Callback = Callable[[StepEvent], "bool | None"]


@dataclass
class AttackResult:
    """Outcome of an attack.

    Attributes:
        adversarial: ``[B, C, H, W, D]``, same dtype and device as the input, values in [0, 1].
        clean_prediction, adversarial_prediction: the predictions of the clean input and of
            ``adversarial`` (:attr:`StepEvent.prediction`'s form).
        labels: the labels attacked (ground truth or pseudo-labels) in the same form.
        history: one dict per evaluated iterate: ``step`` (1-based; ``"final"`` for the
            evaluation after the last update of attacks that make one, ``"hard"`` for VAFA's
            hard-rounded output), ``loss``, ``dice``, ``ssim``, ``alpha`` (VAFA) and
            ``returned`` (True for the evaluation whose volume was returned, for any sample).
        returned_steps: per sample, the ``step`` of the history entry that was returned.
        steps_run: gradient steps done (fewer than asked when cancelled).
        cancelled: True when a callback stopped the attack.
        q_tables: VAFA only, ``[B, C, N, *block_size]`` quantization tables of ``adversarial``
            (0 where a coefficient is not quantized: outside a band-limited VAFA's band).
        objective: ``[B]`` attack objective of the returned iterate.
        settings: the attack's name and hyper-parameters.
    """

    adversarial: torch.Tensor
    clean_prediction: torch.Tensor
    adversarial_prediction: torch.Tensor
    labels: torch.Tensor
    history: list[dict[str, Any]] = field(default_factory=list)
    steps_run: int = 0
    cancelled: bool = False
    returned_steps: list[int | str] = field(default_factory=list)
    q_tables: torch.Tensor | None = None
    objective: torch.Tensor | None = None
    settings: dict[str, Any] = field(default_factory=dict)


class Attack:
    """Base class of all attacks (see the module docstring).

    An attack is built as ``Attack(model, **options, targeted=…, seed=…, device=…,
    clamp_inputs=…)``: ``options`` are the keywords of its schema (:attr:`options`), checked
    once by :meth:`resolve_options` and set as attributes of the same names; the others take
    the schema's defaults. Subclasses declare no constructor.

    Args:
        model: segmentation network mapping ``[B, C, H, W, D]`` to logits ``[B, K, H, W, D]``.
        targeted: minimise the loss towards ``labels`` instead of maximising it.
        seed: seed of the attack's own random generator (random starts, noise, random tables);
            None draws one from torch's global generator.
        device: ``"auto"`` runs where the model's parameters are; a name moves the model there.
        clamp_inputs: clamp images to [0, 1] instead of refusing values outside.
        heads: how the logits are read (:class:`vafa.ops.heads.Heads`, ``card.heads()``);
            None: softmax classes.
        **options: the attack's hyper-parameters (None: the default).

    Raises:
        ValueError: an option the attack does not take, or an invalid value (named).
    """

    name = "attack"
    #: Name in GUI lists (e.g. ``"VAFA-3D"``).
    label = "attack"
    #: The user-facing hyper-parameters, one :class:`~vafa.attacks.options.Option` each:
    #: construction, validation, ``settings()``, the CLI flags, GUI controls and tooltips are
    #: generated from them.
    options: tuple[Option, ...] = ()
    #: Whether the iterate after the last update is evaluated (and offered to ``keep``): PGD
    #: yes; VAFA no (the published code returns its last step's volume, made before the update).
    evaluates_final = True
    steps: int = 0  #: (and keep) for attacks without these options, e.g. GN
    keep: str = "last"
    #: Whether the attack has a loss to target (``targeted``); Gaussian noise has none.
    targetable = True

    def __init__(
        self,
        model: nn.Module,
        *,
        targeted: bool = False,
        seed: int | None = None,
        device: str | torch.device = "auto",
        clamp_inputs: bool = False,
        heads: Heads | None = None,
        **options: Any,
    ) -> None:
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
            raise TypeError(f"seed must be an int or None, got {seed!r}")
        if targeted and not self.targetable:
            raise ValueError(f"{self.name} has no loss to target: targeted must be False")
        for key, value in self.resolve_options(options).items():
            setattr(self, key, value)
        self.model = model
        self.targeted = bool(targeted)
        self.seed = seed
        self.device = device if device == "auto" else resolve_device(device)
        self.clamp_inputs = bool(clamp_inputs)
        self.heads = check_heads(heads)
        self.loss_fn = self.heads.loss_function()

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls.__signature__ = constructor_signature(Attack.__init__, cls.options, cls.targetable)
        if cls.options and cls.__doc__ and "Options:" not in cls.__doc__:
            cls.__doc__ = cls.__doc__.rstrip() + "\n\n" + options_docstring(cls.options)

    # ------------------------------------------------------------------ public API
    @classmethod
    def resolve_options(cls, given: Mapping[str, Any]) -> dict[str, Any]:
        """Every option's value: ``given`` checked by its :class:`Option` (None: the default),
        the schema's default for the others; with ``paper=True`` the values the published
        algorithm fixes (:meth:`published_settings`); then :meth:`_settle`.

        Raises:
            ValueError: an unknown option, an invalid value, or a value ``paper=True`` fixes
                otherwise.
        """
        checked = validate_options(cls.options, given, cls.name)
        values = {o.name: o.default for o in cls.options} | checked
        if values.get("paper"):
            for key, fixed in cls.published_settings().items():
                if checked.get(key, fixed) != fixed:
                    raise ValueError(
                        f"paper=True fixes {key}={fixed!r}, got {key}={checked[key]!r}"
                    )
                values[key] = fixed
        return cls._settle(values)

    @classmethod
    def _settle(cls, values: dict[str, Any]) -> dict[str, Any]:
        """Rules between options (e.g. ``q_min <= q_max``) and normalised forms; ValueError."""
        return values

    @classmethod
    def published_settings(cls) -> dict[str, Any]:
        """The values ``paper=True`` fixes (the options' :attr:`~Option.published`)."""
        return {o.name: o.published for o in cls.options if o.published is not FREE}

    def settings(self) -> dict[str, Any]:
        """Name and hyper-parameters (JSON-friendly: tuples as lists)."""
        values = {
            "attack": self.name,
            "steps": self.steps,
            "keep": self.keep,
            "targeted": self.targeted,
            "seed": self.seed,
        }
        for option in self.options:
            value = getattr(self, option.name)
            values[option.name] = list(value) if isinstance(value, tuple) else value
        return values

    def __repr__(self) -> str:
        params = ", ".join(f"{k}={v!r}" for k, v in self.settings().items() if k != "attack")
        return f"{type(self).__name__}({params})"

    def __call__(self, images, labels=None, *, callback: Callback | None = None) -> AttackResult:
        return self.attack(images, labels, callback=callback)

    def attack(
        self,
        images: torch.Tensor,
        labels: torch.Tensor | None = None,
        *,
        callback: Callback | None = None,
    ) -> AttackResult:
        """Attack ``images``.

        Args:
            images: ``[B, C, H, W, D]`` float tensor in [0, 1]; never modified.
            labels: ``[B, 1, H, W, D]`` class-index map (sigmoid heads: label values, turned
                into regions), or None to attack the clean prediction (pseudo-labels).
            callback: called with a :class:`StepEvent` after every step; returning ``False``
                cancels (the best iterate so far is returned, ``cancelled=True``).

        Returns:
            :class:`AttackResult`.

        Raises:
            TypeError, ValueError: bad images, labels or model output (the message names it).
        """
        return drive(self.iter_attack(images, labels), callback)

    def iter_attack(
        self, images: torch.Tensor, labels: torch.Tensor | None = None
    ) -> Generator[StepEvent, bool | None, AttackResult]:
        """The same attack as a generator: yields a :class:`StepEvent` after every step.

        Send ``False`` (``gen.send(False)``) to cancel; the generator then returns the
        :class:`AttackResult` (``StopIteration.value``; :func:`drive` does this bookkeeping).
        Made for GUI workers that report progress by yielding. Grad mode is set per step, never
        across a ``yield``, so the consumer's own grad mode is not disturbed.
        """
        check_images(images, self.clamp_inputs)
        if labels is not None:
            check_labels(labels, images)
        model = self.model
        device = _model_device(model) if self.device == "auto" else self.device
        if self.device != "auto" and _model_device(model) != device:
            model.to(device)
        was_training = model.training
        grad_flags = [p.requires_grad for p in model.parameters()]
        try:
            model.eval()
            for p in model.parameters():
                p.requires_grad_(False)
            return (yield from self._run(model, images, labels, device))
        finally:
            model.train(was_training)
            for p, flag in zip(model.parameters(), grad_flags, strict=True):
                p.requires_grad_(flag)

    # ------------------------------------------------------------------ hooks
    def _init(self, x: torch.Tensor, generator: torch.Generator) -> dict[str, Any]:
        """Build the attack's state for clean ``x`` ``[B, C, H, W, D]`` (float32, on device)."""
        raise NotImplementedError

    def _perturb(
        self, state: dict, step: int
    ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        """Adversarial volume of evaluation ``step`` (``step == self.steps``: the final one).

        Returns ``(x_adv, extra, ssim)``: ``extra`` ``[B]`` is added to the objective (or None),
        ``ssim`` ``[B]`` is reported in the history (or None).
        """
        raise NotImplementedError

    def _variable(self, state: dict) -> torch.Tensor | None:
        """The tensor the objective is differentiated against (None: no gradient needed)."""
        return None

    def _update(self, state: dict, grad: torch.Tensor, step: int) -> None:
        """Take one step with ``grad`` of the objective."""

    def _snapshot(self, state: dict) -> dict[str, torch.Tensor]:
        """Per-sample tensors ``[B, …]`` to keep with the best iterate (e.g. the q table)."""
        return {}

    def _finish(self, result: AttackResult, kept: dict[str, torch.Tensor], state: dict) -> None:
        """Fill attack-specific result fields from the kept snapshot."""

    def _step_table(self, state: dict) -> torch.Tensor | None:
        """The table of the current iterate as ``[B, C, H, W, D]`` (a copy; VAFA), or None."""
        return None

    def _rework(self, kept: dict[str, torch.Tensor], state: dict):
        """Optionally remake the kept volume from the kept snapshot (VAFA's hard rounding).

        Returns ``(step_label, x_adv, extra, ssim)`` for the new evaluation, or None to return
        the kept iterate as it is.
        """
        return None

    # ------------------------------------------------------------------ the loop
    def _start(self, model, images, labels, device):
        """``(clean_pred, num_classes, target, state)``: the clean prediction, the labels the
        attack works against and the attack's initial state (seeded generator)."""
        generator = torch.Generator(device="cpu")
        seed = self.seed if self.seed is not None else int(torch.randint(0, 2**62, (1,)).item())
        generator.manual_seed(seed)
        with _grad_mode(False):
            x = images.detach().to(device=device, dtype=torch.float32).clone()
            if self.clamp_inputs:
                x = x.clamp_(0.0, 1.0)
            clean_logits = _forward(model, x)
            num_classes = self.heads.check_logits(clean_logits)
            clean_pred = self.heads.predict(clean_logits)
            del clean_logits
            target = clean_pred
            if labels is not None:
                target = self.heads.target(labels.detach().to(device), num_classes)
            return clean_pred, num_classes, target, self._init(x, generator)

    def _run(self, model, images, labels, device):
        clean_pred, num_classes, target, state = self._start(model, images, labels, device)
        tracker = BestTracker(self.keep)
        history: list[dict[str, Any]] = []
        cancelled = False
        steps_run = 0
        for step in range(self.steps):
            # The last update only matters when the point after it is evaluated.
            update = self.evaluates_final or step + 1 < self.steps
            with _grad_mode(update):
                x_adv, extra, ssim = self._perturb(state, step)
                logits = _forward(model, x_adv)
                objective = self._objective(logits, target, extra, step)
                if update:
                    grad = torch.autograd.grad(objective.sum(), self._variable(state))[0]
            with _grad_mode(False):
                row, prediction = self._record(
                    step + 1, logits, objective, ssim, target, num_classes, state
                )
                tracker.offer(objective, x_adv, prediction, self._snapshot(state), step + 1)
                del logits
                history.append(row)
                table = self._step_table(state)  # before the update changes it
                if update:
                    self._update(state, grad, step)
            steps_run = step + 1
            event = StepEvent(
                step + 1,
                self.steps,
                row["loss"],
                row["dice"],
                row["ssim"],
                x_adv.detach(),
                prediction=prediction,
                q_table=table,
            )
            if (yield event) is False:
                cancelled = True
                break

        def evaluate(label, x_adv, extra, ssim):
            """One gradient-free evaluation, recorded in the history."""
            logits = _forward(model, x_adv)
            objective = self._objective(logits, target, extra, self.steps)
            row, prediction = self._record(
                label, logits, objective, ssim, target, num_classes, state
            )
            history.append(row)
            return objective, prediction

        with _grad_mode(False):
            if not cancelled and self.evaluates_final:
                x_adv, extra, ssim = self._perturb(state, self.steps)
                objective, prediction = evaluate("final", x_adv, extra, ssim)
                tracker.offer(objective, x_adv, prediction, self._snapshot(state), "final")
            kept = tracker.result()
            rework = self._rework(kept, state)
            if rework is not None:
                label, x_adv, extra, ssim = rework
                objective, prediction = evaluate(label, x_adv, extra, ssim)
                kept.update(objective=objective, x=x_adv, prediction=prediction)
                kept["steps"] = [label] * len(kept["steps"])
        returned = set(kept["steps"])
        for row in history:
            row["returned"] = row["step"] in returned
        result = AttackResult(
            adversarial=kept["x"].to(device=images.device, dtype=images.dtype),
            clean_prediction=clean_pred.to(images.device),
            adversarial_prediction=kept["prediction"].to(images.device),
            labels=target.to(images.device),
            history=history,
            steps_run=steps_run,
            cancelled=cancelled,
            returned_steps=list(kept["steps"]),
            objective=kept["objective"].cpu(),
            settings=self.settings(),
        )
        self._finish(result, kept, state)
        return result

    def _objective(self, logits, target, extra, step: int) -> torch.Tensor:
        """``[B]`` objective of evaluation ``step`` (0-based; ``steps``: after the last update):
        the Dice-CE of the paper (minus it when targeted) plus the attack's ``extra`` term."""
        seg = self.segmentation_loss(logits, target, step)
        objective = -seg if self.targeted else seg
        return objective if extra is None else objective + extra

    def segmentation_loss(self, logits, target, step: int) -> torch.Tensor:
        """``[B]`` loss the attack maximises at ``step`` (the heads' Dice-CE/Dice-BCE; SegPGD and
        CosPGD reweight it)."""
        return self.loss_fn(logits, target)

    def _record(self, step, logits, objective, ssim, target, num_classes, state):
        prediction = self.heads.predict(logits)
        dice = self.heads.foreground(self.heads.dice(prediction, target, num_classes))
        fg = torch.nanmean(dice).item() if dice.numel() else float("nan")
        row = {
            "step": step,
            "loss": float(objective.mean().item()),
            "dice": float(fg),
            "ssim": None if ssim is None else float(ssim.mean().item()),
            **self._history_extras(state, step),
        }
        return row, prediction

    def _history_extras(self, state: dict, step) -> dict[str, Any]:
        return {}


def drive(
    iterator: Generator[StepEvent, bool | None, Any], callback: Callback | None = None
) -> Any:
    """Run an attack generator to its end, passing every event to ``callback``.

    ``callback(event)`` returning ``False`` is sent into the generator (cancel). Returns the
    generator's return value (e.g. the :class:`AttackResult`).
    """
    try:
        event = next(iterator)
        while True:
            event = iterator.send(callback(event) if callback is not None else None)
    except StopIteration as stop:
        return stop.value


@contextmanager
def _grad_mode(enabled: bool):
    """Gradient mode for one block of work (never held across a ``yield``)."""
    with torch.inference_mode(False), torch.set_grad_enabled(enabled):
        yield


def _forward(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    try:
        logits = model(x)
    except RuntimeError as err:
        raise ValueError(f"the model failed on images of shape {tuple(x.shape)}: {err}") from err
    if not isinstance(logits, torch.Tensor):  # e.g. deep supervision lists
        logits = logits[0]
    if logits.dim() != 5 or logits.shape[0] != x.shape[0] or logits.shape[2:] != x.shape[2:]:
        raise ValueError(
            f"the model must return logits [B, K, H, W, D] matching the input {tuple(x.shape)}, "
            f"got {tuple(logits.shape)}"
        )
    return logits


def _model_device(model: nn.Module) -> torch.device:
    for p in model.parameters():
        return p.device
    return torch.device("cpu")
