"""A MONAI bundle's ``inferer`` entry as vafa's inference settings, and its
``postprocessing`` as the card's ``outputs``.

MONAI's ``SlidingWindowInferer(roi_size, sw_batch_size=1, overlap=0.25, mode="constant",
sigma_scale=0.125, padding_mode="constant", cval=0.0, …)`` predicts a bundle's volumes;
:func:`read_inferer` reads the entry as MONAI would construct it (its defaults for the keys the
entry leaves out) into an :class:`~vafa.io.inference.Inference` with MONAI's window positions
and Gaussian. Keys that change only where or how the same numbers are computed (``device``,
``sw_device``, ``progress``, ``cache_roi_weight_map``, ``cpu_thresh``, ``buffer_steps``,
``buffer_dim``) are not read, nor evaluated when they are expressions: vafa predicts on the
device it is given (``device=``, CLI ``--device``), never the bundle's. The keys it reads may be
expressions of a trusted bundle; their values are converted (``roi_size`` → ints,
``overlap``/``sigma_scale``/``cval`` → floats, ``sw_batch_size`` → int). What vafa cannot
honour is refused in one line naming the key: another inferer class, ``with_coord`` (the
network would get window coordinates), a ``roi_size`` that follows the image (entries ≤ 0), a
value that is not data (e.g. a device where a number belongs), an unknown key.

:func:`read_outputs` reads how the post-processing turns the network's output into a prediction
(only the ``sigmoid``/``softmax``/``other`` arguments of ``Activations[d]`` and the
``argmax``/``threshold`` of ``AsDiscrete[d]``; nothing else of the post-processing is resolved
or evaluated): ``Activationsd(sigmoid=True)`` followed by ``AsDiscreted(threshold=t)`` gives
overlapping sigmoid regions thresholded at t (without ``threshold``: 0.5, noted); a softmax, an
argmax or no activation give softmax classes (an argmax of sigmoid outputs picks the largest
logit, as the softmax classes do). Sigmoid regions named as BraTS's (TC, WT, ET, or spelled
out) cover the label values of :data:`vafa.ops.heads.BRATS_REGIONS`; other names get the
:class:`~vafa.ops.heads.Heads` default (region k covers label k + 1).

``cval`` is in the bundle's network units (after its intensity transform); the card's is in
the [0, 1] units of vafa's images: ``(cval − shift) / scale`` for the first layer
``x·scale + shift``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from numbers import Real
from typing import Any

from vafa.io.bundle_config import first_object, plain
from vafa.io.inference import Inference
from vafa.ops.heads import BRATS_REGION_NAMES, BRATS_REGIONS
from vafa.ops.messages import short_text

__all__ = ["INFERER_DEFAULTS", "read_inferer", "read_outputs"]

#: ``SlidingWindowInferer``'s defaults (MONAI 1.x) for the settings vafa reads.
INFERER_DEFAULTS = {
    "sw_batch_size": 1,
    "overlap": 0.25,
    "mode": "constant",
    "sigma_scale": 0.125,
    "padding_mode": "constant",
    "cval": 0.0,
}
_NO_EFFECT = frozenset(
    ("device", "sw_device", "progress", "cache_roi_weight_map", "cpu_thresh", "buffer_steps",
     "buffer_dim")
)  # fmt: skip
_SLIDING = ("SlidingWindowInferer", "SlidingWindowInfererAdapt")


def read_inferer(
    entry: Any,
    resolve: Callable[[Any, str], Any],
    where: str,
    scale: float = 1.0,
    shift: float = 0.0,
) -> tuple[list[int] | None, Inference]:
    """The window size and inference settings of a bundle's ``inferer`` entry.

    Args:
        entry: the entry as written (references and expressions not yet resolved), or None
            when the bundle has none (then: no window size, vafa's default settings).
        resolve: ``resolve(value, id)`` → the value with references (and, for a trusted
            bundle, expressions) resolved; ``id`` is ``"inferer#<key>"``.
        where: the config file, for messages.
        scale, shift: the bundle's first layer ([0, 1] → network units).

    Returns:
        ``(roi_size or None, inference)``.

    Raises:
        ValueError: a key or value vafa cannot honour (one line naming ``inferer#<key>`` and
            why).
    """
    if entry is None:
        return None, Inference()
    if not isinstance(entry, Mapping):
        raise ValueError(f"{where}: inferer must be a component (a dict with _target_)")
    target = str(entry.get("_target_", ""))
    if target.rpartition(".")[2] not in _SLIDING:
        raise ValueError(f"{where}: inferer#_target_ {target!r}: vafa predicts volumes with a "
                         "sliding window and cannot honour another inferer (use "
                         "SlidingWindowInferer)")  # fmt: skip
    values: dict[str, Any] = {}
    roi = None
    for key, raw in entry.items():
        name = f"inferer#{key}"
        if (key.startswith("_") and key.endswith("_")) or key in _NO_EFFECT:
            continue
        if key not in (*INFERER_DEFAULTS, "roi_size", "with_coord"):
            raise ValueError(f"{where}: {name}: not a SlidingWindowInferer setting vafa knows "
                             f"(it honours {', '.join(['roi_size', *INFERER_DEFAULTS])})")  # fmt: skip
        value = plain(resolve(raw, name))
        found = first_object(value, name)
        if found is not None:
            raise ValueError(f"{where}: {found[0]} is a {type(found[1]).__name__} "
                             f"({short_text(found[1], 60)}), not a value vafa can read")  # fmt: skip
        if key == "with_coord" and value:
            raise ValueError(f"{where}: {name} is true: the network would be given the window "
                             "coordinates, which vafa's networks do not take")  # fmt: skip
        if key == "roi_size":
            roi = _roi(value, name, where)
        elif key != "with_coord":
            values[key] = value
    settings = {**INFERER_DEFAULTS, **values}
    try:
        settings["cval"] = (float(settings["cval"]) - shift) / scale
        return roi, Inference(**settings, windows="monai")
    except (TypeError, ValueError) as err:
        raise ValueError(f"{where}: inferer: {err}") from None


def _roi(value: Any, name: str, where: str) -> list[int]:
    values = [value] * 3 if isinstance(value, int) and not isinstance(value, bool) else value
    if (
        not isinstance(values, (list, tuple))
        or len(values) != 3
        or not all(isinstance(v, int) and not isinstance(v, bool) for v in values)
    ):
        raise ValueError(f"{where}: {name} must be 3 whole numbers, got {value!r}")
    if any(v <= 0 for v in values):
        raise ValueError(f"{where}: {name} {list(values)}: entries <= 0 make the window follow "
                         "the image size, which vafa cannot honour (it needs a fixed patch "
                         "size)")  # fmt: skip
    return list(values)


def read_outputs(
    steps: Sequence[tuple[str, Mapping[str, Any]]], class_names: Sequence[str], where: str
) -> tuple[dict[str, Any], list[str]]:
    """The card's ``outputs`` of a bundle's post-processing (module docstring).

    Args:
        steps: the enabled post-processing transforms, ``(_target_, entry)`` in order; each
            entry a :class:`~vafa.io.bundle_config.LazyEntry` (values resolved when read).
        class_names: the card's output channel names.
        where: the config file, for messages.

    Returns:
        ``(outputs, notes)``: the outputs dict and what the card's provenance should say.

    Raises:
        ValueError: an activation vafa cannot honour (``other``, both ``sigmoid`` and
            ``softmax``) or a threshold outside (0, 1) — one line naming the entry.
    """
    act = _first(steps, "Activations")
    discrete = _first(steps, "AsDiscrete")
    if act is not None and act.written("other") is not None:
        raise ValueError(f"{where}: {act.id}#other: vafa reads sigmoid or softmax outputs and "
                         "cannot honour another activation")  # fmt: skip
    sigmoid = act is not None and _flag(act, "sigmoid", where)
    if sigmoid and _flag(act, "softmax", where):
        raise ValueError(f"{where}: {act.id} asks for both sigmoid and softmax")
    if not sigmoid:
        return {"activation": "softmax"}, []
    if discrete is not None and _flag(discrete, "argmax", where):
        return {"activation": "softmax"}, ["outputs: the bundle takes the argmax of its sigmoid "
                                           "outputs: read as softmax classes (the same argmax)"]  # fmt: skip
    notes = []
    threshold = None if discrete is None else plain(discrete.get("threshold"))
    if threshold is None:
        threshold = 0.5
        notes.append("outputs: the bundle keeps sigmoid probabilities; vafa thresholds at 0.5")
    elif isinstance(threshold, bool) or not isinstance(threshold, Real) or not 0 < threshold < 1:
        raise ValueError(f"{where}: {discrete.id}#threshold {threshold!r}: vafa needs a "
                         "sigmoid probability threshold in (0, 1)")  # fmt: skip
    regions, note = _regions(class_names)
    outputs = {"activation": "sigmoid", "threshold": float(threshold)}
    return ({**outputs, "regions": regions} if regions else outputs), [*notes, note]


def _first(steps, name: str) -> Any:
    """The first transform called ``name``, ``name + "d"``/``"D"``/``"Dict"``, or None."""
    for target, entry in steps:
        last = target.rpartition(".")[2]
        if last in (name, f"{name}d", f"{name}D", f"{name}Dict"):
            return entry
    return None


def _flag(entry: Any, key: str, where: str) -> bool:
    value = plain(entry.get(key, False))
    if not isinstance(value, bool):
        raise ValueError(f"{where}: {entry.id}#{key} must be true or false, got {value!r}")
    return value


def _regions(class_names: Sequence[str]) -> tuple[dict[str, list[int]] | None, str]:
    """BraTS regions for outputs named as BraTS's (every name, each once), else None."""
    keys = [BRATS_REGION_NAMES.get(n.strip().lower(), n.strip().upper()) for n in class_names]
    if all(k in BRATS_REGIONS for k in keys) and len(set(keys)) == len(keys):
        regions = {n: list(BRATS_REGIONS[k]) for n, k in zip(class_names, keys, strict=True)}
        return regions, ("outputs: BraTS regions TC = labels 1, 4; WT = 1, 2, 4; ET = 4 (as "
                         "MONAI's ConvertToMultiChannelBasedOnBratsClasses)")  # fmt: skip
    return None, "outputs: sigmoid region k covers label k + 1 (names not known as BraTS's)"
