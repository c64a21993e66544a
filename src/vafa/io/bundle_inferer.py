"""A MONAI bundle's ``inferer`` entry as vafa's inference settings.

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

``cval`` is in the bundle's network units (after its intensity transform); the card's is in
the [0, 1] units of vafa's images: ``(cval − shift) / scale`` for the first layer
``x·scale + shift``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from vafa.io.bundle_config import first_object, plain
from vafa.io.inference import Inference
from vafa.ops.messages import short_text

__all__ = ["INFERER_DEFAULTS", "read_inferer"]

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
